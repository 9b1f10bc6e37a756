"""End-of-turn detectors that need no model.

``silence``, the default: the turn ends after ``hangover_ms`` of silence.

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


class STTEndpointingSettings(ProviderSettings):
    max_pause_ms: int = Field(default=2000, ge=100, le=20000,
                              description="end the turn after this much silence if the STT never does")


class _STTEndpointingStream(TurnStream):
    """The STT decides (Deepgram's ``speech_final``); silence is only the safety net."""

    stt_endpointing = True
    __slots__ = ("_max_pause_ms",)

    def __init__(self, max_pause_ms: int) -> None:
        self._max_pause_ms = max_pause_ms

    def on_pause(self, utterance: bytes | bytearray, pause_ms: float, sample_rate: int) -> bool:
        return pause_ms >= self._max_pause_ms


class STTEndpointing(TurnDetector):
    """``stt``: the turn ends when a streaming STT marks its final transcript ``speech_final``."""

    name = "stt"
    Settings = STTEndpointingSettings

    def open(self) -> TurnStream:
        return _STTEndpointingStream(self.settings.max_pause_ms)
