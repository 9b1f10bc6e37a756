"""Helpers shared by the vendor tests (a uniquely named module: every test folder has a ``conftest``)."""

from __future__ import annotations

from typing import Any

import numpy as np

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
