"""``energy``: a dependency-free VAD on signal level. The engine's default when no model is installed.

It is crude (noise above the threshold counts as speech) but costs microseconds, and is what the scripted
test pipeline uses. Install ``vocable[local]`` and select ``silero`` for real use.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from vocable.providers.base import VAD, ProviderSettings, VADCapabilities, VADStream


class EnergyVADSettings(ProviderSettings):
    threshold_dbfs: float = Field(default=-45.0, le=0, description="level above which a frame is speech")
    frame_ms: int = Field(default=20, ge=10, le=100)


_PCM16 = np.dtype("<i2")


class _EnergyStream(VADStream):
    __slots__ = ("_threshold_sq",)

    def __init__(self, threshold_dbfs: float) -> None:
        self._threshold_sq = (32768.0 * 10 ** (threshold_dbfs / 20.0)) ** 2

    def probability(self, frame: bytes) -> float:
        # RMS >= threshold, compared as sum of squares: one dot product, no sqrt or mean (runs per frame)
        if not frame:
            return 0.0
        samples = np.frombuffer(frame, _PCM16).astype(np.float32)
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
