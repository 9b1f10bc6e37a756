"""``dynamic`` end of turn, the offline default: a short silence, then the Smart Turn model and the words decide.

A fixed silence hangover is a trade-off with no good setting: 500 ms is slow for "What time is it?" and
still cuts off "I'd like to book a table for... four people". Here the silence only has to reach
``min_silence_ms`` (200) before the Smart Turn v3 model (``smart-turn``) scores the utterance's sound
(intonation, not words). Meanwhile the engine reports the words of the pause (the speculative final
transcript that ``turn_taking.speculative_ms`` starts at the first pause) through ``on_words``. Then:

- the words stop on a word that cannot end a sentence ("for", "the", "and", "my", "um"...) or trail off
  ("...", a comma): incomplete, whatever the model said;
- the words look finished: complete, unless the model is sure it is not (probability under ``veto_below``);
- no words yet: wait for them (they come with the speculative final, a Whisper decode after the pause
  began); when the engine reports no words (``speculative_ms: 0``) the model decides alone (probability over
  ``threshold``);
- incomplete: the turn waits for more speech, and ends after ``max_silence_ms`` (1200) of silence.

Smart Turn alone misjudges synthetic and flat voices both ways (it calls "a table for" complete in Piper's
voice, "What is two plus two?" incomplete), which the words correct; the words alone cannot hear "I'd like a
large pizza..." go on, which the model can. The reply prepared from the first pause is released the moment
the turn ends, and dropped unheard if the user goes on.

The model's weights ship inside ``pipecat-ai`` (``pip install 'vocable[local,smart-turn]'``). Without it,
``dynamic`` is not an error: it logs a warning with the install hint once at start-up and ends turns after a
fixed ``fallback_ms`` of silence (the ``silence`` detector); ``mode`` says which one runs.
"""

from __future__ import annotations

import re
from concurrent.futures import Future
from typing import Literal

import structlog
from pydantic import Field, model_validator

from vocable.providers.base import ProviderSettings, TurnDetector, TurnStream
from vocable.providers.errors import CapacityExceeded, ProviderUnavailable
from vocable.providers.local.smart_turn import INSTALL, SmartTurn, SmartTurnSettings
from vocable.providers.silence_turn import SilenceSettings, SilenceTurnDetector

log = structlog.get_logger("vocable.local")

# Words after which an English sentence goes on: articles, prepositions, conjunctions, possessives, fillers.
# Prepositions can end a question ("What is Tokyo in?"); such a question waits for max_silence_ms.
TRAILING_WORDS = frozenset("""
    a an the to for of in on at by with from into onto about than and or but nor because if unless whether
    my your our their its um uh uhm er erm hmm
""".split())
_NOT_LETTERS = re.compile(r"[^a-z']")


def sounds_unfinished(text: str) -> bool:
    """True when a transcript stops where a sentence cannot end, or trails off."""
    core = text.strip().rstrip("?!")
    if not core:
        return False
    if core.endswith(("...", "\u2026", ",", "-", "\u2014")):
        return True
    return _NOT_LETTERS.sub("", core.split()[-1].lower()) in TRAILING_WORDS


class DynamicTurnSettings(ProviderSettings):
    min_silence_ms: int = Field(
        200, ge=0, le=5000, description="Silence before the end-of-turn model is asked (once per pause)."
    )
    max_silence_ms: int = Field(
        1200, ge=20, le=20000, description="Silence that ends the turn whatever the model and the words say."
    )
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="With no words yet: the model's probability above "
                             "which the turn is complete.")
    veto_below: float = Field(0.1, ge=0.0, lt=1.0, description="With words that look finished: a probability under "
                              "this still keeps the turn open (the model is sure the speaker goes on).")
    fallback_ms: int = Field(
        500, ge=20, le=10000, description="The fixed silence that ends a turn when Smart Turn is not installed."
    )
    model: bool = Field(True, description="Ask Smart Turn; false: the words of the pause decide alone (no pipecat-ai "
                        "needed, no inference per pause, a pause whose words look finished always ends the turn).")
    model_path: str | None = Field(None, description="A Smart Turn v3 ONNX file; default: the newest inside pipecat-ai.")
    threads: int = Field(1, ge=1, le=8, description="onnxruntime threads per inference.")
    max_queue: int = Field(8, ge=1, description="Inferences running or queued; beyond it the words decide alone.")

    @model_validator(mode="after")
    def _ordered(self) -> DynamicTurnSettings:
        if self.max_silence_ms <= self.min_silence_ms:
            raise ValueError("max_silence_ms must be longer than min_silence_ms")
        return self


class DynamicTurnStream(TurnStream):
    """One session's pause: the model's verdict, and the words of the pause when the engine reports them."""

    __slots__ = ("_detector", "_settings", "_pending", "_asked", "_failed", "_last_pause_ms", "_in_pause",
                 "words", "probability", "words_expected")

    def __init__(self, detector: DynamicTurn) -> None:
        self._detector = detector
        self._settings = detector.settings
        self._pending: Future[float] | None = None
        self._asked = False
        self._failed = False  # no verdict will come for this pause (queue full, inference error)
        self._last_pause_ms = 0.0
        self._in_pause = False
        self.words: str | None = None  # the transcript of the utterance up to this pause
        self.probability: float | None = None  # the model's verdict for this pause
        self.words_expected = True  # the engine reports the words of each pause (speculative replies on)

    def expect_words(self, expected: bool) -> None:
        self.words_expected = expected

    def on_words(self, text: str) -> None:
        if self._in_pause:
            self.words = text

    def on_pause(self, utterance: bytes | bytearray, pause_ms: float, sample_rate: int) -> bool:
        settings = self._settings
        if pause_ms < self._last_pause_ms:  # a new pause began without on_speech: start over
            self.on_speech()
        self._last_pause_ms = pause_ms
        self._in_pause = True
        if pause_ms >= settings.max_silence_ms:
            return True
        if pause_ms < settings.min_silence_ms:
            return False
        if not self._asked:
            self._asked = True
            if self._detector.mode != "smart-turn":
                self._failed = True  # no model: the words decide
            else:
                try:
                    self._pending = self._detector.model.submit(utterance, sample_rate)
                except CapacityExceeded as exc:
                    self._failed = True
                    log.warning("smart-turn queue full; the words decide this pause", error=str(exc))
        pending = self._pending
        if pending is not None and pending.done():
            self._pending = None
            error = None if pending.cancelled() else pending.exception()
            if pending.cancelled() or error is not None:
                self._failed = True
                if error is not None:
                    log.warning("smart-turn inference failed; the words decide this pause", error=repr(error))
            else:
                self.probability = pending.result()
        words = self.words
        if words is not None:
            if sounds_unfinished(words):
                return False
            if self.probability is not None:
                return self.probability >= settings.veto_below
            return self._failed
        if self.words_expected or self.probability is None:
            return False  # the words are on their way (or nothing is): max_silence_ms bounds the wait
        return self.probability > settings.threshold

    def on_speech(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pending = None
        self._asked = self._failed = self._in_pause = False
        self._last_pause_ms = 0.0
        self.words = self.probability = None

    async def aclose(self) -> None:
        self.on_speech()


class DynamicTurn(TurnDetector):
    """Smart Turn and the words after ``min_silence_ms``, at most ``max_silence_ms``; a fixed hangover without
    the model."""

    name = "dynamic"
    Settings = DynamicTurnSettings

    settings: DynamicTurnSettings

    def __init__(self, settings: DynamicTurnSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        self.model = SmartTurn(SmartTurnSettings(
            model_path=s.model_path, threshold=s.threshold, min_pause_ms=s.min_silence_ms,
            max_pause_ms=s.max_silence_ms, threads=s.threads, max_queue=s.max_queue,
        ))
        self._fallback = SilenceTurnDetector(SilenceSettings(hangover_ms=s.fallback_ms))
        self.mode: Literal["smart-turn", "words", "silence"] | None = None  # set by start()
        self.fallback_reason: str | None = None

    async def start(self) -> None:
        if self.mode is not None:
            return
        if not self.settings.model:
            self.mode = "words"
            return
        try:
            if not self.settings.model_path:
                SmartTurn.check_installed()  # an explicit model_path that is wrong stays an error
            await self.model.start()
        except ProviderUnavailable as exc:
            self.mode, self.fallback_reason = "silence", str(exc)
            log.warning(
                "dynamic end of turn needs Smart Turn; ending turns after a fixed silence instead",
                provider=self.name, fallback_ms=self.settings.fallback_ms, reason=str(exc), install=INSTALL,
            )
            return
        self.mode = "smart-turn"

    async def aclose(self) -> None:
        await self.model.aclose()
        self.mode = None

    def open(self) -> TurnStream:
        if self.mode is None:
            raise RuntimeError("DynamicTurn.start() was not awaited")
        return self._fallback.open() if self.mode == "silence" else DynamicTurnStream(self)
