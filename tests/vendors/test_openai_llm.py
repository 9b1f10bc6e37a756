"""The ``openai`` LLM's own parts, through the real ``openai`` SDK against the OpenAI stand-in.

What it shares with ``groq`` (streaming with tools and usage, every error path mapped once and retried only
by the engine's policy) is checked for both in ``test_chat_llms.py``. Here: the request OpenAI gets, and the
settings that point it at other servers (no key for a local one, extra_body/extra_headers, Azure).
"""

from __future__ import annotations

import pytest
from openai_support import Chat, make_llm, text_of
from pydantic import ValidationError
from standins import OpenAIStandin
from standins.openai_standin import DEFAULT_REPLY
from vendor_support import API_KEY

from vocable.providers.base import Usage
from vocable.providers.errors import AuthenticationError
from vocable.providers.openai import OpenAILLMSettings

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def chat(openai_standin: OpenAIStandin) -> Chat:
    return Chat(openai_standin, make_llm)


# ------------------------------------------------------------------------------------------ streaming


async def test_the_request_openai_gets(chat: Chat, openai_standin: OpenAIStandin) -> None:
    chunks = await chat.run()
    assert text_of(chunks) == DEFAULT_REPLY
    assert isinstance(chunks[-1], Usage), "usage comes in the last chunk (choices: [])"
    request = openai_standin.log[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"
    body = request["body"]
    assert body["model"] == "gpt-standin" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "temperature" not in body and "max_tokens" not in body, "unset settings leave the server's defaults"


async def test_usage_can_be_left_out_for_servers_that_refuse_stream_options(
    chat: Chat, openai_standin: OpenAIStandin
) -> None:
    chunks = await chat.run(include_usage=False, temperature=0.2, max_tokens=64)
    assert text_of(chunks) == DEFAULT_REPLY and not any(isinstance(c, Usage) for c in chunks)
    body = openai_standin.log[0]["body"]
    assert "stream_options" not in body
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body, "other servers know max_tokens"


# ------------------------------------------------------------------------------ other servers, Azure


async def test_local_server_without_a_key(
    chat: Chat, openai_standin: OpenAIStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ollama and friends take any key: none is configured, and OPENAI_API_KEY is never sent elsewhere."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key-must-stay-home")
    openai_standin.require_key = False
    chunks = await chat.run(api_key=None)
    assert text_of(chunks) == DEFAULT_REPLY
    assert openai_standin.log[0]["headers"]["authorization"] == "Bearer no-key"


async def test_extra_body_and_extra_headers_reach_the_server(chat: Chat, openai_standin: OpenAIStandin) -> None:
    extra = {"extra_body": {"options": {"num_ctx": 8192}, "top_k": 20},
             "extra_headers": {"X-Title": "vocable", "cf-aig-authorization": "Bearer gateway-secret-42"}}
    assert text_of(await chat.run(**extra)) == DEFAULT_REPLY
    request = openai_standin.log[0]
    assert request["body"]["options"] == {"num_ctx": 8192} and request["body"]["top_k"] == 20
    assert request["headers"]["x-title"] == "vocable"
    assert request["headers"]["cf-aig-authorization"] == "Bearer gateway-secret-42"
    settings = chat.make(**extra).settings
    assert "gateway-secret-42" in settings.secrets(), "header values are scrubbed from errors too"
    assert "gateway-secret-42" not in repr(settings)


async def test_azure_variant_uses_the_deployment_path_and_api_key_header(
    chat: Chat, openai_standin: OpenAIStandin
) -> None:
    azure = {"base_url": openai_standin.url, "api_version": "2024-10-21"}
    assert text_of(await chat.run(deployment="voice-gpt", max_tokens=50, **azure)) == DEFAULT_REPLY
    request = openai_standin.log[0]
    assert request["path"] == "/openai/deployments/voice-gpt/chat/completions"
    assert request["query"] == {"api-version": "2024-10-21"}
    assert request["headers"]["api-key"] == API_KEY and "authorization" not in request["headers"]
    assert request["body"]["max_completion_tokens"] == 50, "Azure and OpenAI want max_completion_tokens"

    openai_standin.reset()
    with pytest.raises(AuthenticationError):
        await chat.run(api_key="wrong-key", **azure)
    assert openai_standin.log[0]["path"] == "/openai/deployments/gpt-standin/chat/completions", "default: model"


@pytest.mark.parametrize(
    ("values", "path", "message"),
    [
        ({"model": "gpt-5.4-mini"}, "api_key", "api.openai.com needs a key"),
        ({"model": "gpt-5.4-mini", "api_key": "  "}, "api_key", "api.openai.com needs a key"),
        ({"model": "m", "base_url": "https://r.openai.azure.com", "api_version": "2024-10-21"}, "api_key", "Azure"),
        ({"model": "m", "base_url": "http://127.0.0.1:11434/v1", "deployment": "d"}, "deployment", "api_version"),
        ({"base_url": "http://127.0.0.1:11434/v1"}, "model", "required"),
        ({"model": "m", "base_url": "localhost:11434"}, "base_url", "http://"),
        ({"model": "m", "api_key": "k", "max_retries": 2}, "", "retries"),
    ],
)
def test_settings_errors_name_their_key(values: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        OpenAILLMSettings.model_validate(values)
    errors = info.value.errors(include_input=False)
    assert any(".".join(map(str, e["loc"])) == path and message in e["msg"] for e in errors), errors


def test_a_blank_key_is_no_key_for_a_local_server() -> None:
    settings = OpenAILLMSettings.model_validate({"model": "llama3.2", "base_url": "http://127.0.0.1:11434/v1",
                                                 "api_key": ""})
    assert settings.api_key is None and not settings.needs_key()
