"""Pipecat's own service base classes, subclassed with the same instant fakes vocable's benchmarks use.

Each fake does exactly the work of its vocable twin (``vocable.testing.fakes``): the STT reveals the script
word by word as interim transcripts and gives the final one when the user stops; the LLM yields the reply
word by word; the TTS makes a tone of ``ms_per_char`` per character in ``chunk_ms`` chunks with the very
same ``tone()`` function. Everything around them is Pipecat's real machinery: frame processors with their
queues and tasks, the VAD controller inside the user aggregator, the turn controller, the context
aggregators, TTSService's sentence aggregation and audio contexts, and (for the capacity benchmark) its
FastAPI WebSocket transport.

Only policy is made equal to vocable's: the user's turn ends as soon as the VAD has stopped *and* the final
transcript is in (vocable: silence hangover -> flush -> final transcript -> reply), with no extra timers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop.base_user_turn_stop_strategy import (
    BaseUserTurnStopStrategy,
)
from pipecat.utils.time import time_now_iso8601

from vocable.testing.fakes import tone

now = time.perf_counter


def _unset(cls):  # type: ignore[no-untyped-def]
    """Settings with every field given as None (a fake has no model, voice or language)."""
    fields = [f for f in dataclasses.fields(cls) if f.name not in ("extra", "use_provider_thinking_default")]
    values = {f.name: None for f in fields}
    if "filter_incomplete_user_turns" in values:
        values["filter_incomplete_user_turns"] = False
    return cls(**values)


def quiet_pipecat_logs() -> None:
    """Pipecat logs at DEBUG by default; vocable's benchmarks log at WARNING. Make them equal."""
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    logger.disable("pipecat")  # also the import-time banner and the settings warnings
    logger.enable("pipecat.transports")


class EnergyVADAnalyzer(VADAnalyzer):
    """vocable's ``energy`` VAD (RMS above -45 dBFS) inside Pipecat's VAD state machine."""

    def __init__(self, *, threshold_dbfs: float = -45.0, frame_samples: int = 320, **kwargs) -> None:
        super().__init__(**kwargs)
        self._threshold = 32768.0 * 10 ** (threshold_dbfs / 20.0)
        self._frame_samples = frame_samples

    def num_frames_required(self) -> int:
        return self._frame_samples

    def voice_confidence(self, buffer: bytes) -> float:
        samples = np.frombuffer(buffer, dtype="<i2").astype(np.float32)
        if samples.size == 0:
            return 0.0
        return 1.0 if float(np.sqrt(np.mean(samples * samples))) >= self._threshold else 0.0


def energy_vad(stop_secs: float, start_secs: float = 0.06) -> EnergyVADAnalyzer:
    """The same timings as vocable's turn taking (min speech 60 ms, silence hangover ``stop_secs``)."""
    return EnergyVADAnalyzer(params=VADParams(confidence=0.5, start_secs=start_secs, stop_secs=stop_secs))


class ScriptedSTTService(STTService):
    """A streaming STT: interim transcripts while the user speaks, the final one when the VAD stops.

    ``final_stamps`` records, for each final transcript, the clock just before it is pushed: the start of
    the measured span in the turn benchmark.
    """

    def __init__(self, *, transcript: str, interim_every_ms: int = 100, **kwargs) -> None:
        super().__init__(settings=_unset(STTSettings), ttfs_p99_latency=0.0, **kwargs)
        self._transcript = transcript
        self._interim_every_ms = interim_every_ms
        self._heard_ms = 0.0
        self._shown = 0
        self._speaking = False
        self.final_stamps: list[float] = []

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        if not self._speaking:
            yield None
            return
        self._heard_ms += len(audio) / 2 * 1000 / self.sample_rate
        every = self._interim_every_ms
        if every and self._heard_ms // every > self._shown:
            self._shown = int(self._heard_ms // every)
            words = self._transcript.split()
            yield InterimTranscriptionFrame(" ".join(words[: self._shown]), "user", time_now_iso8601())
        else:
            yield None

    async def _handle_vad_user_started_speaking(self, frame: VADUserStartedSpeakingFrame) -> None:
        await super()._handle_vad_user_started_speaking(frame)
        self._speaking, self._heard_ms, self._shown = True, 0.0, 0

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        await super()._handle_vad_user_stopped_speaking(frame)
        self._speaking = False
        final = TranscriptionFrame(self._transcript, "user", time_now_iso8601(), finalized=True)
        self.final_stamps.append(now())
        await self.push_frame(final)


class ScriptedLLMService(LLMService):
    """Yields the reply word by word, as vocable's ScriptedLLM does, through LLMService's text path."""

    def __init__(self, *, reply: str, **kwargs) -> None:
        super().__init__(settings=_unset(LLMSettings), **kwargs)
        self._reply = reply

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):  # the shape of every Pipecat LLM service (see OpenAI's)
            await self.push_frame(LLMFullResponseStartFrame())
            await self.start_processing_metrics()
            await self.start_ttfb_metrics()
            for i, word in enumerate(self._reply.split(" ")):
                if i == 0:
                    await self.stop_ttfb_metrics()
                await self._push_llm_text(word if i == 0 else " " + word)
            await self.stop_processing_metrics()
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class ScriptedTTSService(TTSService):
    """A tone of ``ms_per_char`` per character in ``chunk_ms`` chunks: vocable's ScriptedTTS."""

    def __init__(self, *, chunk_ms: float = 20.0, ms_per_char: float = 10.0, sample_rate: int = 16000, **kwargs) -> None:
        super().__init__(sample_rate=sample_rate, push_start_frame=True, push_stop_frames=True,
                         settings=_unset(TTSSettings), **kwargs)
        self._chunk_ms = chunk_ms
        self._ms_per_char = ms_per_char

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        await self.start_tts_usage_metrics(text)
        total_ms = max(self._chunk_ms, len(text) * self._ms_per_char)
        done = 0.0
        while done < total_ms:
            ms = min(self._chunk_ms, total_ms - done)
            await self.stop_ttfb_metrics()
            yield TTSAudioRawFrame(tone(ms, self.sample_rate), self.sample_rate, 1, context_id=context_id)
            done += ms


class EndOfSpeechAndFinalTranscript(BaseUserTurnStopStrategy):
    """The user's turn ends once the VAD has stopped and the final transcript is in: no extra timers.

    This is vocable's policy (silence hangover -> STT flush -> final transcript -> reply). Pipecat's
    default strategies wait longer on purpose (a smart-turn model, or a 0.6 s speech timeout); that is a
    policy choice, not engine overhead, so it is taken out of the comparison.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._text = ""
        self._vad_stopped = False

    async def handle_user_turn_started(self) -> None:
        self._text, self._vad_stopped = "", False

    async def handle_user_turn_stopped(self) -> None:
        self._text, self._vad_stopped = "", False

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_stopped = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_stopped = True
            await self._maybe_stop()
        elif isinstance(frame, TranscriptionFrame):
            self._text += frame.text
            await self._maybe_stop()
        return ProcessFrameResult.CONTINUE

    async def _maybe_stop(self) -> None:
        if self._vad_stopped and self._text:
            await self.trigger_user_turn_stopped()


class FirstAudioSink(FrameProcessor):
    """Stands where the output transport would: stamps the first output audio frame of each reply."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.first_audio: list[float] = []
        self._armed = True

    def arm(self) -> None:
        self._armed = True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if self._armed and isinstance(frame, OutputAudioRawFrame):
            self.first_audio.append(now())
            self._armed = False
        await self.push_frame(frame, direction)


class RawPCMSerializer(FrameSerializer):
    """Binary messages are raw PCM16 mono both ways, like vocable's ``/ws/audio``; nothing else is sent."""

    def __init__(self, sample_rate: int = 16000) -> None:
        super().__init__()
        self._rate = sample_rate

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            return frame.audio
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes):
            return InputAudioRawFrame(audio=data, sample_rate=self._rate, num_channels=1)
        return None
