"""Fallback chains: the first provider that produces output serves the request.

A provider that raises, or says nothing within its ``timeout_s``, before its first output is closed and
the next one in the chain gets the same request. Retryable errors (rate limits, 5xx, timeouts) are retried
on the same provider ``retries`` times with backoff first. Once output has started, the stream is committed
to that provider: an error after that point is reported, never papered over by repeating audio or text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

from vocable.providers.errors import ProviderError, ProviderTimeout

P = TypeVar("P")
T = TypeVar("T")

log = structlog.get_logger("vocable.fallback")

BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 2.0


@dataclass(frozen=True, slots=True)
class LiveProvider(Generic[P]):
    """A started provider instance with its place in a chain."""

    name: str
    provider: P
    timeout_s: float
    retries: int = 0


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
        for attempt in range(live.retries + 1):
            stream = open_stream(live.provider)
            try:
                async with asyncio.timeout(live.timeout_s):
                    first = await anext(stream)
            except StopAsyncIteration:
                served.name = live.name
                await aclose(stream)
                return
            except asyncio.CancelledError:
                await aclose(stream)
                raise
            except Exception as exc:
                await aclose(stream)
                if isinstance(exc, TimeoutError):
                    exc = ProviderTimeout(f"no output within {live.timeout_s:g} s", provider=live.name)
                served.failures.append((live.name, exc))
                retry = isinstance(exc, ProviderError) and exc.retryable and attempt < live.retries
                log.warning(
                    "provider_failed", kind=kind, provider=live.name, attempt=attempt + 1,
                    error=describe(exc), will_retry=retry, **log_context,
                )
                if retry:
                    await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))
                    continue
                break
            served.name = live.name
            try:
                yield first
                while True:
                    try:
                        if stall_timeout_s is None:
                            item = await anext(stream)
                        else:
                            async with asyncio.timeout(stall_timeout_s):
                                item = await anext(stream)
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        raise ProviderTimeout(f"stalled for {stall_timeout_s:g} s", provider=live.name) from None
                    yield item
            finally:
                await aclose(stream)
    raise AllProvidersFailed(kind, served.failures)
