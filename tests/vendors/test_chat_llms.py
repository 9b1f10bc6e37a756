"""Every LLM built on ``openai_compat`` (``groq`` and ``openai``), through its own SDK against its stand-in.

They share the request life cycle, the stream reading and the error mapping, so each behaviour is checked
once for both: text streamed as deltas then one usage, a tool call streamed in pieces handed over whole, 401
tried exactly once, 429/5xx/timeouts retried only by the engine's policy, a stream dropped mid-reply never
restarted, and closing the stream stopping the server.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import structlog
from openai_support import MESSAGES, TOOL, Chat, close_after_first, make_llm, received_before_a_drop, text_of
from standins import GroqStandin
from vendor_support import API_KEY

from vocable.providers.base import Message, TextDelta, ToolCall, Usage
from vocable.providers.errors import AuthenticationError, ProviderTimeout, RateLimited, ServiceUnavailable
from vocable.providers.groq import GroqLLM, GroqSettings

pytestmark = pytest.mark.usefixtures("no_leaks")

def make_groq(standin: GroqStandin, **overrides: Any) -> GroqLLM:
    values: dict[str, Any] = {"api_key": API_KEY, "base_url": standin.url, "request_timeout_s": 2.0, **overrides}
    return GroqLLM(GroqSettings.model_validate(values))


@pytest.fixture(params=["groq", "openai"])
def chat(request: pytest.FixtureRequest) -> Chat:
    if request.param == "groq":
        return Chat(request.getfixturevalue("groq"), make_groq)
    return Chat(request.getfixturevalue("openai_standin"), make_llm)


async def test_text_streams_as_deltas_then_one_usage(chat: Chat) -> None:
    chunks = await chat.run()
    assert text_of(chunks) == chat.standin.reply
    assert sum(isinstance(c, TextDelta) for c in chunks) > 3, "text must arrive as deltas, not in one piece"
    usage = [c for c in chunks if isinstance(c, Usage)]
    assert len(usage) == 1 and usage[0].prompt_tokens > 0 and usage[0].completion_tokens > 0
    assert isinstance(chunks[-1], Usage)
    body = chat.standin.log[0]["body"]
    assert body["stream"] is True
    assert body["messages"][1] == {"role": "user", "content": "What is the weather like?"}
    assert chat.standin.attempts == 1


async def test_a_tool_call_streamed_in_pieces_is_handed_over_whole(chat: Chat) -> None:
    arguments = json.dumps({"city": "Tokyo", "timezone": "Asia/Tokyo", "format": "24h"})
    chat.standin.tool_calls = [("get_time", arguments), ("get_weather", '{"city": "Tokyo"}')]
    chunks = await chat.run(tools=(TOOL,))
    calls = [c for c in chunks if isinstance(c, ToolCall)]
    assert [c.name for c in calls] == ["get_time", "get_weather"]
    assert json.loads(calls[0].arguments) == json.loads(arguments) and calls[0].id.startswith("call_")
    assert len(arguments) > 8 * 3, "the stand-in sent these arguments in several fragments"
    assert any(isinstance(c, Usage) for c in chunks)
    assert chat.standin.log[0]["body"]["tools"][0] == {
        "type": "function",
        "function": {"name": "get_time", "description": TOOL.description, "parameters": TOOL.parameters},
    }

    # The tool's answer goes back as an assistant tool-call message plus a tool message: the model then talks.
    follow_up = [
        *MESSAGES,
        Message("assistant", "", tool_calls=(calls[0],)),
        Message("tool", '{"time": "09:30"}', tool_call_id=calls[0].id),
    ]
    chunks = await chat.run(follow_up, tools=(TOOL,))
    assert text_of(chunks) == chat.standin.reply
    sent = chat.standin.log[1]["body"]["messages"]
    assert sent[2]["content"] is None
    assert sent[2]["tool_calls"][0]["function"] == {"name": "get_time", "arguments": arguments}
    assert sent[3] == {"role": "tool", "content": '{"time": "09:30"}', "tool_call_id": calls[0].id}


async def test_401_fails_at_once_with_one_attempt(chat: Chat) -> None:
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthenticationError) as info:
        await chat.run(retries=3, api_key="sk-wrong-key-0000")
    assert chat.standin.attempts == 1, "a bad key is never retried, by the SDK or the engine"
    assert "sk-wrong-key-0000" not in str(info.value) and "sk-wrong-key-0000" not in repr(logs)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_429_carries_retry_after_and_the_engine_waits_for_it(chat: Chat) -> None:
    chat.standin.retry_after_s = 0.4
    chat.standin.set_mode("429")
    with pytest.raises(RateLimited) as info:
        await chat.run(retries=0)
    assert info.value.retry_after_s == pytest.approx(0.4)
    assert chat.standin.attempts == 1

    chat.standin.reset()
    chat.standin.set_mode("429", times=1)
    started = time.monotonic()
    assert text_of(await chat.run(retries=1)) == chat.standin.reply
    assert time.monotonic() - started >= 0.4, "the engine waited as long as Retry-After said"
    assert chat.standin.attempts == 2


async def test_429_is_retried_a_bounded_number_of_times(chat: Chat) -> None:
    chat.standin.set_mode("429")
    with pytest.raises(RateLimited):
        await chat.run(retries=2)
    assert chat.standin.attempts == 3


async def test_500_becomes_service_unavailable_and_is_retried(chat: Chat) -> None:
    chat.standin.set_mode("500")
    with pytest.raises(ServiceUnavailable) as info:
        await chat.run(retries=1)
    assert chat.standin.attempts == 2
    assert API_KEY not in str(info.value)
    chat.standin.reset()
    chat.standin.set_mode("500", times=1)
    assert text_of(await chat.run(retries=1)) == chat.standin.reply


async def test_hang_times_out(chat: Chat) -> None:
    chat.standin.set_mode("hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await chat.run(retries=1, request_timeout_s=1.0)  # room for each request to arrive on a busy machine
    assert chat.standin.attempts == 2
    assert time.monotonic() - started < 6


async def test_slow_stream_within_timeout_succeeds(chat: Chat) -> None:
    chat.standin.set_mode("slow", slow_delay_s=0.05)
    assert text_of(await chat.run(request_timeout_s=1.0)) == chat.standin.reply


async def test_stream_dropped_mid_reply_is_an_error_and_not_restarted(chat: Chat) -> None:
    text = text_of(await received_before_a_drop(chat.make(), lambda llm: llm.stream(MESSAGES), chat.standin))
    assert text and chat.standin.reply.startswith(text) and text != chat.standin.reply


async def test_closing_the_stream_early_stops_the_server(chat: Chat) -> None:
    first, sent = await close_after_first(chat.make(), lambda llm: llm.stream(MESSAGES), chat.standin, "chunks_sent")
    assert isinstance(first, TextDelta) and sent < len(chat.standin.reply.split())
