"""The ``silero`` and ``webrtcvad`` detectors find the speech in a clip with silences."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from vocable.providers.base import VAD
from vocable.providers.local import SileroVAD, WebRTCVAD
from vocable.testing.speech import espeak_pcm, silence

pytestmark = pytest.mark.slow

RATE = 16000
TOLERANCE_S = 0.25  # detectors lag and hang over a little at the edges of speech


def clip_with_regions() -> tuple[bytes, list[tuple[float, float]]]:
    """1 s silence, speech, 1 s silence, speech, 1 s silence, with a faint noise floor; and the speech spans."""
    parts = [silence(1000), espeak_pcm("Hello, can you hear me?"), silence(1000),
             espeak_pcm("Set a timer for ten minutes."), silence(1000)]
    regions, at = [], 0.0
    for i, part in enumerate(parts):
        length = len(part) / 2 / RATE
        if i % 2:
            regions.append((at, at + length))
        at += length
    samples = np.frombuffer(b"".join(parts), dtype="<i2").astype(np.float64)
    samples += np.random.default_rng(7).normal(0.0, 20.0, samples.size)  # a quiet room, not digital zero
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes(), regions


async def detections(provider: VAD, pcm: bytes) -> list[tuple[float, float]]:
    """(frame start time, probability) for every whole frame."""
    await provider.start()
    stream = provider.open()
    n = provider.capabilities.frame_samples
    out = []
    for i in range(0, len(pcm) // 2 - n + 1, n):
        out.append((i / RATE, stream.probability(pcm[2 * i : 2 * (i + n)])))
    return out


@pytest.mark.parametrize("provider", [SileroVAD(), WebRTCVAD()], ids=["silero", "webrtcvad"])
async def test_finds_the_speech_regions(provider: VAD) -> None:
    pcm, regions = clip_with_regions()
    frame_s = provider.capabilities.frame_samples / RATE
    speech = [t for t, p in await detections(provider, pcm) if p > 0.5]

    def inside(t: float) -> bool:
        return any(a - TOLERANCE_S <= t and t + frame_s <= b + TOLERANCE_S for a, b in regions)

    strays = [round(t, 2) for t in speech if not inside(t)]
    assert not strays, f"speech detected in silence at {strays} s"
    for a, b in regions:
        found = sum(frame_s for t in speech if a <= t < b)
        assert found >= 0.5 * (b - a), f"only {found:.2f} s of the speech in {a:.2f}-{b:.2f} s was detected"


@pytest.mark.parametrize("provider", [SileroVAD(), WebRTCVAD()], ids=["silero", "webrtcvad"])
async def test_sessions_are_independent_and_cheap(provider: VAD) -> None:
    pcm, _ = clip_with_regions()
    first = [p for _, p in await detections(provider, pcm)]
    second = [p for _, p in await detections(provider, pcm)]
    assert first == pytest.approx(second, abs=1e-4)
    stream = provider.open()
    frame = pcm[: provider.capabilities.frame_samples * 2]
    began = time.perf_counter()
    for _ in range(200):
        stream.probability(frame)
    assert (time.perf_counter() - began) / 200 < 0.005, "a VAD frame must cost well under a frame's duration"


async def test_silero_rejects_a_wrong_frame_size() -> None:
    provider = SileroVAD()
    await provider.start()
    with pytest.raises(ValueError, match="512"):
        provider.open().probability(silence(20))


async def test_silero_sessions_open_without_loading_a_model() -> None:
    # Loading a detector takes ~50 ms: too long for the event loop, so they are pre-loaded and recycled.
    provider = SileroVAD()
    await provider.start()
    await asyncio.sleep(1.0)  # spares load in the background
    for i in range(10):
        began = time.perf_counter()
        stream = provider.open()
        took = time.perf_counter() - began
        assert i == 0 or took < 0.01, f"open() took {took * 1000:.0f} ms"  # from the 2nd on: a recycled one
        stream.probability(silence(32))
        del stream  # its detector is reset and goes back to the free list
    await provider.aclose()
