"""A bounded async channel of events with one extra power over asyncio.Queue: purging.

On barge-in the reply audio still waiting to be sent must go at once, before ``interrupted`` is sent, so
the client never plays stale audio. asyncio.Queue cannot remove items; this small channel can.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ChannelClosed(Exception):
    """Raised by ``put`` after ``close``; ``get`` returns None once closed and empty."""


class Channel(Generic[T]):
    __slots__ = ("maxsize", "_low_water", "_items", "_readable", "_writable", "_closed", "_deferred")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("a channel needs room for at least one item")
        self.maxsize = maxsize
        self._low_water = maxsize // 2
        self._items: deque[T] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self._deferred = False  # items were put without waking the reader

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: T, *, wake: bool = True) -> None:
        """Wait for room, then append. Waiting is the backpressure that keeps memory bounded.

        ``wake=False`` leaves a waiting reader asleep until a later ``put`` wakes it with everything
        queued meanwhile (or ``close`` does): for a producer that knows more is coming at once.
        """
        while len(self._items) >= self.maxsize:
            if self._closed:
                raise ChannelClosed
            self._writable.clear()
            await self._writable.wait()
        if self._closed:
            raise ChannelClosed
        self._append(item, wake)

    def put_nowait(self, item: T, *, wake: bool = True) -> bool:
        """Append if there is room; return False (and drop nothing already queued) when full or closed.

        ``wake`` as for ``put``.
        """
        if self._closed or len(self._items) >= self.maxsize:
            return False
        self._append(item, wake)
        return True

    def _append(self, item: T, wake: bool) -> None:
        items = self._items
        items.append(item)
        if not wake:
            self._deferred = True
        elif len(items) == 1 or self._deferred:  # a reader waits only on an empty channel: wake it once
            self._deferred = False
            self._readable.set()

    async def get(self) -> T | None:
        """The next item, or None once the channel is closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        if len(self._items) <= self._low_water:  # a full channel's producer wakes once per half, not per item
            self._writable.set()
        return item

    def purge(self, predicate: Callable[[T], bool]) -> int:
        """Remove every queued item for which ``predicate`` is true; return how many went."""
        kept = [item for item in self._items if not predicate(item)]
        removed = len(self._items) - len(kept)
        if removed:
            self._items.clear()
            self._items.extend(kept)
            self._writable.set()
        return removed

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._writable.set()
