"""``energy``: a dependency-free VAD on signal level. The engine's default when no model is installed.

It is crude (noise above the threshold counts as speech) but costs microseconds, and is what the scripted
test pipeline uses. Install ``vocable[local]`` and select ``silero`` for real use.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
from pydantic import Field

from vocable.providers.base import VAD, ProviderSettings, VADCapabilities, VADStream


class EnergyVADSettings(ProviderSettings):
    threshold_dbfs: float = Field(default=-45.0, le=0, description="level above which a frame is speech")
    frame_ms: int = Field(default=20, ge=10, le=100)


_PCM16 = np.dtype("<i2")

try:  # one C call per frame, ~4x cheaper than numpy's three; the VAD runs on every frame of every session
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # stdlib until 3.12; ``audioop-lts`` after
        import audioop as _audioop
except ImportError:  # Python 3.13+ without the backport
    _audioop = None


def threshold_amplitude(threshold_dbfs: float) -> int:
    """The RMS (in PCM16 steps) at or above which a frame is speech: whole steps, so both paths agree."""
    return max(1, math.ceil(32768.0 * 10 ** (threshold_dbfs / 20.0)))


class _EnergyStream(VADStream):
    __slots__ = ("_threshold", "_threshold_sq")

    def __init__(self, threshold_dbfs: float) -> None:
        self._threshold = threshold_amplitude(threshold_dbfs)
        self._threshold_sq = float(self._threshold) ** 2

    def probability(self, frame: bytes) -> float:
        if _audioop is None or len(frame) & 1:
            return self._probability_numpy(frame)
        # audioop floors its RMS to a whole step, as the threshold is rounded up: both paths agree
        return 1.0 if frame and _audioop.rms(frame, 2) >= self._threshold else 0.0

    def _probability_numpy(self, frame: bytes) -> float:
        # RMS >= threshold, compared as sum of squares: one dot product, no sqrt or mean
        if len(frame) < 2:
            return 0.0
        samples = np.frombuffer(frame, _PCM16, count=len(frame) // 2).astype(np.float32)
        return 1.0 if samples.dot(samples) >= self._threshold_sq * samples.size else 0.0


class EnergyVAD(VAD):
    name = "energy"
    Settings = EnergyVADSettings
    capabilities: ClassVar[VADCapabilities] = VADCapabilities(sample_rate=16000, frame_samples=320)

    def __init__(self, settings: EnergyVADSettings | None = None) -> None:
        super().__init__(settings)
        frame_samples = 16 * self.settings.frame_ms
        self.capabilities = VADCapabilities(sample_rate=16000, frame_samples=frame_samples)

    def open(self) -> VADStream:
        return _EnergyStream(self.settings.threshold_dbfs)
