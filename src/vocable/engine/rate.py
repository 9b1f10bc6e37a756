"""A sliding one-minute window: how many things happened lately, and whether one more is allowed.

Used for new sessions per client address (``LocalLedger``) and typed turns per session: each allowed event
is remembered with its time, so memory is bounded by the limit itself.
"""

from __future__ import annotations

import time
from collections import deque

WINDOW_S = 60.0


class SlidingWindow:
    __slots__ = ("limit", "window_s", "_times")

    def __init__(self, limit: int, window_s: float = WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def allow(self, now: float | None = None) -> bool:
        """Count one event if fewer than ``limit`` happened in the last window; False (not counted) if not."""
        now = time.monotonic() if now is None else now
        times = self._times
        while times and now - times[0] > self.window_s:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True
