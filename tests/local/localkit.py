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


def offline_config(**pipeline: object) -> dict:
    """The offline default (``default.yaml``) for an in-process engine: no storage, metrics or transports;
    ``pipeline`` keys replace the default's."""
    from importlib import resources

    import yaml

    config = yaml.safe_load(resources.files("vocable.config").joinpath("default.yaml").read_text(encoding="utf-8"))
    config.update(storage={"url": None}, metrics=[], transports={})
    config["server"]["idle_timeout_s"] = 600
    config["pipeline"].update(pipeline)
    return config


async def speak(conversation, pcm: bytes, *, frame_ms: int = 20, rate: int = 16000) -> float:
    """Send ``pcm`` at real time, as a microphone would (each frame on its own wall-clock slot, so a late
    frame does not push the rest later); returns the loop time at which the last frame was sent."""
    loop = asyncio.get_running_loop()
    step = rate * frame_ms // 1000 * 2
    began = loop.time()
    for n, i in enumerate(range(0, len(pcm), step)):
        await conversation.send_audio(pcm[i : i + step])
        delay = began + (n + 1) * frame_ms / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return loop.time()
