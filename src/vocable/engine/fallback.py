"""Fallback chains: the first provider that produces output serves the request.

A provider that raises, or says nothing within its ``timeout_s``, before its first output is closed and
the next one in the chain gets the same request. Retryable errors (rate limits, 5xx, timeouts) are retried
on the same provider ``retries`` times first, with the engine's one policy (``vocable.engine.retry``:
backoff with jitter, the vendor's ``Retry-After`` honoured); providers never retry on their own. Once output
has started, the stream is committed to that provider: an error after that point is reported, never
papered over by repeating audio or text. Each provider's circuit breaker (``vocable.engine.breaker``) counts
its failed attempts; while it is open the provider is skipped, so a dead vendor costs no time at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from vocable.engine.breaker import CLOSED, Breaker, CircuitOpen
from vocable.engine.retry import RetryPolicy
from vocable.providers.errors import ProviderError, ProviderTimeout

P = TypeVar("P")
T = TypeVar("T")

log = structlog.get_logger("vocable.fallback")


@dataclass(frozen=True, slots=True)
class LiveProvider(Generic[P]):
    """A started provider instance with its place in a chain, its retry policy and its circuit breaker."""

    name: str
    provider: P
    timeout_s: float
    retry: RetryPolicy = RetryPolicy()
    breaker: Breaker = field(default_factory=Breaker)


class AllProvidersFailed(ProviderError):
    code = "all_providers_failed"

    def __init__(self, kind: str, failures: list[tuple[str, BaseException]]) -> None:
        details = "; ".join(f"{name}: {describe(exc)}" for name, exc in failures) or "no provider configured"
        super().__init__(f"every {kind} provider failed ({details})")
        self.kind = kind
        self.failures = failures
        last = failures[-1][1] if failures else None
        if isinstance(last, ProviderError) and not isinstance(last, AllProvidersFailed):
            self.code = last.code


def describe(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception as exc:  # a provider failing to close must not hide the real outcome
            log.debug("provider_close_failed", error=describe(exc))


class StallWatch:
    """Ends a stream that has produced nothing for ``limit_s`` while its consumer waits on it.

    ``asyncio.timeout`` around every item would create and cancel a timer per LLM token and TTS chunk
    (tens a second for each talking session). This keeps one timer per ``limit_s`` at most: ``waiting``
    stamps the clock (arming the timer if none is armed), ``resumed`` clears the stamp, and when the timer
    fires it either re-arms for the stamp's own deadline or, if the consumer has been waiting too long,
    cancels the task, which ``expired`` then turns into a timeout. Time the consumer spends on its own
    (backpressure from a paced player, say) is never counted against the provider.
    """

    __slots__ = ("limit_s", "_loop", "_task", "_since", "_handle", "_fired", "_cancelling")

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False
        self._cancelling = 0

    def waiting(self) -> None:
        self._since = self._loop.time()
        if self._handle is None:
            # the consumer's task, which the generator runs in (looked up when arming, not per item)
            task = asyncio.current_task()
            if task is not self._task:
                self._task = task
                self._cancelling = task.cancelling() if task is not None else 0
            self._handle = self._loop.call_at(self._since + self.limit_s, self._check)

    def resumed(self) -> None:
        self._since = None

    def expired(self) -> bool:
        """Called on CancelledError while waiting: True if it was this watch (and not anyone else) that cancelled."""
        if not self._fired:
            return False
        self._fired = False
        task = self._task
        return task is not None and task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        since = self._since
        if since is None:
            return  # not waiting now: the next wait arms a fresh timer
        due = since + self.limit_s
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
        elif self._task is not None and not self._task.done():
            self._fired = True
            self._task.cancel()


class ServedBy:
    """Filled in by ``fallback_stream`` with the name of the provider that produced the output."""

    __slots__ = ("name", "failures")

    def __init__(self) -> None:
        self.name: str | None = None
        self.failures: list[tuple[str, BaseException]] = []


async def fallback_stream(
    kind: str,
    chain: Sequence[LiveProvider[P]],
    open_stream: Callable[[P], AsyncIterator[T]],
    *,
    served: ServedBy | None = None,
    stall_timeout_s: float | None = None,
    **log_context: Any,
) -> AsyncIterator[T]:
    """Yield the output of the first provider in ``chain`` whose stream produces something."""
    served = served if served is not None else ServedBy()
    for live in chain:
        breaker = live.breaker
        ticket = breaker.admit()
        if ticket is None:
            served.failures.append((live.name, CircuitOpen(breaker, provider=live.name)))
            log.debug("provider_skipped", kind=kind, provider=live.name, breaker=breaker.state, **log_context)
            continue
        attempt = 0
        while True:
            stream = open_stream(live.provider)
            try:
                async with asyncio.timeout(live.timeout_s):
                    first = await anext(stream)
            except StopAsyncIteration:
                _succeeded(kind, live, log_context)
                served.name = live.name
                await aclose(stream)
                return
            except asyncio.CancelledError:
                breaker.release(ticket)
                await aclose(stream)
                raise
            except Exception as exc:
                await aclose(stream)
                if isinstance(exc, TimeoutError):
                    exc = ProviderTimeout(f"no output within {live.timeout_s:g} s", provider=live.name)
                served.failures.append((live.name, exc))
                opened = breaker.failed(exc, ticket)
                # once the breaker is open (or a probe failed), the request falls back instead of retrying
                retry = live.retry.allows(exc, attempt) and breaker.state == CLOSED
                log.warning(
                    "provider_failed", kind=kind, provider=live.name, attempt=attempt + 1,
                    error=describe(exc), will_retry=retry, **log_context,
                )
                if opened:
                    log.warning("breaker_opened", kind=kind, provider=live.name, failures=breaker.failures,
                                cooldown_s=breaker.cooldown_s, **log_context)
                if not retry:
                    break
                await asyncio.sleep(live.retry.delay(attempt, exc))
                attempt += 1
                continue
            _succeeded(kind, live, log_context)
            served.name = live.name
            watch = StallWatch(stall_timeout_s) if stall_timeout_s is not None else None
            try:
                yield first
                while True:
                    try:
                        if watch is None:
                            item = await anext(stream)
                        else:
                            watch.waiting()
                            item = await anext(stream)
                            watch.resumed()
                    except StopAsyncIteration:
                        return
                    except asyncio.CancelledError:
                        if watch is not None and watch.expired():
                            raise ProviderTimeout(f"stalled for {stall_timeout_s:g} s", provider=live.name) from None
                        raise
                    yield item
            finally:
                if watch is not None:
                    watch.close()
                await aclose(stream)
    raise AllProvidersFailed(kind, served.failures)


def _succeeded(kind: str, live: LiveProvider[Any], log_context: dict[str, Any]) -> None:
    if live.breaker.succeeded():
        log.info("breaker_closed", kind=kind, provider=live.name, **log_context)
