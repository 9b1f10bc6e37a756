"""Per-turn latency, stamped where each thing happens (monotonic clock, seconds).

Figures (milliseconds):

- ``stt_ms``: end of user speech -> final transcript (includes the end-of-turn wait, reported as ``eot_ms``);
- ``llm_ttft_ms``: LLM request -> first token;
- ``tts_ttfb_ms``: first TTS request -> first audio;
- ``voice_to_voice_ms``: end of user speech -> first reply audio handed to the transport (wall clock);
- ``engine_overhead_ms``: the time the engine itself adds on that path: final transcript -> LLM request,
  complete first sentence -> TTS request, TTS first audio -> handed to the transport. Everything else on the
  path is spent inside providers, so ``voice_to_voice`` minus provider time equals this figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

now = time.perf_counter


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000.0, 3)


@dataclass(slots=True)
class TurnMetrics:
    session_id: str
    turn_id: str
    speech_end: float | None = None  # last frame of user speech processed
    end_of_turn: float | None = None  # end-of-turn decision
    final_transcript: float | None = None
    llm_request: float | None = None
    llm_first_token: float | None = None
    first_text_ready: float | None = None  # first sentence (or text piece) available for TTS
    tts_request: float | None = None
    tts_first_audio: float | None = None
    first_audio_out: float | None = None
    llm_provider: str | None = None
    tts_provider: str | None = None
    stt_provider: str | None = None
    interrupted: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stamp(self, name: str) -> None:
        """Record the first time ``name`` happened in this turn (later calls keep the first)."""
        if getattr(self, name) is None:
            setattr(self, name, now())

    def engine_overhead_ms(self) -> float | None:
        parts = [
            _ms(self.final_transcript, self.llm_request),
            _ms(self.first_text_ready, self.tts_request),
            # a speculative reply may be ready before the end of turn: its wait for the turn is not overhead
            _ms(max(self.tts_first_audio or 0.0, self.end_of_turn or 0.0), self.first_audio_out)
            if self.tts_first_audio is not None else None,
        ]
        if any(p is None for p in parts):
            return None
        return round(sum(max(0.0, p) for p in parts if p is not None), 3)

    def figures(self) -> dict[str, Any]:
        return {
            "stt_ms": _ms(self.speech_end, self.final_transcript),
            "eot_ms": _ms(self.speech_end, self.end_of_turn),
            "llm_ttft_ms": _ms(self.llm_request, self.llm_first_token),
            "tts_ttfb_ms": _ms(self.tts_request, self.tts_first_audio),
            "voice_to_voice_ms": _ms(self.speech_end, self.first_audio_out),
            "text_to_voice_ms": _ms(self.final_transcript, self.first_audio_out),
            "engine_overhead_ms": self.engine_overhead_ms(),
            "llm_provider": self.llm_provider,
            "tts_provider": self.tts_provider,
            "stt_provider": self.stt_provider,
            "interrupted": self.interrupted,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            **self.extra,
        }
