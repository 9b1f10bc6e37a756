"""Hearing the user: VAD, pre-roll, pauses and the end-of-turn decision, frame by frame.

A synchronous state machine with no I/O, so the session's audio path stays one function call per frame
and the turn-taking rules can be read (and tested) in one place. ``hear`` returns bit flags that tell the
session what to do with the frame; the session does the awaiting (STT, barge-in, replies).
"""

from __future__ import annotations

from collections import deque

from vocable.config.model import TurnTakingConfig
from vocable.engine.metrics import now
from vocable.providers.base import TurnStream, VADStream

STARTED = 1  # the user started speaking: send ``take_preroll()`` (which includes this frame) to the STT
FORWARD = 2  # the frame belongs to the utterance: send it to the STT
SPEECH = 4  # the frame is speech inside an utterance (barge-in and speculation care)
SPECULATE = 8  # the pause is long enough to transcribe early
END_OF_TURN = 16  # the user's turn has ended


class Listener:
    __slots__ = (
        "_vad", "_probability", "_threshold", "_turn", "_taking", "frame_ms", "sample_rate", "speaking", "speech_run_ms",
        "utterance_speech_ms", "pause_ms", "utterance", "last_speech_at", "_preroll", "_speculated",
    )

    def __init__(self, vad: VADStream, turn: TurnStream, taking: TurnTakingConfig, frame_ms: float,
                 sample_rate: int) -> None:
        self._vad = vad
        self._probability = vad.probability  # bound once: ``hear`` runs for every frame of every session
        self._threshold = taking.vad_threshold
        self._turn = turn
        turn.expect_words(taking.speculative_ms > 0)  # the words of each pause come with the speculative final
        self._taking = taking
        self.frame_ms = frame_ms
        self.sample_rate = sample_rate
        self.speaking = False  # inside a user utterance (pauses included)
        self.speech_run_ms = 0.0  # uninterrupted speech up to this frame
        self.utterance_speech_ms = 0.0  # speech in the current utterance, for the barge-in threshold
        self.pause_ms = 0.0  # silence since the last speech frame of the utterance (audio time)
        self.utterance = bytearray()  # read-only for others: the turn detector sees it
        self.last_speech_at: float | None = None
        self._preroll: deque[bytes] = deque(maxlen=max(1, int(taking.pre_roll_ms / frame_ms)))
        self._speculated = False

    def hear(self, frame: bytes) -> int:
        speech = self._probability(frame) >= self._threshold
        if speech:
            self.speech_run_ms += self.frame_ms
            self.last_speech_at = now()
        else:
            self.speech_run_ms = 0.0
        if not self.speaking:
            self._preroll.append(frame)
            if speech and self.speech_run_ms >= max(self._taking.min_speech_ms, self.frame_ms):
                self._start()
                return STARTED | SPEECH
            return 0
        self.utterance += frame
        if speech:
            self.pause_ms = 0.0
            self._speculated = False
            self.utterance_speech_ms += self.frame_ms
            self._turn.on_speech()
            return FORWARD | SPEECH
        self.pause_ms += self.frame_ms
        if self._turn.on_pause(self.utterance, self.pause_ms, self.sample_rate):
            self.speaking = False
            self.speech_run_ms = 0.0
            return FORWARD | END_OF_TURN
        speculative_ms = self._taking.speculative_ms
        if speculative_ms and not self._speculated and self.pause_ms >= speculative_ms:
            self._speculated = True
            return FORWARD | SPECULATE
        return FORWARD

    def _start(self) -> None:
        self.speaking = True
        self.pause_ms = 0.0
        self._speculated = False
        self.utterance_speech_ms = self.speech_run_ms
        self.utterance = bytearray(b"".join(self._preroll))
        self._turn.on_speech()

    def end_utterance(self) -> None:
        """The turn ended by another signal (the STT's own endpointing)."""
        self.speaking = False
        self.speech_run_ms = 0.0

    def take_preroll(self) -> list[bytes]:
        """The audio from just before speech started, ending with the frame that started it."""
        frames = list(self._preroll)
        self._preroll.clear()
        return frames
