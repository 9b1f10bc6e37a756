"""A session: one conversation, whatever carries it (WebSocket, WebRTC, or Python via ``conversation()``).

Input side (called by the transport): audio is resampled to the pipeline rate, framed for the VAD, and run
through a small state machine: speech starts after ``min_speech_ms`` (with pre-roll), pauses are offered to
the end-of-turn detector, and the end of a turn sends FLUSH to the STT. The STT runs in one task for the
whole session; its final transcript starts a reply (``vocable.engine.turn``). User speech during a reply
interrupts it (barge-in) on the very frame that crosses ``barge_in_min_ms``.

Output side: events leave through the session's ``Outbox`` (``vocable.engine.outbox``): one bounded channel
that the transport drains, or a sink that takes them at once while nothing is queued.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from vocable.engine.audio import Framer, Resampler
from vocable.engine.events import (
    AudioOut,
    Closed,
    ErrorEvent,
    Event,
    Interrupted,
    MetricsEvent,
    Paused,
    Ready,
    Resumed,
    State,
    StateChanged,
    Transcript,
)
from vocable.engine.fallback import describe
from vocable.engine.lifecycle import Decision, ReplyLifecycle, TurnTakingRules
from vocable.engine.listener import END_OF_TURN, FORWARD, SPECULATE, SPEECH, STARTED, Listener
from vocable.engine.memory import Memory
from vocable.engine.metrics import TurnMetrics, now
from vocable.engine.outbox import EventSink, Outbox, PlayoutSource
from vocable.engine.rate import SlidingWindow
from vocable.engine.tools import Fillers, ToolCalls, ToolSpec
from vocable.engine.transcriber import Transcriber
from vocable.engine.user_words import UserWords
from vocable.engine.turn import ReplyRunner, Segment, Turn
from vocable.providers.base import FLUSH, Flush, TranscriptEvent
from vocable.providers.errors import ProviderError

if TYPE_CHECKING:
    from vocable.engine.engine import Engine

log = structlog.get_logger("vocable.session")

SUPPORTED_INPUT_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


class SessionClosed(Exception):
    """Input sent to a session that has ended."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass(slots=True)
class TurnRecord:
    """A finished turn as observers and persistence see it."""

    session_id: str
    turn_id: str
    user_text: str | None
    reply_text: str  # as spoken: cut at the barge-in point when interrupted
    full_reply_text: str
    interrupted: bool
    error: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0


class Session:
    def __init__(
        self,
        engine: Engine,
        *,
        transport: str,
        input_sample_rate: int | None = None,
        pace: bool = True,
        session_id: str | None = None,
    ) -> None:
        config = engine.config
        pipeline = config.pipeline
        rate = input_sample_rate or pipeline.input_sample_rate
        if rate not in SUPPORTED_INPUT_RATES:
            raise ValueError(f"unsupported sample rate {rate}; supported: {', '.join(map(str, SUPPORTED_INPUT_RATES))}")
        self.engine = engine
        self.id = session_id or new_id("ses")
        self.transport = transport
        self.started_at = time.time()
        self.state: State = "listening"
        self.turns = 0
        self.resumed = False
        per_minute = engine.config.server.max_turns_per_minute  # a client's flood of typed turns, not the app's own
        self._typed_turns = SlidingWindow(per_minute) if per_minute and transport != "python" else None
        self.input_sample_rate = rate
        self.sample_rate = pipeline.sample_rate
        self.output_sample_rate = pipeline.output.sample_rate or engine.runtime.output_sample_rate
        self._outbox = Outbox(pipeline.queue_frames)
        self.events = self._outbox.events  # what the transport drains
        self._emit = self._outbox.emit
        self.memory = Memory(
            config.agent.system_prompt,
            max_turns=config.agent.memory.max_turns,
            max_chars=config.agent.memory.max_chars,
        )
        self.log = log.bind(session_id=self.id, transport=transport)
        self._taking = pipeline.turn_taking
        self._closed = False
        self._close_reason: str | None = None
        # input
        self._odd = b""
        self._resampler = Resampler(rate, self.sample_rate)
        vad = engine.runtime.vad[0].provider
        self._frame_ms = vad.capabilities.frame_samples * 1000.0 / vad.capabilities.sample_rate
        self._framer = Framer(vad.capabilities.frame_samples)
        self._turn_stream = engine.runtime.turn[0].provider.open()
        self._listener = Listener(vad.open(), self._turn_stream, self._taking, self._frame_ms, self.sample_rate)
        self._utterance_turn: TurnMetrics | None = None
        # STT
        self._stt = Transcriber(
            engine.runtime.stt, sample_rate=self.sample_rate, frame_ms=self._frame_ms,
            queue_frames=pipeline.queue_frames, on_transcript=self._on_transcript, on_failure=self._stt_failed,
            log=self.log,
        )
        classifiers = engine.runtime.interruption
        self._classifier = classifiers[0].provider if classifiers else None  # else the word rule decides
        self._lifecycle = ReplyLifecycle(TurnTakingRules(
            self._taking.barge_in, self._taking.barge_in_min_ms, self._taking.false_interruption_timeout_s,
            self._taking.min_words))
        self._timer: asyncio.TimerHandle | None = None
        self._ticking: asyncio.Task[None] | None = None
        self._playout: PlayoutSource | None = None
        self.details: dict[str, Any] = {}  # a transport's facts for ``/sessions`` (a phone call's masked number)
        self._watchdog: asyncio.Task[None] | None = None
        self.last_activity = time.monotonic()
        self._pending_finals: deque[TurnMetrics] = deque()
        self._words = UserWords()  # the current turn's words, and those carried from a turn the user went on from
        self._speculation: TurnMetrics | None = None  # a turn transcribed early, awaiting its end of turn
        self._gates: dict[str, asyncio.Event] = {}  # turn id -> opens when a speculative reply may be heard
        # reply
        self._tools = ToolCalls(engine.tools, self._emit, self.memory.resolve, {"session_id": self.id})
        self._reply_task: asyncio.Task[None] | None = None
        self._turn: Turn | None = None
        self._replies = ReplyRunner(
            runtime=engine.runtime,
            output=pipeline.output,
            output_sample_rate=self.output_sample_rate,
            emit=self._emit,
            on_speaking=self._on_speaking,
            tools=self._tools,
            fillers=Fillers(config.agent.filler_after_ms, config.agent.fillers),
            pace=pace,
            queue_chunks=max(8, pipeline.queue_frames // 4),
            log_context={"session_id": self.id},
        )

    # ------------------------------------------------------------------------------------ life cycle

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str | None:
        """Why the session ended (e.g. ``server_shutdown``), so a transport can pick a close code."""
        return self._close_reason

    async def start(self) -> None:
        self._stt.start(f"{self.id}-stt")
        self._watchdog = asyncio.create_task(self._watch_limits(), name=f"{self.id}-limits")
        await self._emit(self.ready_event())
        await self._emit(StateChanged("listening"))
        self.log.info("session_started")
        await self.engine.host.notify("session_started", session=self)
        greeting = self.engine.config.agent.greeting
        if greeting:
            await self.say(greeting)

    async def close(self, reason: str = "closed") -> None:
        """End the session: cancel every task, close every provider stream, then emit ``closed``."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        self._disarm()
        if self._ticking is not None and self._ticking is not asyncio.current_task():
            self._ticking.cancel()
            await asyncio.gather(self._ticking, return_exceptions=True)
        await self._cancel_reply()
        await self._tools.aclose()
        await self._stt.aclose()
        await self._turn_stream.aclose()
        self.events.purge(lambda e: isinstance(e, AudioOut))
        self._outbox.release_reply()
        if not self.events.put_nowait(Closed(reason)):
            self.events.purge(lambda e: True)
            self.events.put_nowait(Closed(reason))
        self.events.close()
        self.engine.sessions.pop(self.id, None)
        self.log.info("session_ended", reason=reason, turns=self.turns)
        await self.engine.host.notify("session_ended", session=self, reason=reason)

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close("closed" if exc[0] is None else "error")

    async def iter_events(self) -> AsyncIterator[Event]:
        while (event := await self.events.get()) is not None:
            yield event

    # ----------------------------------------------------------------------------------------- input

    async def send_audio(self, pcm: bytes) -> None:
        """Microphone audio at ``input_sample_rate`` (PCM16 mono); any length, an odd byte is carried over."""
        if (rest := self.feed_audio(pcm)) is not None:
            await rest

    def feed_audio(self, pcm: bytes) -> Coroutine[Any, Any, None] | None:
        """``send_audio`` for a transport's hot path: returns what is left to await, or None.

        Most messages are one frame of silence, which the listener handles without awaiting anything;
        making the transport's reader create and run a coroutine for each of them (50 a second for every
        session) would cost more than hearing the frame. Await what this returns before feeding more.
        """
        if self._closed:
            raise SessionClosed(self.id)
        if self._odd or len(pcm) & 1:
            pcm = self._carry_odd_byte(pcm)
        resampler = self._resampler
        if not resampler.passthrough:
            pcm = resampler(pcm)
        if self._framer.aligned(pcm):  # one message, one frame: the common case
            heard = self._listener.hear(pcm)
            return self._on_heard(pcm, heard) if heard else None
        return self._hear_frames(pcm)

    async def _hear_frames(self, pcm: bytes) -> None:
        hear = self._listener.hear
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

    def set_input_sample_rate(self, rate: int) -> None:
        """Change the client's audio rate (the WebSocket ``start`` message); ValueError if unsupported."""
        if rate not in SUPPORTED_INPUT_RATES:
            raise ValueError(f"unsupported sample rate {rate}; supported: {', '.join(map(str, SUPPORTED_INPUT_RATES))}")
        if rate != self.input_sample_rate:
            self.input_sample_rate = rate
            self._odd = b""
            self._resampler = Resampler(rate, self.sample_rate)

    async def report_error(self, code: str, message: str, *, fatal: bool = False) -> None:
        """Tell the client about a problem with its input (transports call this for bad messages)."""
        self.log.info("client_error", code=code, fatal=fatal)
        await self._emit(ErrorEvent(code, message, fatal))

    def ready_event(self) -> Ready:
        return Ready(self.id, self.input_sample_rate, self.output_sample_rate, self.resumed)

    async def send_text(self, text: str) -> None:
        """A typed user turn: skips VAD and STT."""
        if self._closed:
            raise SessionClosed(self.id)
        text = text.strip()
        if not text:
            return
        if self._typed_turns is not None and not self._typed_turns.allow():
            limit = self._typed_turns.limit
            await self.report_error("rate_limited", f"at most {limit} typed turns a minute; this one was dropped")
            return
        self.last_activity = time.monotonic()
        await self.interrupt("new_turn")
        metrics = TurnMetrics(self.id, new_id("turn"))
        metrics.stamp("final_transcript")
        await self._emit(Transcript(text, True, metrics.turn_id))
        await self._begin_reply(text, metrics)

    async def say(self, text: str) -> None:
        """Speak ``text`` as the agent (a greeting, an announcement), without asking the LLM."""
        await self.interrupt("new_turn")
        metrics = TurnMetrics(self.id, new_id("turn"))
        metrics.stamp("final_transcript")
        await self._begin_reply(None, metrics, fixed_text=text)

    async def interrupt(self, reason: str = "client") -> bool:
        """Stop the current reply now: cancel LLM and TTS, drop queued audio, tell the client."""
        decisions = self._lifecycle.interrupt("client" if reason == "client" else "new_turn")
        if not decisions and self._reply_active():  # only its audible tail was left
            decisions = [Decision("cancel", self._turn.id if self._turn else "", "client")]
        await self._apply(decisions)
        return bool(decisions)

    # ------------------------------------------------------------------------ the reply lifecycle

    async def _apply(self, decisions: list[Decision]) -> None:
        """Carry out what the reply lifecycle (``engine/lifecycle.py``) decided."""
        for decision in decisions:
            action = decision.action
            if action == "pause":
                await self._pause_output(decision.turn_id)
            elif action == "resume":
                await self._resume_output(decision.turn_id)
            elif action == "cancel":
                await self._cancel_turn(decision.reason)
            elif action == "abandon":
                await self._abandon_speculation()
            elif action == "release":
                if (gate := self._gates.pop(decision.turn_id, None)) is not None:
                    gate.set()
            elif action == "arm":
                self._arm(decision.at)

    def _interrupting_words(self, text: str) -> int:
        """How many of the user's words count toward committing a barge-in: all of them by the word rule; none
        when the classifier (``pipeline.interruption``) calls them a backchannel or is not sure yet."""
        count = len(text.split())
        if self._classifier is None or not count:
            return count
        return count if self._classifier.is_interruption(text) else 0

    def _unplayed_bytes(self) -> int:
        """Reply audio sent out but not yet heard: the transport's own report where it has one (WebRTC's
        track buffer), else what the paced send clock says is still ahead of real time."""
        if self._playout is not None:
            return self._playout.unplayed_bytes()
        return 0

    async def _pause_output(self, turn_id: str) -> None:
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return
        turn.heard_bytes = max(0, turn.emitted_bytes - self._unplayed_bytes())
        turn.pause()
        self.log.info("paused", turn_id=turn_id, heard_bytes=turn.heard_bytes)
        await self._emit(Paused(turn_id))
        await self._set_state("listening")

    async def _resume_output(self, turn_id: str) -> None:
        self._disarm()
        turn = self._turn
        if turn is None or turn.id != turn_id:
            return
        turn.heard_bytes = None
        turn.resume()
        self.log.info("resumed", turn_id=turn_id)
        await self._emit(Resumed(turn_id))
        await self._set_state("speaking" if turn.metrics.first_audio_out is not None else "thinking")

    async def _cancel_turn(self, reason: str) -> None:
        """The current reply stops for good; memory keeps what the listener heard of it."""
        self._disarm()
        task, turn = self._reply_task, self._turn
        if task is None or turn is None or task.done():
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if turn.finished:  # only the audible tail was left: the client must still drop it
            self.events.purge(lambda e: isinstance(e, AudioOut) and e.turn_id == turn.id)
            await self._emit(Interrupted(turn.id, reason))
            self._turn = None
            await self._set_state("listening")
            return
        purged = self.events.purge(lambda e: isinstance(e, AudioOut) and e.turn_id == turn.id)
        turn.interrupted = True
        turn.metrics.interrupted = True
        self.log.info("interrupted", turn_id=turn.id, reason=reason, dropped_frames=purged)
        self._tools.interrupted(turn.id)  # its calls run on, but those that ask to be cancelled
        if turn.metrics.first_audio_out is None and turn.user_text and not turn.tool_calls:
            self._words.carry(turn.user_text, turn.id)  # nothing was said: the user's words join the next turn
        await self._emit(Interrupted(turn.id, reason))
        if turn.heard_bytes is not None:  # paused first: the listener heard what had played by then
            played = turn.heard_bytes
        else:
            played = turn.emitted_bytes - purged * self._frame_bytes_out() - (
                self._unplayed_bytes() if self._playout is not None else self._lead_bytes())
        await self._finish_turn(turn, played_bytes=max(0, played))
        if not self._closed:
            await self._set_state("listening")

    def _arm(self, at: float) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, at - now()), self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            self._ticking = asyncio.create_task(self._apply(self._lifecycle.tick(now())), name=f"{self.id}-tick")

    async def _watch_limits(self) -> None:
        """End the session when it has been idle (no user speech or text) or open for too long."""
        server = self.engine.config.server
        opened = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, server.idle_timeout_s or 1.0))
            clock = time.monotonic()
            reason = None
            if server.max_session_s is not None and clock - opened >= server.max_session_s:
                reason = ("max_session_length", f"sessions last at most {server.max_session_s:g} s")
            elif (server.idle_timeout_s is not None and clock - self.last_activity >= server.idle_timeout_s
                  and self.state == "listening" and not self._listener.speaking):
                reason = ("idle_timeout", f"no speech or text for {server.idle_timeout_s:g} s")
            if reason is not None:
                await self.report_error(reason[0], reason[1], fatal=True)
                await self.close(reason[0])
                return

    # ----------------------------------------------------------------------------- speech detection

    def _on_heard(self, frame: bytes, heard: int) -> Coroutine[Any, Any, None] | None:
        """Act on what the listener made of one frame (``heard``: its bit flags, never 0 here); what is left to await.

        Most of them (~45 a turn) are frames inside an utterance that only go to the STT: done here, with
        nothing to await, while the STT keeps up and no speculation or barge-in is due.
        """
        if (not heard & ~(FORWARD | SPEECH)
                and (self._lifecycle.phase == "idle" or not self._lifecycle.needs(
                    heard & SPEECH != 0, self._listener.utterance_speech_ms))
                and (not heard & SPEECH or self._speculation is None)
                and self._stt.push_nowait(frame)):
            return None
        return self._act_on_heard(frame, heard)

    async def _act_on_heard(self, frame: bytes, heard: int) -> None:
        if heard & STARTED:
            self._utterance_turn = TurnMetrics(self.id, new_id("turn"))
            self.last_activity = time.monotonic()
            for earlier in self._listener.take_preroll():
                await self._push_stt(earlier)
        elif heard & FORWARD:
            await self._push_stt(frame)
        if heard & SPEECH:
            if self._speculation is not None and self._lifecycle.phase != "held":
                await self._abandon_speculation()  # still transcribing early: no reply to abandon yet
            await self._apply(self._lifecycle.voice(now(), self._listener.utterance_speech_ms))
        elif self._lifecycle.paused:
            await self._apply(self._lifecycle.quiet(now()))
        if heard & END_OF_TURN:
            await self._end_of_turn()
        elif heard & SPECULATE and self._speculation is None:
            await self._speculate()

    async def _end_of_turn(self) -> None:
        speculation, self._speculation = self._speculation, None
        metrics = speculation or self._utterance_turn or TurnMetrics(self.id, new_id("turn"))
        metrics.speech_end = self._listener.last_speech_at
        metrics.stamp("end_of_turn")
        self._utterance_turn = None
        if speculation is not None:  # the held reply may now be heard (its gate opens even before it starts)
            await self._apply(self._lifecycle.turn_ended(metrics.turn_id)
                              or [Decision("release", metrics.turn_id)])
        else:
            self._pending_finals.append(metrics)
            await self._push_stt(FLUSH)
        await self._set_state("speaking" if self._turn is not None and self._turn.metrics.first_audio_out else "thinking")

    async def _end_of_turn_by_stt(self, event: TranscriptEvent, provider: str) -> None:
        """The STT says the user finished (``speech_final``): its final is this turn's, no FLUSH needed."""
        self._listener.end_utterance()
        metrics = self._utterance_turn or TurnMetrics(self.id, new_id("turn"))
        self._utterance_turn = None
        metrics.speech_end = self._listener.last_speech_at
        metrics.stamp("end_of_turn")
        metrics.stamp("final_transcript")
        metrics.stt_provider = provider
        text, continues = self._words.final(event.text)
        if not text:
            await self._set_state("listening")
            return
        await self._emit(Transcript(text, True, metrics.turn_id, continues))
        await self._begin_reply(text, metrics)

    async def _speculate(self) -> None:
        """The user paused: transcribe now and prepare the reply, held until the turn really ends.

        On a slow STT this saves the whole final decode; if the user goes on speaking the prepared reply
        is dropped unheard and their words so far join the rest of the turn.
        """
        metrics = self._utterance_turn or TurnMetrics(self.id, new_id("turn"))
        metrics.speech_end = self._listener.last_speech_at
        metrics.extra["speculative"] = True
        self._speculation = metrics
        self._gates[metrics.turn_id] = asyncio.Event()
        self._pending_finals.append(metrics)
        await self._push_stt(FLUSH)

    async def _abandon_speculation(self) -> None:
        """The user went on: the reply prepared for the words so far is dropped unheard."""
        metrics, self._speculation = self._speculation, None
        turn, task = self._turn, self._reply_task
        if metrics is None:  # its turn had ended already; only the held reply is left
            if turn is None or task is None or task.done():
                return
            metrics = turn.metrics
        self._gates.pop(metrics.turn_id, None)
        metrics.extra["abandoned"] = True
        if turn is not None and turn.id == metrics.turn_id and task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._turn = self._reply_task = None
            if turn.user_text:
                self._words.carry(turn.user_text, turn.id)
        self._utterance_turn = TurnMetrics(self.id, new_id("turn"))

    # ------------------------------------------------------------------------------------------ STT

    async def _push_stt(self, item: bytes | Flush) -> None:
        await self._stt.push(item)

    async def _stt_failed(self, error: BaseException) -> None:
        """Every STT failed: say so; typed turns still work."""
        code = error.code if isinstance(error, ProviderError) else "stt_failed"
        await self._emit(ErrorEvent(code, f"speech recognition failed: {describe(error)}"))
        self._pending_finals.clear()
        await self._set_state("listening")

    async def _on_transcript(self, event: TranscriptEvent, provider: str) -> None:
        metrics = self._pending_finals[0] if self._pending_finals else self._utterance_turn
        turn_id = metrics.turn_id if metrics else new_id("turn")
        words = self._words
        if not event.final:
            if self._lifecycle.paused:  # first: words that commit a barge-in may carry its turn's words over
                await self._apply(self._lifecycle.words(self._interrupting_words(event.text)))
            if (text := words.interim(event.text)) is not None:
                await self._emit(Transcript(text, False, turn_id, words.continues))
            return
        if (not self._pending_finals and event.speech_final and self._listener.speaking
                and getattr(self._turn_stream, "stt_endpointing", False)):
            await self._end_of_turn_by_stt(event, provider)
            return
        if not self._pending_finals:
            # a streaming STT finalised a segment before our end of turn: keep it for the final
            if event.text.strip():
                await self._emit(Transcript(words.segment(event.text), False, turn_id, words.continues))
            return
        metrics = self._pending_finals.popleft()
        self._stt.answered()
        metrics.stamp("final_transcript")
        metrics.stt_provider = provider
        own = words.own(event.text)  # this utterance's words decide an interrupted reply, not carried ones
        if self._lifecycle.paused and self._interrupting_words(event.text) == 0 and own:
            own = 0  # a backchannel ("uh-huh") over the reply: it goes on, and the words start no turn
            words.drop_own()
        if metrics.extra.get("abandoned"):  # the user went on: these words open the rest of the turn
            text, _ = words.final(event.text)
            if text:
                words.carry(text, metrics.turn_id)
                await self._emit(Transcript(text, False, metrics.turn_id, words.continues))
            return
        gate = self._gates.get(metrics.turn_id)
        held = gate is not None and not gate.is_set()
        if self._lifecycle.paused:  # the user's words (or their absence) decide an interrupted reply
            await self._apply(self._lifecycle.words(own) if held else self._lifecycle.user_turn_ended(own))
        if not own:
            if gate is not None:  # nothing was said after all: the turn it would end is not a turn
                self._speculation = None
                self._gates.pop(metrics.turn_id, None)
                self._utterance_turn = TurnMetrics(self.id, new_id("turn"))
                return
            if not words.carried:
                await self._set_state("speaking" if self._reply_active() else "listening")
                return
        text, continues = words.final(event.text)  # carried words too: the person is waiting for an answer
        final = Transcript(text, True, metrics.turn_id, continues)
        if held:  # not final until the turn really ends
            await self._emit(Transcript(text, False, metrics.turn_id, continues))
            await self._begin_reply(text, metrics, gate=gate, prelude=(final,))
            return
        await self._emit(final)
        await self._begin_reply(text, metrics)

    # ---------------------------------------------------------------------------------------- reply

    def _reply_active(self) -> bool:
        return self._reply_task is not None and not self._reply_task.done()

    async def _begin_reply(
        self, user_text: str | None, metrics: TurnMetrics, *, fixed_text: str | None = None,
        gate: asyncio.Event | None = None, prelude: tuple[Event, ...] = (),
    ) -> None:
        await self._apply(self._lifecycle.started(metrics.turn_id, held=gate is not None and not gate.is_set()))
        await self._cancel_reply()
        turn = Turn(metrics.turn_id, user_text, metrics, started_at=time.time())
        self._turn = turn
        if gate is None or gate.is_set():
            await self._set_state("thinking")
        self._reply_task = asyncio.create_task(
            self._run_reply(turn, fixed_text, gate, prelude), name=f"{turn.id}-reply")

    async def _run_reply(
        self, turn: Turn, fixed_text: str | None, gate: asyncio.Event | None, prelude: tuple[Event, ...],
    ) -> None:
        remaining = 0.0
        try:
            messages = None
            if fixed_text is None:
                if self.memory.pending:  # a call from an earlier reply is still running: its result comes first
                    await self._tools.settle()
                messages = self.memory.context(turn.user_text)
            remaining = await self._replies.run(turn, messages, fixed_text, gate, prelude)
        except asyncio.CancelledError:
            raise
        except BaseException as group:
            errors = group.exceptions if isinstance(group, BaseExceptionGroup) else (group,)
            first = errors[0]
            if isinstance(first, (KeyboardInterrupt, SystemExit)):
                raise
            code = first.code if isinstance(first, ProviderError) else "turn_failed"
            turn.error = code
            self.log.warning("turn_failed", turn_id=turn.id, error=describe(first))
            await self._emit(ErrorEvent(code, describe(first)))
        await self._finish_turn(turn, played_bytes=turn.emitted_bytes)
        if remaining > 0:
            await asyncio.sleep(remaining)  # the listener is still hearing the tail: keep 'speaking'
        self._lifecycle.finished(turn.id)
        if self._turn is turn:
            self._turn = None
            await self._set_state("listening")

    async def _cancel_reply(self) -> None:
        if self._reply_active():
            await self._cancel_turn("new_turn")
        self._reply_task = None

    async def _finish_turn(self, turn: Turn, *, played_bytes: int) -> None:
        turn.finished = True
        spoken = turn.spoken_text(played_bytes) if turn.interrupted else turn.reply_text
        unheard = turn.interrupted and turn.metrics.first_audio_out is None
        if turn.user_text is not None and (not unheard or turn.tool_calls):
            self.memory.add_user(turn.user_text)
            if turn.tool_calls:  # every call and its result, heard or not: the model must know what it did
                self.memory.add_tool_calls(tuple(turn.tool_calls), self._tools.take(turn.tool_calls))
            self.memory.add_assistant(spoken)
        elif turn.user_text is None and spoken:
            self.memory.add_assistant(spoken)
        self.turns += 1
        figures = turn.metrics.figures()
        record = TurnRecord(
            self.id, turn.id, turn.user_text, spoken, turn.reply_text, turn.interrupted, turn.error,
            figures, turn.started_at,
        )
        await self.engine.host.notify("turn_completed", session=self, turn=record)  # persisted before announced
        await self._emit(MetricsEvent(turn.id, figures))
        self.log.info("turn_completed", turn_id=turn.id, interrupted=turn.interrupted, error=turn.error, **{
            k: v for k, v in figures.items() if k.endswith("_ms") and v is not None
        })
        self.engine.record_metrics(turn.metrics)
        await self.engine.host.notify("turn_metrics", session=self, metrics=turn.metrics)

    # ---------------------------------------------------------------------------------------- output

    async def _on_speaking(self, turn_id: str) -> None:
        self._lifecycle.audio_started(turn_id)
        if not self._lifecycle.paused:
            await self._set_state("speaking")

    def attach_playout(self, source: PlayoutSource | None) -> None:
        """A transport that knows what its listener has heard reports it here (WebRTC: its track's buffer);
        without one the session counts by the paced send clock."""
        self._playout = source

    def reply_segments(self, turn_id: str) -> list[Segment]:
        """The pieces of text of reply ``turn_id`` and the byte offset where each one's audio starts (empty
        once it is not the current reply): for a transport that marks them in its output (the phone ones)."""
        turn = self._turn
        return turn.segments if turn is not None and turn.id == turn_id else []

    def offer_tool(self, spec: ToolSpec) -> None:
        """Offer a tool to this session's LLM only (the phone transports' ``end_call``)."""
        self._tools.specs = {**self._tools.specs, spec.name: spec}

    def attach_sink(self, sink: EventSink) -> None:
        """Let a transport take events directly when nothing is queued ahead of them (``Outbox``)."""
        self._outbox.attach_sink(sink)

    def detach_sink(self, sink: EventSink) -> None:
        self._outbox.detach_sink(sink)

    async def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            await self._emit(StateChanged(state))

    def _frame_bytes_out(self) -> int:
        return self.output_sample_rate * self.engine.config.pipeline.output.frame_ms // 1000 * 2

    def _lead_bytes(self) -> int:
        return self.output_sample_rate * self.engine.config.pipeline.output.lead_ms // 1000 * 2

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "state": self.state,
            "turns": self.turns,
            "started_at": self.started_at,
            **self.details,
        }
