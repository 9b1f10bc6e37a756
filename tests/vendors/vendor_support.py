"""Helpers shared by the vendor tests (a uniquely named module: every test folder has a ``conftest``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from vocable.engine.breaker import Breaker
from vocable.engine.fallback import AllProvidersFailed, LiveProvider, fallback_stream
from vocable.engine.retry import RetryPolicy

API_KEY = "sk-test-5f0e1d2c3b4a"  # distinctive, so a leak into messages or logs is easy to spot


def speech(ms: int, rate: int = 16000) -> bytes:
    """A tone loud enough for the stand-in to count as voiced audio."""
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 180 * t) * 6000).astype("<i2").tobytes()


def silence(ms: int, rate: int = 16000) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def frames(pcm: bytes, rate: int = 16000, frame_ms: int = 20) -> list[bytes]:
    step = rate * frame_ms // 1000 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


def engine_stream(open_stream: Callable[[], AsyncIterator[Any]], *, retries: int, delay_s: float = 0.01) -> AsyncIterator[Any]:
    """A provider's stream as the engine runs it: a chain of one, with the engine's retry policy.

    Providers no longer retry; the engine does, before the first output only. The breaker is off here, so
    every retry is made.
    """
    live = LiveProvider("vendor", None, 30.0, RetryPolicy(retries, delay_s), Breaker(failures=0))
    return fallback_stream("vendor", [live], lambda _: open_stream())


async def through_engine(open_stream: Callable[[], AsyncIterator[Any]], *, retries: int) -> list[Any]:
    """Collect ``engine_stream``; a failure is raised as the provider's own last error, not the chain's summary."""
    try:
        return await collect(engine_stream(open_stream, retries=retries))
    except AllProvidersFailed as failed:
        error = failed.failures[-1][1]
    raise error
