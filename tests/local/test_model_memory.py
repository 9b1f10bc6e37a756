"""The offline models' memory stays bounded across sessions (issue 22; ``benchmarks/soak.py --offline``).

- Piper: onnxruntime's arena would keep what the longest sentence needed (about 25 MB a second of audio).
- Silero: a session's detector (a model copy each, ~10 MB) goes back to the pool when its audio stops, not only
  when the session is garbage-collected (a session's objects form cycles that wait for a full collection).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest

from vocable.providers.local import PiperTTS, SileroVAD
from vocable.providers.local import vad as vad_module
from vocable.testing.speech import silence

pytestmark = pytest.mark.slow


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


async def test_a_long_sentence_does_not_keep_its_memory(piper: PiperTTS) -> None:
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 12) + "."  # 108 words: ~35 s of audio
    async with aclosing(piper.synthesize("Warm up.")) as stream:
        [chunk async for chunk in stream]
    before = rss_mib()
    async with aclosing(piper.synthesize(long)) as stream:
        seconds = sum(len(chunk.pcm) for chunk in [c async for c in stream]) / 2 / 22050
    assert seconds > 20
    kept = rss_mib() - before
    assert kept < 150, f"{kept:.0f} MiB kept after one long sentence (the arena used to keep ~650)"


async def test_silero_detectors_come_back_from_sessions_not_yet_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vad_module, "IDLE_RETURN_S", 0.05)
    provider = SileroVAD()
    await provider.start()
    loads = 0
    load = provider._new_detector

    def counted() -> Any:
        nonlocal loads
        loads += 1
        return load()

    provider._new_detector = counted  # type: ignore[method-assign]
    await asyncio.sleep(0.5)  # the spares load
    ended = []  # sessions that ended but are still referenced, as before the collector's full pass
    for _ in range(20):
        stream = provider.open()
        assert stream.probability(silence(32)) < 0.5
        ended.append(stream)
        await asyncio.sleep(0.1)  # its audio has stopped
    assert loads <= provider.settings.spares + 1, f"{loads} detectors loaded for 20 sessions one after another"
    assert all(not s._lease for s in ended[:-1]), "quiet streams keep their detectors"
    ended[0].probability(silence(32))  # a stream whose audio resumes borrows a detector again
    assert ended[0]._lease
    await provider.aclose()
