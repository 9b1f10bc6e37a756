"""``llm: {provider: openai}``: streaming chat completions on any OpenAI-compatible server.

The request and stream handling are ``openai_compat``'s (shared with ``groq``): whole tool calls, one
``Usage`` (asked for with ``stream_options.include_usage``), errors mapped once and retried by the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from vocable.providers.base import LLMCapabilities, Message, Tool
from vocable.providers.openai.settings import REQUIRES, OpenAISettings
from vocable.providers.openai_compat import ChatCompletionsLLM, to_wire_messages, to_wire_tools


class OpenAILLMSettings(OpenAISettings):
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature; default: the "
                                                                        "server's (reasoning models accept no other).")
    max_tokens: int | None = Field(None, gt=0, description="Longest reply in tokens (max_completion_tokens for "
                                                           "OpenAI and Azure, max_tokens elsewhere).")
    include_usage: bool = Field(True, description="Ask for token usage at the end of the stream "
                                                  "(stream_options); turn off for a server that refuses it.")


class OpenAILLM(ChatCompletionsLLM):
    """Chat models behind the OpenAI API: OpenAI, Azure, Ollama, vLLM, LM Studio, llama.cpp, OpenRouter..."""

    name = "openai"
    Settings = OpenAILLMSettings
    capabilities: ClassVar[LLMCapabilities] = LLMCapabilities(streaming=True, tools=True)
    requires = REQUIRES
    settings: OpenAILLMSettings

    def new_client(self) -> Any:
        return self.settings.new_client()

    def request(self, messages: Sequence[Message], tools: Sequence[Tool]) -> dict[str, Any]:
        s = self.settings
        request: dict[str, Any] = {"model": s.model, "messages": to_wire_messages(messages), "stream": True}
        if s.include_usage:
            request["stream_options"] = {"include_usage": True}
        if s.temperature is not None:
            request["temperature"] = s.temperature
        if s.max_tokens is not None:
            # OpenAI deprecated max_tokens (its reasoning models refuse it); other servers know only max_tokens.
            request["max_completion_tokens" if s.needs_key() else "max_tokens"] = s.max_tokens
        if tools:
            request["tools"] = to_wire_tools(tools)
        if s.extra_body:
            request["extra_body"] = dict(s.extra_body)
        return request
