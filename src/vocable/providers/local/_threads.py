"""Running CPU-bound model calls off the event loop, shared fairly between sessions.

Every local model is loaded once per process and shared by all sessions, so each provider owns one
``InferencePool``: a small FIFO thread pool (first come, first served, so a busy session cannot starve the
others; each session keeps at most one job in flight) with a hard cap on queued work. A full pool raises
``CapacityExceeded`` at once: a clear, retryable error beats a session that silently stalls.

The 2 cores of a small machine are not fought over: a pool marked ``foreground`` (Piper's: someone is about
to hear what it makes) holds ``FOREGROUND`` while a job runs, and background work that is ahead of need (an
LLM writing the rest of a reply the voice has not reached) waits between its items while it is held
(``FOREGROUND.yield_to``), so the first sentence's audio gets both cores.

``stream_from_thread`` turns a blocking generator (llama.cpp tokens, Piper audio) into an async iterator
through a bounded hand-off: the worker thread waits for credit before it posts each item onto the loop, so
a slow consumer slows the producer instead of growing a queue, and closing the iterator stops the worker
at its next item.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from vocable.providers.errors import CapacityExceeded

T = TypeVar("T")

log = structlog.get_logger("vocable.local")

_DONE = object()


class Foreground:
    """Counts the foreground jobs running in this process; background work waits for none to run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._idle = threading.Event()
        self._idle.set()

    @property
    def running(self) -> int:
        return self._running

    def enter(self) -> None:
        with self._lock:
            self._running += 1
            self._idle.clear()

    def exit(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def yield_to(self, timeout_s: float, stop: StopFlag | None = None) -> float:
        """Block while a foreground job runs, at most ``timeout_s`` and not past ``stop`` (checked every 10 ms:
        a consumer that closes its stream waits for the worker); the seconds waited."""
        if self._idle.is_set():
            return 0.0
        began = time.perf_counter()
        deadline = began + timeout_s
        while not self._idle.wait(min(0.01, max(0.0, deadline - time.perf_counter()))):
            if (stop is not None and stop.is_set()) or time.perf_counter() >= deadline:
                break
        return time.perf_counter() - began


FOREGROUND = Foreground()


class InferencePool:
    """A bounded FIFO thread pool for one shared model.

    ``workers`` jobs run at once; at most ``max_pending`` jobs (running plus queued) are accepted. The
    counter is guarded by a threading lock, not an asyncio primitive, so one pool can serve sessions living
    in different event loops (several engines in one process, or tests).
    """

    def __init__(self, name: str, *, workers: int = 1, max_pending: int = 8, foreground: bool = False) -> None:
        if workers < 1 or max_pending < workers:
            raise ValueError("need workers >= 1 and max_pending >= workers")
        self.name = name
        self.foreground = foreground  # its jobs hold FOREGROUND while they run
        self.workers = workers
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"vocable-{name}")
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        """Jobs running or waiting."""
        return self._pending

    def has_idle_worker(self) -> bool:
        """True when a job submitted now would start at once (optional work uses this to stay out of the way)."""
        return self._pending < self.workers

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)``; raise CapacityExceeded when ``max_pending`` jobs are already accepted."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise CapacityExceeded(
                    f"{self._pending} {self.name} jobs already running or queued (max_pending={self.max_pending}); "
                    "too many concurrent sessions for this machine",
                    provider=self.name,
                )
            self._pending += 1
        try:
            future = self._executor.submit(self._foreground, fn, *args) if self.foreground else \
                self._executor.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _f: self._release())
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the pool and await it. Cancelling the caller un-queues a job not yet started."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    @staticmethod
    def _foreground(fn: Callable[..., T], *args: Any) -> T:
        FOREGROUND.enter()
        try:
            return fn(*args)
        finally:
            FOREGROUND.exit()

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class StopFlag:
    """Set by the consumer when it no longer wants items; checked by the producer thread per item."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


async def stream_from_thread(
    pool: InferencePool,
    produce: Callable[[StopFlag], Iterator[T]],
    *,
    maxsize: int = 16,
    join_timeout: float = 5.0,
    wait_on_close: bool = True,
) -> AsyncGenerator[T, None]:
    """Iterate ``produce(stop)`` in ``pool`` and yield its items on the event loop.

    The producer is expected to return soon after ``stop`` is set (it is also checked here before every
    item). When the consumer closes this iterator (``aclose``, cancellation, ``break``), the flag is set, a
    queued job is withdrawn, and we wait (bounded) for a running job to wind down so the model is free when
    ``aclose`` returns. With ``wait_on_close=False`` a running job is left to wind down on its own (the pool's
    FIFO still keeps the next job behind it): for producers that check ``stop`` only between long calls
    (Piper's sentence), so that whoever drops the stream (a reply dropped because the user went on) is not
    held up for the rest of that call.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()  # never more than ``maxsize`` items: see ``credits``
    credits = threading.Semaphore(maxsize)
    stop = StopFlag()

    def post(item: Any) -> bool:
        while not credits.acquire(timeout=0.05):
            if stop.is_set():
                return False
        if stop.is_set():
            return False
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            stop.set()
            return False
        return True

    def job() -> None:
        items = produce(stop)
        try:
            for item in items:
                if stop.is_set() or not post(item):
                    break
        except Exception as exc:  # noqa: BLE001 - handed to the consumer and raised there
            post(_Failure(exc))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's cleanup (llama.cpp's sampling loop) runs now, in this thread
        post(_DONE)

    future = pool.submit(job)
    try:
        while True:
            item = await queue.get()
            credits.release()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        if not future.cancel() and wait_on_close:
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), join_timeout)
            except TimeoutError:
                log.warning("worker did not stop in time", pool=pool.name, timeout_s=join_timeout)


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
