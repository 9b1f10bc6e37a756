"""Groq chat completions as a vocable LLM, through the official async SDK (``AsyncGroq``).

Streaming is Server-Sent Events ending in ``[DONE]``. Text deltas go out as they arrive; tool calls arrive
in pieces (id and name first, then argument fragments keyed by ``index``) and are assembled here so the
engine only ever sees whole ``ToolCall``s. Token usage comes in the last chunk as ``x_groq.usage`` (or as
``usage`` where the API adds it) and is yielded as ``Usage`` for the turn's metrics.

The SDK's own retries are off (``max_retries=0``) and this provider does not retry either: it maps errors
once (``vendor_errors.mapped_stream``, with the vendor's ``Retry-After``) and the engine's retry policy decides,
so that a 429 is not silently retried more often than the chain's ``retries`` says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog
from pydantic import Field

from vocable.plugins.hookspecs import hookimpl
from vocable.providers.base import (
    LLM,
    LLMCapabilities,
    LLMChunk,
    Message,
    Requirement,
    TextDelta,
    Tool,
    ToolCall,
    Usage,
)
from vocable.providers.errors import ServiceUnavailable
from vocable.providers.hosted import HostedSettings
from vocable.redaction import redact_url
from vocable.providers.vendor_errors import mapped_stream

log = structlog.get_logger("vocable.providers.groq")


class GroqSettings(HostedSettings):
    base_url: str = "https://api.groq.com"
    model: str = "llama-3.3-70b-versatile"
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, gt=0)


@dataclass(slots=True)
class _PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def build(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.name, arguments="".join(self.arguments) or "{}")


def to_wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """vocable messages -> the OpenAI-style message dicts Groq accepts."""
    wire: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and m.tool_calls:
            item["content"] = m.content or None
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.role == "tool":
            item["tool_call_id"] = m.tool_call_id
        if m.name and m.role in ("user", "assistant"):
            item["name"] = m.name
        wire.append(item)
    return wire


def to_wire_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


class GroqLLM(LLM):
    """Groq-hosted chat models (Llama, Qwen, GPT-OSS...) with streaming, tool calls and usage."""

    name = "groq"
    Settings = GroqSettings
    capabilities: ClassVar[LLMCapabilities] = LLMCapabilities(streaming=True, tools=True)
    requires = (Requirement("groq", "pip install 'vocable[groq]'"),)
    settings: GroqSettings

    def __init__(self, settings: GroqSettings | None = None) -> None:
        super().__init__(settings)
        self._client: Any = None

    async def start(self) -> None:
        self._ensure_client()
        log.info("groq.ready", model=self.settings.model, base_url=redact_url(self.settings.base_url))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _ensure_client(self) -> Any:
        if self._client is None:
            from groq import AsyncGroq

            s = self.settings
            self._client = AsyncGroq(
                api_key=s.api_key.get_secret_value(),
                base_url=s.base_url,
                timeout=s.request_timeout_s,
                max_retries=0,
            )
        return self._client

    def stream(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> AsyncIterator[LLMChunk]:
        s = self.settings
        return mapped_stream(
            self._attempt(messages, tools),
            provider=self.name,
            idle_timeout_s=s.request_timeout_s,
            secrets=s.secrets(),
        )

    async def _attempt(self, messages: Sequence[Message], tools: Sequence[Tool]) -> AsyncIterator[LLMChunk]:
        """One request. Raises ServiceUnavailable when the stream ends before the model said it finished."""
        client = self._ensure_client()
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
        response = await client.chat.completions.create(**request)
        calls: dict[int, _PartialToolCall] = {}
        finished = False
        usage_sent = False
        try:
            async for chunk in response:
                x_groq = getattr(chunk, "x_groq", None)
                if x_groq is not None and getattr(x_groq, "error", None):
                    raise ServiceUnavailable(f"stream stopped: {x_groq.error}", provider=self.name)
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        yield TextDelta(delta.content)
                    for piece in delta.tool_calls or ():
                        call = calls.setdefault(piece.index, _PartialToolCall())
                        call.id = piece.id or call.id
                        if piece.function is not None:
                            call.name = piece.function.name or call.name
                            if piece.function.arguments:
                                call.arguments.append(piece.function.arguments)
                    if choice.finish_reason is not None:
                        finished = True
                        for index in sorted(calls):
                            yield calls[index].build()
                        calls.clear()
                usage = chunk.usage or (x_groq.usage if x_groq is not None else None)
                if usage is not None and not usage_sent:
                    usage_sent = True
                    yield Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        finally:
            await response.close()
        if not finished:
            raise ServiceUnavailable("stream ended before the model finished", provider=self.name)


@hookimpl
def register_providers(register: Any) -> None:
    register(GroqLLM)


__all__ = ["GroqLLM", "GroqSettings", "to_wire_messages", "to_wire_tools", "register_providers"]
