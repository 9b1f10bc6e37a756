"""What every OpenAI-style chat completions provider shares (``groq`` and ``openai``), in one place.

Both vendors' SDKs are generated from the same API shape, so the code that talks to them is the same but for
the client class and a few request keys:

- ``to_wire_messages`` / ``to_wire_tools``: vocable's messages and tools as the chat API's JSON;
- ``read_chat_stream``: a streamed completion as vocable chunks. Text deltas go out as they arrive; tool calls
  arrive in pieces (id and name first, then argument fragments keyed by ``index``) and are assembled here, so
  the engine only ever sees whole ``ToolCall``s; token usage (in the last chunk, or wherever the vendor puts
  it) becomes one ``Usage``. A stream that ends before the model said it finished is ``ServiceUnavailable``;
- ``ChatCompletionsLLM``: the provider's life cycle. One SDK client per provider instance, the SDK's own
  retries off (``max_retries=0``), every attempt's failures mapped once by ``vendor_errors.mapped_stream``
  (with the vendor's ``Retry-After``); the engine's retry policy decides what happens next. Closing the
  stream closes the HTTP response, which is how the server learns to stop generating.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import structlog

from vocable.providers.base import LLM, LLMChunk, Message, TextDelta, Tool, ToolCall, Usage
from vocable.providers.errors import ServiceUnavailable
from vocable.providers.hosted import HostedSettings
from vocable.providers.vendor_errors import mapped_stream
from vocable.redaction import redact_url

log = structlog.get_logger("vocable.providers")

T = TypeVar("T")

# A vendor's own part of each chunk: may raise (an error reported inside the stream), and returns a usage
# object carried outside ``chunk.usage`` (Groq's ``x_groq.usage``), or None.
ChunkExtension = Callable[[Any], Any]


@dataclass(slots=True)
class PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def build(self) -> ToolCall:
        # Some local servers send no id; the engine pairs each call with its result by id, so make one.
        return ToolCall(
            id=self.id or f"call_{uuid.uuid4().hex[:12]}", name=self.name, arguments="".join(self.arguments) or "{}"
        )


def to_wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """vocable messages -> the OpenAI-style message dicts."""
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


async def read_chat_stream(
    response: Any, *, provider: str, extension: ChunkExtension | None = None
) -> AsyncIterator[LLMChunk]:
    """The chunks of one streamed chat completion (an SDK ``AsyncStream``) as vocable chunks; closes it."""
    calls: dict[int, PartialToolCall] = {}
    finished = False
    usage_sent = False
    try:
        async for chunk in response:
            vendor_usage = extension(chunk) if extension is not None else None
            for choice in (chunk.choices or ())[:1]:
                delta = choice.delta
                if delta is not None:
                    if delta.content:
                        yield TextDelta(delta.content)
                    for piece in delta.tool_calls or ():
                        _add_piece(calls, piece)
                if choice.finish_reason is not None:
                    finished = True
                    for index in sorted(calls):
                        yield calls[index].build()
                    calls.clear()
            usage = getattr(chunk, "usage", None) or vendor_usage
            if usage is not None and not usage_sent:
                usage_sent = True
                yield Usage(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0)
    finally:
        await response.close()
    if not finished:
        raise ServiceUnavailable("stream ended before the model finished", provider=provider)


def _add_piece(calls: dict[int, PartialToolCall], piece: Any) -> None:
    """One streamed fragment of a tool call. Servers that omit ``index`` continue the last call unless the
    fragment starts a new one (it has an id)."""
    index = piece.index
    if index is None:
        index = len(calls) if (piece.id or not calls) else max(calls)
    call = calls.setdefault(index, PartialToolCall())
    call.id = piece.id or call.id
    if piece.function is not None:
        call.name = piece.function.name or call.name
        if piece.function.arguments:
            call.arguments.append(piece.function.arguments)


class SDKClientProvider(ABC):
    """The life cycle of a provider built on a vendor SDK client: made at ``start``, shared by every session,
    closed by ``aclose``. Mixed in before the provider's base class; subclasses implement ``new_client``."""

    name: ClassVar[str]
    settings: Any
    _client: Any = None  # per instance once made

    @abstractmethod
    def new_client(self) -> Any:
        """The vendor's async SDK client, with ``max_retries=0`` (the engine retries)."""

    def client(self) -> Any:
        if self._client is None:
            self._client = self.new_client()
        return self._client

    async def start(self) -> None:
        self.client()
        log.info(f"{self.name}.ready", kind=getattr(self, "kind", None), model=getattr(self.settings, "model", None),
                 base_url=redact_url(self.settings.base_url))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def attempt(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """One attempt, its failures mapped (``vendor_errors.mapped_stream``) and never retried here."""
        s = self.settings
        return mapped_stream(stream, provider=self.name, idle_timeout_s=s.request_timeout_s, secrets=s.secrets())


class ChatCompletionsLLM(SDKClientProvider, LLM):
    """Streaming chat completions through an OpenAI-style SDK. Subclasses make the client and the request."""

    settings: HostedSettings

    @abstractmethod
    def request(self, messages: Sequence[Message], tools: Sequence[Tool]) -> dict[str, Any]:
        """Keyword arguments of ``client.chat.completions.create`` for one streamed request."""

    def extension(self, chunk: Any) -> Any:
        """The vendor's own part of each chunk (see ``ChunkExtension``); none by default."""
        return None

    def stream(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> AsyncIterator[LLMChunk]:
        return self.attempt(self._attempt(messages, tools))

    async def _attempt(self, messages: Sequence[Message], tools: Sequence[Tool]) -> AsyncIterator[LLMChunk]:
        """One request. Raises ServiceUnavailable when the stream ends before the model said it finished."""
        response = await self.client().chat.completions.create(**self.request(messages, tools))
        async with aclosing(read_chat_stream(response, provider=self.name, extension=self.extension)) as chunks:
            async for item in chunks:
                yield item


__all__ = [
    "ChatCompletionsLLM",
    "SDKClientProvider",
    "ChunkExtension",
    "PartialToolCall",
    "read_chat_stream",
    "to_wire_messages",
    "to_wire_tools",
]
