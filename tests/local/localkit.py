"""Helpers shared by the local-provider tests (tests/ is on sys.path, so this is ``local.localkit``).

Providers are started with ``asyncio.run`` in a throwaway loop and then used from every test's own loop:
that is also a check that a loaded provider is not tied to the loop that started it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

from vocable.providers.base import Flush, Provider

P = TypeVar("P", bound=Provider)


def start(provider: P) -> P:
    asyncio.run(provider.start())
    return provider


def stop(provider: Provider) -> None:
    asyncio.run(provider.aclose())


async def frames(
    *clips: bytes | Flush, rate: int = 16000, frame_ms: int = 20, pace: float = 0.0
) -> AsyncIterator[bytes | Flush]:
    """Audio as the engine sends it: 20 ms frames, FLUSH markers passed through.

    ``pace`` is the wall time per audio second (1.0 = real time, 0 = as fast as possible).
    """
    step = rate * frame_ms // 1000 * 2
    for clip in clips:
        if isinstance(clip, Flush):
            yield clip
            continue
        for i in range(0, len(clip), step):
            yield clip[i : i + step]
            await asyncio.sleep(frame_ms / 1000 * pace)


def words(text: str) -> set[str]:
    """Lower-case words without punctuation, for transcript checks."""
    cleaned = "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower())
    return set(cleaned.split())
