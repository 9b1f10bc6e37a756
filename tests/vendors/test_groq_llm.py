"""The ``groq`` LLM through the real ``groq`` SDK against the Groq stand-in."""

from __future__ import annotations

import json
import time

import pytest
import structlog
from standins import GroqStandin
from standins.groq_standin import DEFAULT_REPLY
from vendor_support import API_KEY, engine_stream, through_engine

from vocable.providers.base import Message, TextDelta, Tool, ToolCall, Usage
from vocable.providers.errors import AuthenticationError, ProviderTimeout, RateLimited, ServiceUnavailable
from vocable.providers.groq import GroqLLM, GroqSettings

pytestmark = pytest.mark.usefixtures("no_leaks")

MESSAGES = [Message("system", "Be brief."), Message("user", "What is the weather like?")]


def make_llm(standin: GroqStandin, **overrides: object) -> GroqLLM:
    values: dict[str, object] = {
        "api_key": API_KEY,
        "base_url": standin.url,
        "request_timeout_s": 2.0,
    }
    values.update(overrides)
    return GroqLLM(GroqSettings.model_validate(values))


async def run(
    llm: GroqLLM, messages: list[Message] = MESSAGES, tools: tuple[Tool, ...] = (), retries: int = 2
) -> list[object]:
    """One request as the engine makes it: the provider only maps errors, the engine's policy retries."""
    await llm.start()
    try:
        return await through_engine(lambda: llm.stream(messages, tools=tools), retries=retries)
    finally:
        await llm.aclose()


def text_of(chunks: list[object]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


async def test_normal_turn_streams_text_then_usage(groq: GroqStandin) -> None:
    chunks = await run(make_llm(groq))
    assert text_of(chunks) == DEFAULT_REPLY
    assert sum(isinstance(c, TextDelta) for c in chunks) > 3, "text must arrive as deltas, not in one piece"
    usage = [c for c in chunks if isinstance(c, Usage)]
    assert len(usage) == 1 and usage[0].prompt_tokens > 0 and usage[0].completion_tokens > 0
    assert isinstance(chunks[-1], Usage)
    request = groq.log[0]["body"]
    assert request["model"] == "llama-3.3-70b-versatile" and request["stream"] is True
    assert request["messages"][1] == {"role": "user", "content": "What is the weather like?"}
    assert groq.attempts == 1


async def test_tool_calls_are_assembled_from_deltas(groq: GroqStandin) -> None:
    arguments = json.dumps({"city": "Tokyo", "timezone": "Asia/Tokyo", "format": "24h"})
    groq.tool_calls = [("get_time", arguments)]
    tool = Tool("get_time", "Current time in a city", {"type": "object", "properties": {"city": {"type": "string"}}})
    chunks = await run(make_llm(groq), tools=(tool,))
    calls = [c for c in chunks if isinstance(c, ToolCall)]
    assert len(calls) == 1
    assert calls[0].name == "get_time" and json.loads(calls[0].arguments) == json.loads(arguments)
    assert calls[0].id.startswith("call_")
    assert any(isinstance(c, Usage) for c in chunks)
    assert groq.log[0]["body"]["tools"][0]["function"]["name"] == "get_time"

    # The tool's answer goes back as an assistant tool-call message plus a tool message: the model then talks.
    follow_up = [
        *MESSAGES,
        Message("assistant", "", tool_calls=(calls[0],)),
        Message("tool", '{"time": "09:30"}', tool_call_id=calls[0].id),
    ]
    chunks = await run(make_llm(groq), follow_up, tools=(tool,))
    assert text_of(chunks) == DEFAULT_REPLY
    sent = groq.log[1]["body"]["messages"]
    assert sent[2]["tool_calls"][0]["function"] == {"name": "get_time", "arguments": arguments}
    assert sent[3] == {"role": "tool", "content": '{"time": "09:30"}', "tool_call_id": calls[0].id}


async def test_401_fails_at_once_with_one_attempt(groq: GroqStandin) -> None:
    llm = make_llm(groq, api_key="sk-wrong-key-0000")
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthenticationError) as info:
        await run(llm)
    assert groq.attempts == 1
    assert "sk-wrong-key-0000" not in str(info.value) and "sk-wrong-key-0000" not in repr(logs)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_429_is_retried_a_bounded_number_of_times(groq: GroqStandin) -> None:
    groq.set_mode("429")
    with pytest.raises(RateLimited):
        await run(make_llm(groq), retries=2)
    assert groq.attempts == 3


async def test_429_then_success(groq: GroqStandin) -> None:
    groq.set_mode("429", times=1)
    assert text_of(await run(make_llm(groq))) == DEFAULT_REPLY
    assert groq.attempts == 2


async def test_500_becomes_service_unavailable(groq: GroqStandin) -> None:
    groq.set_mode("500")
    with pytest.raises(ServiceUnavailable) as info:
        await run(make_llm(groq), retries=1)
    assert groq.attempts == 2
    assert API_KEY not in str(info.value)


async def test_hang_times_out(groq: GroqStandin) -> None:
    groq.set_mode("hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await run(make_llm(groq, request_timeout_s=0.3), retries=1)
    assert groq.attempts == 2
    assert time.monotonic() - started < 3


async def test_slow_stream_within_timeout_succeeds(groq: GroqStandin) -> None:
    groq.set_mode("slow", slow_delay_s=0.05)
    assert text_of(await run(make_llm(groq, request_timeout_s=1.0))) == DEFAULT_REPLY


async def test_drop_mid_stream_is_not_restarted(groq: GroqStandin) -> None:
    groq.set_mode("drop")
    llm = make_llm(groq)
    await llm.start()
    received: list[object] = []
    try:
        with pytest.raises(ServiceUnavailable):
            async for chunk in engine_stream(lambda: llm.stream(MESSAGES), retries=2):
                received.append(chunk)
    finally:
        await llm.aclose()
    text = text_of(received)
    assert text and DEFAULT_REPLY.startswith(text) and text != DEFAULT_REPLY
    assert groq.attempts == 1, "text was already yielded: a retry would repeat it"


async def test_closing_the_stream_early_stops_the_request(groq: GroqStandin) -> None:
    groq.set_mode("slow", slow_delay_s=0.05)
    llm = make_llm(groq)
    await llm.start()
    stream = llm.stream(MESSAGES)
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    await llm.aclose()
    assert isinstance(first, TextDelta)
