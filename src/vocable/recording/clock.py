"""A virtual clock for replays: time passes only when nothing else can happen, and then at once.

``VirtualClock`` replaces ``time.monotonic`` and ``time.perf_counter`` (which the event loop, the engine's
``TurnMetrics`` stamps and its paced player read) with its own time while it is installed, and
``VirtualLoop`` is an event loop whose wait for the next timer does not wait: when no callback is ready and
no socket has anything, the clock jumps to the timer. A recording of ten minutes replays in well under a
second, and, since every wait in the engine and in the recorded providers is a timer, in the same order
each time.

Work in threads (a local model) takes no virtual time: while any is under way (``run_in_executor``,
``asyncio.wrap_future``) the loop waits for it in real time with the clock stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
import sys
import time
from collections.abc import Callable
from typing import Any


class VirtualClock:
    """``with VirtualClock() as clock:`` time stands still except through ``advance``."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.monotonic() if start is None else start
        self._saved: list[tuple[Any, str, Any]] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self.now += seconds

    def __enter__(self) -> VirtualClock:
        perf, mono, wrap = time.perf_counter, time.monotonic, asyncio.wrap_future
        self._patch(time, "perf_counter", self)
        self._patch(time, "monotonic", self)
        self._patch(asyncio, "wrap_future", _tracked_wrap_future(wrap))
        # modules that bound the clock at import (``now = time.perf_counter``, ``from ... import now``)
        for name, module in list(sys.modules.items()):
            if name == "vocable" or name.startswith("vocable."):
                for attr, value in list(vars(module).items()):
                    if value is perf or value is mono:
                        self._patch(module, attr, self)
        return self

    def __exit__(self, *exc: object) -> None:
        while self._saved:
            owner, attr, value = self._saved.pop()
            setattr(owner, attr, value)

    def _patch(self, owner: Any, attr: str, value: Any) -> None:
        self._saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)


class _VirtualSelector:
    """The loop's selector: answers at once, jumping the clock to the next timer instead of sleeping."""

    def __init__(self, clock: VirtualClock, loop: VirtualLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if self._loop.in_flight or timeout is None:  # a thread's result (or a signal) is due: wait for it
            return self._real.select(None if timeout is None else min(timeout, 0.05))
        self._clock.advance(timeout)
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        self.in_flight = 0  # thread work under way
        super().__init__(_VirtualSelector(clock, self))  # type: ignore[arg-type]

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self.track(future)
        return future

    def track(self, future: asyncio.Future[Any]) -> None:
        self.in_flight += 1

        def done(_: object) -> None:
            self.in_flight -= 1

        future.add_done_callback(done)


def _tracked_wrap_future(wrap: Callable[..., Any]) -> Callable[..., Any]:
    def wrap_future(future: Any, *, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[Any]:
        wrapped = wrap(future, loop=loop)
        running = wrapped.get_loop()
        if isinstance(future, concurrent.futures.Future) and isinstance(running, VirtualLoop):
            running.track(wrapped)
        return wrapped  # type: ignore[no-any-return]
    return wrap_future


def run_virtual(main: Callable[[], Any]) -> Any:
    """``asyncio.run(main())`` on a virtual clock. The clocks it replaces are the process's: nothing else (no
    other thread's event loop) may run meanwhile."""
    with VirtualClock() as clock, asyncio.Runner(loop_factory=lambda: VirtualLoop(clock)) as runner:
        return runner.run(main())
