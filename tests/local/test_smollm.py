"""The ``smollm`` LLM on the real SmolLM2-135M-Instruct GGUF through llama.cpp."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import aclosing

import pytest

from local.localkit import start, stop
from vocable.providers.base import Message, TextDelta, Usage
from vocable.providers.errors import ProviderError
from vocable.providers.local import SmolLM
from vocable.testing.contract import LLMContract

pytestmark = pytest.mark.slow

CHAT = [
    Message("system", "You are a concise, friendly voice assistant."),
    Message("user", "Tell me something about the sea."),
]
STORY = [Message("user", "Write a very long story about a dragon who learns to sing.")]


@pytest.fixture(scope="module")
def smollm() -> Iterator[SmolLM]:
    provider = start(SmolLM(SmolLM.Settings(max_tokens=64)))
    yield provider
    stop(provider)


async def test_streams_a_reply_then_usage(smollm: SmolLM) -> None:
    async with aclosing(smollm.stream(CHAT)) as stream:
        chunks = [chunk async for chunk in stream]
    deltas = [c for c in chunks if isinstance(c, TextDelta)]
    assert "".join(d.text for d in deltas).strip()
    assert isinstance(chunks[-1], Usage)
    assert chunks[-1].completion_tokens == len(deltas)
    assert chunks[-1].prompt_tokens > 10


async def test_closing_the_stream_stops_generation(smollm: SmolLM) -> None:
    stream = smollm.stream(STORY)
    await anext(stream)
    began = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - began < 1.0
    assert not smollm.busy, "the generation thread is still running after aclose()"


async def test_cancelling_the_consumer_stops_generation(smollm: SmolLM) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        async with aclosing(smollm.stream(STORY)) as stream:
            async for _ in stream:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.perf_counter() + 1.0
    while smollm.busy and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    assert not smollm.busy


async def test_concurrent_sessions_take_turns(smollm: SmolLM) -> None:
    async def reply(question: str) -> str:
        async with aclosing(smollm.stream([Message("user", question)])) as stream:
            return "".join([c.text async for c in stream if isinstance(c, TextDelta)])

    replies = await asyncio.gather(*(reply(q) for q in ("Say hi.", "Name a colour.", "Name a fruit.")))
    assert all(r.strip() for r in replies)


async def test_llama_errors_become_provider_errors() -> None:
    small = SmolLM(SmolLM.Settings(n_ctx=256))
    await small.start()
    try:
        with pytest.raises(ProviderError, match="llama.cpp failed"):
            async with aclosing(small.stream([Message("user", "word " * 400)])) as stream:
                async for _ in stream:
                    pass
    finally:
        await small.aclose()


class TestSmolLMContract(LLMContract):
    def make_provider(self) -> SmolLM:
        return SmolLM()
