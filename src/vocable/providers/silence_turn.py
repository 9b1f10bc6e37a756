"""``silence``: the default end-of-turn detector. The turn ends after ``hangover_ms`` of silence.

Measured in audio time, so a clip fed faster than real time ends its turn at the same place.
"""

from __future__ import annotations

from pydantic import Field

from vocable.providers.base import ProviderSettings, TurnDetector, TurnStream


class SilenceSettings(ProviderSettings):
    hangover_ms: int = Field(default=500, ge=20, le=10000, description="silence that ends the user's turn")


class _SilenceStream(TurnStream):
    __slots__ = ("_hangover_ms",)

    def __init__(self, hangover_ms: int) -> None:
        self._hangover_ms = hangover_ms

    def on_pause(self, utterance: bytes | bytearray, pause_ms: float, sample_rate: int) -> bool:
        return pause_ms >= self._hangover_ms


class SilenceTurnDetector(TurnDetector):
    name = "silence"
    Settings = SilenceSettings

    def open(self) -> TurnStream:
        return _SilenceStream(self.settings.hangover_ms)
