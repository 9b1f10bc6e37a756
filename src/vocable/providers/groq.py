"""Groq chat completions as a vocable LLM, through the official async SDK (``AsyncGroq``).

Groq speaks the OpenAI chat completions API, so everything but the client and Groq's own extensions is
shared with the ``openai`` provider in ``openai_compat``: streaming (Server-Sent Events ending in ``[DONE]``),
tool calls assembled from their pieces so the engine only ever sees whole ``ToolCall``s, and the error
handling. Token usage comes in the last chunk as ``x_groq.usage`` (or as ``usage`` where the API adds it)
and is yielded as ``Usage`` for the turn's metrics; an error Groq reports inside the stream (``x_groq.error``)
ends it as ``ServiceUnavailable``.

The SDK's own retries are off (``max_retries=0``) and this provider does not retry either: it maps errors
once (``vendor_errors.mapped_stream``, with the vendor's ``Retry-After``) and the engine's retry policy decides,
so that a 429 is not silently retried more often than the chain's ``retries`` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from vocable.plugins.hookspecs import hookimpl
from vocable.providers.base import LLMCapabilities, Message, Requirement, Tool
from vocable.providers.errors import ServiceUnavailable
from vocable.providers.hosted import HostedSettings
from vocable.providers.openai_compat import ChatCompletionsLLM, to_wire_messages, to_wire_tools


class GroqSettings(HostedSettings):
    base_url: str = "https://api.groq.com"
    model: str = "llama-3.3-70b-versatile"
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, gt=0)


class GroqLLM(ChatCompletionsLLM):
    """Groq-hosted chat models (Llama, Qwen, GPT-OSS...) with streaming, tool calls and usage."""

    name = "groq"
    Settings = GroqSettings
    capabilities: ClassVar[LLMCapabilities] = LLMCapabilities(streaming=True, tools=True)
    requires = (Requirement("groq", "pip install 'vocable[groq]'"),)
    settings: GroqSettings

    def new_client(self) -> Any:
        from groq import AsyncGroq

        s = self.settings
        return AsyncGroq(
            api_key=s.api_key.get_secret_value(),
            base_url=s.base_url,
            timeout=s.request_timeout_s,
            max_retries=0,
        )

    def request(self, messages: Sequence[Message], tools: Sequence[Tool]) -> dict[str, Any]:
        s = self.settings
        request: dict[str, Any] = {
            "model": s.model,
            "messages": to_wire_messages(messages),
            "temperature": s.temperature,
            "stream": True,
        }
        if s.max_tokens is not None:
            request["max_completion_tokens"] = s.max_tokens
        if tools:
            request["tools"] = to_wire_tools(tools)
        return request

    def extension(self, chunk: Any) -> Any:
        x_groq = getattr(chunk, "x_groq", None)
        if x_groq is None:
            return None
        if getattr(x_groq, "error", None):
            raise ServiceUnavailable(f"stream stopped: {x_groq.error}", provider=self.name)
        return getattr(x_groq, "usage", None)


@hookimpl
def register_providers(register: Any) -> None:
    register(GroqLLM)


__all__ = ["GroqLLM", "GroqSettings", "to_wire_messages", "to_wire_tools", "register_providers"]
