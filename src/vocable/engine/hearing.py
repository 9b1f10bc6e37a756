"""Hearing the user: a session's input side, from microphone bytes to the words of a finished turn.

Audio is resampled to the pipeline rate, cut into VAD frames and heard by the ``Listener`` (speech start with
pre-roll, pauses, the end-of-turn decision). Utterance frames stream to the STT (``Transcriber``, one task for
the session); the end of a turn sends it FLUSH, and its final transcript becomes the turn's words
(``UserWords``), which start a reply. A pause can start a speculative reply early, held until the turn
really ends. What the user's voice and words mean for the reply under way is the reply lifecycle's to
decide (``engine/lifecycle.py``): this module reports them and the session carries out the decisions.

Most frames need nothing awaited (silence, or speech inside an utterance that only goes to the STT): the
transport's hot path handles them without creating a coroutine (``feed``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from vocable.engine.audio import Framer, Resampler
from vocable.engine.events import ErrorEvent, Transcript
from vocable.engine.fallback import describe
from vocable.engine.listener import END_OF_TURN, FORWARD, SPECULATE, SPEECH, STARTED, Listener
from vocable.engine.metrics import TurnMetrics, now
from vocable.engine.transcriber import Transcriber
from vocable.engine.user_words import UserWords
from vocable.providers.base import FLUSH, Flush, TranscriptEvent
from vocable.providers.errors import ProviderError

if TYPE_CHECKING:
    from vocable.engine.session import Session

SUPPORTED_INPUT_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def check_rate(rate: int) -> int:
    if rate not in SUPPORTED_INPUT_RATES:
        raise ValueError(f"unsupported sample rate {rate}; supported: {', '.join(map(str, SUPPORTED_INPUT_RATES))}")
    return rate


class Hearing:
    def __init__(self, session: Session, input_sample_rate: int) -> None:
        self.session = session
        engine, pipeline = session.engine, session.engine.config.pipeline
        self.input_sample_rate = check_rate(input_sample_rate)
        self.sample_rate = pipeline.sample_rate
        self._odd = b""
        self._resampler = Resampler(input_sample_rate, self.sample_rate)
        vad = engine.runtime.vad[0].provider
        self.frame_ms = vad.capabilities.frame_samples * 1000.0 / vad.capabilities.sample_rate
        self._framer = Framer(vad.capabilities.frame_samples)
        self._turn_stream = engine.runtime.turn[0].provider.open()
        self.listener = Listener(vad.open(), self._turn_stream, pipeline.turn_taking, self.frame_ms, self.sample_rate)
        self._stt = Transcriber(
            engine.runtime.stt, sample_rate=self.sample_rate, frame_ms=self.frame_ms,
            queue_frames=pipeline.queue_frames, on_transcript=self._on_transcript, on_failure=self._stt_failed,
            log=session.log,
        )
        classifiers = engine.runtime.interruption
        self._classifier = classifiers[0].provider if classifiers else None  # else the word rule decides
        self.words = UserWords()  # the current turn's words, and those carried from a turn the user went on from
        self._utterance: TurnMetrics | None = None  # the metrics of the utterance being heard
        self._pending_finals: deque[TurnMetrics] = deque()  # turns waiting for their final transcript
        self._speculation: TurnMetrics | None = None  # a turn transcribed early, awaiting its end of turn
        self._releases: dict[str, asyncio.Event] = {}  # turn id -> opens when a speculative reply may be heard

    def start(self) -> None:
        self._stt.start(f"{self.session.id}-stt")

    async def aclose(self) -> None:
        await self._stt.aclose()
        await self._turn_stream.aclose()

    def set_rate(self, rate: int) -> None:
        if check_rate(rate) != self.input_sample_rate:
            self.input_sample_rate = rate
            self._odd = b""
            self._resampler = Resampler(rate, self.sample_rate)

    def _new_turn(self) -> TurnMetrics:
        return TurnMetrics(self.session.id, self.session.new_turn_id())

    # ---------------------------------------------------------------------------------------- audio

    def feed(self, pcm: bytes) -> Coroutine[Any, Any, None] | None:
        """Hear microphone audio; what is left to await, or None (most messages: one frame of silence)."""
        if self._odd or len(pcm) & 1:
            pcm = self._carry_odd_byte(pcm)
        resampler = self._resampler
        if not resampler.passthrough:
            pcm = resampler(pcm)
        if self._framer.aligned(pcm):  # one message, one frame: the common case
            heard = self.listener.hear(pcm)
            return self._on_heard(pcm, heard) if heard else None
        return self._hear_frames(pcm)

    async def _hear_frames(self, pcm: bytes) -> None:
        hear = self.listener.hear
        for frame in self._framer.push(pcm):
            if (heard := hear(frame)) and (rest := self._on_heard(frame, heard)) is not None:
                await rest

    def _carry_odd_byte(self, pcm: bytes) -> bytes:
        """Whole samples only: an odd trailing byte waits for the next message."""
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) & 1:
            self._odd = pcm[-1:]
            pcm = pcm[:-1]
        return pcm

    def _on_heard(self, frame: bytes, heard: int) -> Coroutine[Any, Any, None] | None:
        """Act on what the listener made of one frame (``heard``: its bit flags, never 0 here); what is left to await.

        Most of them (~45 a turn) are frames inside an utterance that only go to the STT: done here, with
        nothing to await, while the STT keeps up and neither speculation nor the reply lifecycle cares.
        """
        lifecycle = self.session.lifecycle
        if (not heard & ~(FORWARD | SPEECH)
                and (lifecycle.phase == "idle" or not lifecycle.needs(heard & SPEECH != 0,
                                                                      self.listener.utterance_speech_ms))
                and (not heard & SPEECH or self._speculation is None)
                and self._stt.push_nowait(frame)):
            return None
        return self._act_on_heard(frame, heard)

    async def _act_on_heard(self, frame: bytes, heard: int) -> None:
        session, lifecycle = self.session, self.session.lifecycle
        if heard & STARTED:
            self._utterance = self._new_turn()
            session.last_activity = time.monotonic()
            for earlier in self.listener.take_preroll():
                await self._stt.push(earlier)
        elif heard & FORWARD:
            await self._stt.push(frame)
        if heard & SPEECH:
            if self._speculation is not None and lifecycle.phase != "held":
                await self.abandon_speculation()  # still transcribing early: no reply to abandon yet
            await session.apply(lifecycle.voice(now(), self.listener.utterance_speech_ms))
        elif lifecycle.paused:
            await session.apply(lifecycle.quiet(now()))
        if heard & END_OF_TURN:
            await self._end_of_turn()
        elif heard & SPECULATE and self._speculation is None:
            await self._speculate()

    # ---------------------------------------------------------------------------------- end of turn

    async def _end_of_turn(self) -> None:
        speculation, self._speculation = self._speculation, None
        metrics = speculation or self._utterance or self._new_turn()
        metrics.speech_end = self.listener.last_speech_at
        metrics.stamp("end_of_turn")
        self._utterance = None
        if speculation is not None:  # the held reply may now be heard (its release opens even before it starts)
            self.release(metrics.turn_id)
            self.session.lifecycle.turn_ended(metrics.turn_id)
        else:
            self._pending_finals.append(metrics)
            await self._stt.push(FLUSH)
        await self.session.set_state("speaking" if self.session.replies.spoke else "thinking")

    async def _end_of_turn_by_stt(self, event: TranscriptEvent, provider: str) -> None:
        """The STT says the user finished (``speech_final``): its final is this turn's, no FLUSH needed."""
        self.listener.end_utterance()
        metrics = self._utterance or self._new_turn()
        self._utterance = None
        metrics.speech_end = self.listener.last_speech_at
        metrics.stamp("end_of_turn")
        metrics.stamp("final_transcript")
        metrics.stt_provider = provider
        text, continues = self.words.final(event.text)
        if not text:
            await self.session.set_state("listening")
            return
        await self.session.emit(Transcript(text, True, metrics.turn_id, continues))
        await self.session.replies.begin(text, metrics)

    async def _speculate(self) -> None:
        """The user paused: transcribe now and prepare the reply, held until the turn really ends.

        On a slow STT this saves the whole final decode; if the user goes on speaking the prepared reply
        is dropped unheard and their words so far join the rest of the turn.
        """
        metrics = self._utterance or self._new_turn()
        metrics.speech_end = self.listener.last_speech_at
        metrics.extra["speculative"] = True
        self._speculation = metrics
        self._releases[metrics.turn_id] = asyncio.Event()
        self._pending_finals.append(metrics)
        await self._stt.push(FLUSH)

    def release(self, turn_id: str) -> None:
        if (release := self._releases.pop(turn_id, None)) is not None:
            release.set()

    async def abandon_speculation(self) -> None:
        """The user went on: the reply prepared for the words so far is dropped unheard."""
        metrics, self._speculation = self._speculation, None
        replies = self.session.replies
        held = replies.current if replies.active else None
        if metrics is None:  # its turn had ended already; only the held reply is left
            if held is None:
                return
            metrics = held.metrics
        self._releases.pop(metrics.turn_id, None)
        metrics.extra["abandoned"] = True
        if held is not None and held.id == metrics.turn_id:
            await replies.drop(held)
            if held.user_text:
                self.words.carry(held.user_text, held.id)
        self._utterance = self._new_turn()

    # ------------------------------------------------------------------------------------------ STT

    async def _stt_failed(self, error: BaseException) -> None:
        """Every STT failed: say so; typed turns still work."""
        code = error.code if isinstance(error, ProviderError) else "stt_failed"
        await self.session.emit(ErrorEvent(code, f"speech recognition failed: {describe(error)}"))
        self._pending_finals.clear()
        await self.session.set_state("listening")

    def _interrupting_words(self, text: str) -> int:
        """How many of the user's words count toward committing a barge-in: all of them by the word rule; none
        when the classifier (``pipeline.interruption``) calls them a backchannel or is not sure yet."""
        count = len(text.split())
        if self._classifier is None or not count:
            return count
        return count if self._classifier.is_interruption(text) else 0

    async def _on_transcript(self, event: TranscriptEvent, provider: str) -> None:
        session, lifecycle, words = self.session, self.session.lifecycle, self.words
        metrics = self._pending_finals[0] if self._pending_finals else self._utterance
        turn_id = metrics.turn_id if metrics else session.new_turn_id()
        if not event.final:
            if lifecycle.paused:  # first: words that commit a barge-in may carry its turn's words over
                await session.apply(lifecycle.words(self._interrupting_words(event.text)))
            if (text := words.interim(event.text)) is not None:
                await session.emit(Transcript(text, False, turn_id, words.continues))
            return
        if (not self._pending_finals and event.speech_final and self.listener.speaking
                and getattr(self._turn_stream, "stt_endpointing", False)):
            await self._end_of_turn_by_stt(event, provider)
            return
        if not self._pending_finals:
            # a streaming STT finalised a segment before our end of turn: keep it for the final
            if event.text.strip():
                await session.emit(Transcript(words.segment(event.text), False, turn_id, words.continues))
            return
        metrics = self._pending_finals.popleft()
        self._stt.answered()
        metrics.stamp("final_transcript")
        metrics.stt_provider = provider
        await self._on_final(event.text, metrics)

    async def _on_final(self, said: str, metrics: TurnMetrics) -> None:
        session, lifecycle, words = self.session, self.session.lifecycle, self.words
        own = words.own(said)  # this utterance's words decide an interrupted reply, not carried ones
        if lifecycle.paused and self._interrupting_words(said) == 0 and own:
            own = 0  # a backchannel ("uh-huh") over the reply: it goes on, and the words start no turn
            words.drop_own()
        if metrics.extra.get("abandoned"):  # the user went on: these words open the rest of the turn
            if own and (lifecycle.paused or lifecycle.phase == "thinking"):  # they decide the reply first
                await session.apply(lifecycle.words(own) if lifecycle.paused else lifecycle.interrupt("new_turn"))
            shown = words.shown
            text, earlier = words.final(said)
            if text:
                words.carry(text, metrics.turn_id)
                await session.emit(Transcript(text, False, metrics.turn_id, earlier))
            elif shown:  # its interims showed words that came to nothing: an empty final drops them
                await session.emit(Transcript("", True, metrics.turn_id))
            return
        release = self._releases.get(metrics.turn_id)
        held = release is not None and not release.is_set()
        if lifecycle.paused:  # the user's words (or their absence) decide an interrupted reply
            await session.apply(lifecycle.words(own) if held else lifecycle.user_turn_ended(own))
        if not own:
            if not words.carried and words.retract():  # interims showed words that came to nothing
                await session.emit(Transcript("", True, metrics.turn_id))
            if release is not None:  # nothing was said after all: the turn it would end is not a turn
                self._speculation = None
                self._releases.pop(metrics.turn_id, None)
                self._utterance = self._new_turn()
                return
            if not words.carried:
                await session.set_state("speaking" if session.replies.active else "listening")
                return
        if lifecycle.phase == "thinking":  # a reply that never spoke: its turn's words come before these
            await session.apply(lifecycle.interrupt("new_turn"))
        text, continues = words.final(said)  # carried words too: the person is waiting for an answer
        final = Transcript(text, True, metrics.turn_id, continues)
        if held:  # not final until the turn really ends
            self._turn_stream.on_words(text)  # the end-of-turn detector may weigh them ("a table for...")
            await session.emit(Transcript(text, False, metrics.turn_id, continues))
            await session.replies.begin(text, metrics, release=release, prelude=(final,))
            return
        await session.emit(final)
        await session.replies.begin(text, metrics)
