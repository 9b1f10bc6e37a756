"""Builders and helpers shared by the ``openai`` provider tests (the stand-in fixture, ``openai_standin``, is in
``conftest``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from standins import OpenAIStandin, Standin
from standins._chat import ChatStandin
from vendor_support import API_KEY, engine_stream, through_engine

from vocable.providers.base import LLM, Message, Provider, TextDelta, Tool
from vocable.providers.errors import ServiceUnavailable
from vocable.providers.openai import (
    OpenAILLM,
    OpenAILLMSettings,
    OpenAISTT,
    OpenAISTTSettings,
    OpenAITTS,
    OpenAITTSSettings,
)


def settings(standin: OpenAIStandin, model: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"api_key": API_KEY, "base_url": f"{standin.url}/v1", "model": model,
                              "request_timeout_s": 2.0}
    values.update(overrides)
    if values["api_key"] is None:  # api_key=None: no key at all (a local server)
        del values["api_key"]
    return values


def make_llm(standin: OpenAIStandin, **overrides: Any) -> OpenAILLM:
    return OpenAILLM(OpenAILLMSettings.model_validate(settings(standin, "gpt-standin", **overrides)))


def make_stt(standin: OpenAIStandin, **overrides: Any) -> OpenAISTT:
    return OpenAISTT(OpenAISTTSettings.model_validate(settings(standin, "gpt-transcribe", **overrides)))


def make_tts(standin: OpenAIStandin, **overrides: Any) -> OpenAITTS:
    return OpenAITTS(OpenAITTSSettings.model_validate(settings(standin, "gpt-4o-mini-tts", **overrides)))


MESSAGES = [Message("system", "Be brief."), Message("user", "What is the weather like?")]
TOOL = Tool("get_time", "Current time in a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def text_of(chunks: list[object]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


@dataclass
class Chat:
    """A chat LLM provider and the stand-in it talks to."""

    standin: ChatStandin
    build: Callable[..., LLM]

    def make(self, **overrides: Any) -> LLM:
        return self.build(self.standin, **overrides)

    async def run(self, messages: list[Message] = MESSAGES, tools: tuple[Tool, ...] = (), retries: int = 2,
                  **overrides: Any) -> list[object]:
        """One request as the engine makes it: the provider only maps errors, the engine's policy retries."""
        llm = self.make(**overrides)
        await llm.start()
        try:
            return await through_engine(lambda: llm.stream(messages, tools=tools), retries=retries)
        finally:
            await llm.aclose()


async def close_after_first(provider: Provider, open_stream: Callable[[Any], Any], standin: Standin,
                            counter: str) -> tuple[object, int]:
    """Open a stream, take its first item and close the stream, as the engine does at a barge-in. Checks that
    the close is prompt and that the server sends nothing more; returns the item and what the server sent."""
    standin.set_mode("slow", slow_delay_s=0.05)
    await provider.start()
    try:
        stream = open_stream(provider)
        first = await anext(stream)
        started = time.perf_counter()
        await stream.aclose()
        closed_in = time.perf_counter() - started
        await asyncio.sleep(0.3)
        sent = standin.counters[counter]
        await asyncio.sleep(0.3)
    finally:
        await provider.aclose()
    assert closed_in < 0.5, f"closing took {closed_in:.2f} s"
    assert standin.counters[counter] == sent, "the server went on sending after the stream was closed"
    return first, sent


async def received_before_a_drop(provider: Provider, open_stream: Callable[[Any], Any], standin: Standin) -> list[Any]:
    """Run a stream as the engine does (2 retries allowed) while the server cuts it midway: it must fail with
    ``ServiceUnavailable`` after some output, in one attempt (a retry would repeat what was heard)."""
    standin.set_mode("drop")
    await provider.start()
    received: list[Any] = []
    try:
        with pytest.raises(ServiceUnavailable):
            async for item in engine_stream(lambda: open_stream(provider), retries=2):
                received.append(item)
    finally:
        await provider.aclose()
    assert received, "output came before the drop"
    assert standin.attempts == 1, "output was already yielded: a retry would repeat it"
    return received
