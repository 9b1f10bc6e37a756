"""The reply text as the LLM writes it, readable from the start by any number of TTS attempts.

A fallback TTS must receive the same text as the one that failed, so the text is kept (it is small and
bounded by ``max_chars``) and every reader starts at the beginning.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from vocable.engine.metrics import now


class TextFeed:
    __slots__ = ("max_chars", "_pieces", "_size", "_changed", "_closed", "first_read")

    def __init__(self, max_chars: int = 20000) -> None:
        self.max_chars = max_chars
        self._pieces: list[str] = []
        self._size = 0
        self._changed = asyncio.Event()
        self._closed = False
        self.first_read: float | None = None

    def push(self, text: str) -> None:
        if self._closed or not text:
            return
        room = self.max_chars - self._size
        if room <= 0:
            return
        text = text[:room]
        self._pieces.append(text)
        self._size += len(text)
        self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    async def read(self) -> AsyncIterator[str]:
        """All the text from the first piece on, then more as it comes, until ``close``.

        Whatever piled up since the reader last looked comes as one piece: a fast LLM's burst of tokens
        then costs the sentence splitter (or a streaming TTS) one call instead of one per token.
        """
        index = 0
        while True:
            pieces = self._pieces
            if index < len(pieces):
                text = pieces[index] if index + 1 == len(pieces) else "".join(pieces[index:])
                index = len(pieces)
                if self.first_read is None:
                    self.first_read = now()
                yield text
                continue
            if self._closed:
                return
            self._changed.clear()
            await self._changed.wait()
