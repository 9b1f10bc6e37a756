"""An example third-party vocable plugin: ``provider: reverse`` answers with the user's words reversed.

It is what a plugin author writes: a provider class with its own settings, registered through a hook and
declared as an entry point in pyproject.toml. No vocable internals are touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from pydantic import Field

from vocable import hookimpl
from vocable.providers.base import LLM, LLMChunk, Message, ProviderSettings, TextDelta, Tool, Usage


class ReverseSettings(ProviderSettings):
    uppercase: bool = False
    word_delay_ms: float = Field(default=0.0, ge=0, description="pause between words, to feel like a model")


class ReverseLLM(LLM):
    name = "reverse"
    Settings = ReverseSettings

    async def stream(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> AsyncIterator[LLMChunk]:
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        words = [w.strip(".,!?") for w in reversed(last.split())] or ["nothing"]
        for i, word in enumerate(words):
            if i and self.settings.word_delay_ms:
                await asyncio.sleep(self.settings.word_delay_ms / 1000)
            text = word.upper() if self.settings.uppercase else word
            yield TextDelta(text if i == 0 else " " + text)
        yield TextDelta(".")
        yield Usage(prompt_tokens=len(last.split()), completion_tokens=len(words))


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(ReverseLLM)
