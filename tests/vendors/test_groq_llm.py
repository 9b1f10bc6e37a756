"""The ``groq`` LLM's own parts, through the real ``groq`` SDK against the Groq stand-in.

What it shares with the ``openai`` provider (streaming, tool calls, usage, every error path) is checked for
both in ``test_chat_llms.py``; here is what only Groq does: its endpoint and defaults, usage in ``x_groq``,
and an error reported inside the stream.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from standins import GroqStandin
from standins.groq_standin import DEFAULT_REPLY
from vendor_support import API_KEY, through_engine

from vocable.providers.base import Message, TextDelta, Usage
from vocable.providers.errors import ServiceUnavailable
from vocable.providers.groq import GroqLLM, GroqSettings

pytestmark = pytest.mark.usefixtures("no_leaks")


async def test_request_uses_groqs_endpoint_and_defaults_and_usage_comes_in_x_groq(groq: GroqStandin) -> None:
    llm = GroqLLM(GroqSettings.model_validate({"api_key": API_KEY, "base_url": groq.url, "max_tokens": 99}))
    await llm.start()
    try:
        chunks = await through_engine(lambda: llm.stream([Message("user", "Hi")]), retries=0)
    finally:
        await llm.aclose()
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == DEFAULT_REPLY
    assert chunks[-1] == Usage(prompt_tokens=5, completion_tokens=len(DEFAULT_REPLY.split()))
    request = groq.log[0]
    assert request["path"] == "/openai/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"
    body = request["body"]
    assert body["model"] == "llama-3.3-70b-versatile" and body["temperature"] == 0.7
    assert body["max_completion_tokens"] == 99
    assert "stream_options" not in body, "Groq sends usage in x_groq without being asked"


def test_an_error_inside_the_stream_ends_it() -> None:
    llm = GroqLLM(GroqSettings.model_validate({"api_key": API_KEY}))
    usage = SimpleNamespace(prompt_tokens=3, completion_tokens=4)
    assert llm.extension(SimpleNamespace(x_groq=SimpleNamespace(error=None, usage=usage))) is usage
    assert llm.extension(SimpleNamespace(x_groq=None)) is None
    with pytest.raises(ServiceUnavailable, match="over capacity"):
        llm.extension(SimpleNamespace(x_groq=SimpleNamespace(error="over capacity", usage=None)))
