"""A session: one conversation, whatever carries it (WebSocket, WebRTC, a phone, or Python via ``conversation()``).

Thin glue between three parts, each in its own module:

- ``Hearing`` (``engine/hearing.py``): microphone audio to the words of a finished user turn;
- the reply lifecycle (``engine/lifecycle.py``): what the user's voice and words mean for the reply under way,
  as decisions (pause, resume, cancel, release, abandon);
- ``Replies`` (``engine/replies.py``): the reply under way, its output, its end and what memory keeps of it.

The session carries out the lifecycle's decisions (``apply``), owns the conversation memory and the event
outbox (``engine/outbox.py``: one bounded channel the transport drains, or a sink that takes events at once),
and is the API transports and embedding apps use: ``send_audio``, ``send_text``, ``interrupt``, ``events``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from vocable.engine.events import AudioOut, Closed, ErrorEvent, Event, Ready, State, StateChanged, Transcript
from vocable.engine.hearing import SUPPORTED_INPUT_RATES, Hearing
from vocable.engine.lifecycle import Decision, ReplyLifecycle, TurnTakingRules
from vocable.engine.memory import Memory
from vocable.engine.metrics import TurnMetrics
from vocable.engine.outbox import EventSink, Outbox, PlayoutSource
from vocable.engine.rate import SlidingWindow
from vocable.engine.records import TurnRecord, new_id
from vocable.engine.replies import Replies
from vocable.engine.tools import ToolSpec
from vocable.engine.reply import Segment

if TYPE_CHECKING:
    from vocable.engine.engine import Engine

__all__ = ["SUPPORTED_INPUT_RATES", "Session", "SessionClosed", "TurnRecord", "new_id"]

log = structlog.get_logger("vocable.session")


class SessionClosed(Exception):
    """Input sent to a session that has ended."""


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
        self.engine = engine
        self.id = session_id or new_id("ses")
        self.transport = transport
        self.started_at = time.time()
        self.state: State = "listening"
        self.turns = 0
        self.resumed = False
        self.details: dict[str, Any] = {}  # a transport's facts for ``/sessions`` (a phone call's masked number)
        self.last_activity = time.monotonic()
        self.log = log.bind(session_id=self.id, transport=transport)
        per_minute = config.server.max_turns_per_minute  # a client's flood of typed turns, not the app's own
        self._typed_turns = SlidingWindow(per_minute) if per_minute and transport != "python" else None
        self.output_sample_rate = pipeline.output.sample_rate or engine.runtime.output_sample_rate
        self._outbox = Outbox(pipeline.queue_frames)
        self.events = self._outbox.events  # what the transport drains
        self.emit: Callable[[Event], Awaitable[None]] = self._outbox.emit  # in order, bounded
        self.memory = Memory(config.agent.system_prompt, max_turns=config.agent.memory.max_turns,
                             max_chars=config.agent.memory.max_chars)
        taking = pipeline.turn_taking
        self.lifecycle = ReplyLifecycle(TurnTakingRules(
            taking.barge_in, taking.barge_in_min_ms, taking.false_interruption_timeout_s, taking.min_words,
            continued_within_s=taking.continued_within_ms / 1000))
        self.hearing = Hearing(self, input_sample_rate or pipeline.input_sample_rate)
        self.replies = Replies(self, pace=pace)
        self._closed = False
        self._close_reason: str | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------ life cycle

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str | None:
        """Why the session ended (e.g. ``server_shutdown``), so a transport can pick a close code."""
        return self._close_reason

    @property
    def input_sample_rate(self) -> int:
        return self.hearing.input_sample_rate

    @property
    def sample_rate(self) -> int:
        """The rate the VAD and STT run at (``pipeline.sample_rate``)."""
        return self.hearing.sample_rate

    async def start(self) -> None:
        self.hearing.start()
        self._watchdog = asyncio.create_task(self._watch_limits(), name=f"{self.id}-limits")
        await self.emit(self.ready_event())
        await self.emit(StateChanged("listening"))
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
        await self.replies.aclose()
        await self.hearing.aclose()
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
                  and self.state == "listening" and not self.hearing.listener.speaking):
                reason = ("idle_timeout", f"no speech or text for {server.idle_timeout_s:g} s")
            if reason is not None:
                await self.report_error(reason[0], reason[1], fatal=True)
                await self.close(reason[0])
                return

    # ----------------------------------------------------------------------------------------- input

    async def send_audio(self, pcm: bytes) -> None:
        """Microphone audio at ``input_sample_rate`` (PCM16 mono); any length, an odd byte is carried over."""
        if (rest := self.feed_audio(pcm)) is not None:
            await rest

    def feed_audio(self, pcm: bytes) -> Coroutine[Any, Any, None] | None:
        """``send_audio`` for a transport's hot path: returns what is left to await, or None.

        Most messages are one frame of silence, which is heard without awaiting anything; making the
        transport's reader create and run a coroutine for each of them (50 a second for every session)
        would cost more than hearing the frame. Await what this returns before feeding more.
        """
        if self._closed:
            raise SessionClosed(self.id)
        return self.hearing.feed(pcm)

    def set_input_sample_rate(self, rate: int) -> None:
        """Change the client's audio rate (the WebSocket ``start`` message); ValueError if unsupported."""
        self.hearing.set_rate(rate)

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
        metrics = TurnMetrics(self.id, self.new_turn_id())
        metrics.stamp("final_transcript")
        await self.emit(Transcript(text, True, metrics.turn_id))
        await self.replies.begin(text, metrics)

    async def say(self, text: str) -> None:
        """Speak ``text`` as the agent (a greeting, an announcement), without asking the LLM."""
        await self.interrupt("new_turn")
        metrics = TurnMetrics(self.id, self.new_turn_id())
        metrics.stamp("final_transcript")
        await self.replies.begin(None, metrics, fixed_text=text)

    async def interrupt(self, reason: str = "client") -> bool:
        """Stop the current reply now: cancel LLM and TTS, drop queued audio, tell the client."""
        decisions = self.lifecycle.interrupt("client" if reason == "client" else "new_turn")
        if not decisions and self.replies.active:  # only its audible tail was left
            turn = self.replies.current
            decisions = [Decision("cancel", turn.id if turn else "", "client")]
        await self.apply(decisions)
        return bool(decisions)

    async def report_error(self, code: str, message: str, *, fatal: bool = False) -> None:
        """Tell the client about a problem with its input (transports call this for bad messages)."""
        self.log.info("client_error", code=code, fatal=fatal)
        await self.emit(ErrorEvent(code, message, fatal))

    def ready_event(self) -> Ready:
        return Ready(self.id, self.input_sample_rate, self.output_sample_rate, self.resumed)

    @staticmethod
    def new_turn_id() -> str:
        return new_id("turn")

    # ------------------------------------------------------------------------ the lifecycle's decisions

    async def apply(self, decisions: list[Decision]) -> None:
        """Carry out what the reply lifecycle (``engine/lifecycle.py``) decided."""
        for decision in decisions:
            action = decision.action
            if action == "pause":
                await self.replies.pause(decision.turn_id)
            elif action == "resume":
                await self.replies.resume(decision.turn_id)
            elif action == "cancel":
                await self.replies.cancel(decision.reason)
            elif action == "abandon":
                await self.hearing.abandon_speculation()
            elif action == "release":
                self.hearing.release(decision.turn_id)
            elif action == "arm":
                self.replies.arm(decision.at)

    # ---------------------------------------------------------------------------------------- output

    def attach_sink(self, sink: EventSink) -> None:
        """Let a transport take events directly when nothing is queued ahead of them (``Outbox``)."""
        self._outbox.attach_sink(sink)

    def detach_sink(self, sink: EventSink) -> None:
        self._outbox.detach_sink(sink)

    def add_tap(self, tap: Callable[[Event], None]) -> None:
        """See every event as it is emitted (tracing, recording): ``tap`` is called synchronously, must be
        quick and must not raise."""
        self._outbox.add_tap(tap)

    def attach_playout(self, source: PlayoutSource | None) -> None:
        """A transport that knows what its listener has heard reports it here (WebRTC: its track's buffer);
        without one the session counts by the paced send clock."""
        self.replies.playout = source

    def reply_segments(self, turn_id: str) -> list[Segment]:
        """The pieces of text of reply ``turn_id`` and the byte offset where each one's audio starts (empty
        once it is not the current reply): for a transport that marks them in its output (the phone ones)."""
        return self.replies.segments(turn_id)

    def offer_tool(self, spec: ToolSpec) -> None:
        """Offer a tool to this session's LLM only (the phone transports' ``end_call``)."""
        self.replies.offer_tool(spec)

    async def set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            await self.emit(StateChanged(state))

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "transport": self.transport, "state": self.state, "turns": self.turns,
                "started_at": self.started_at, **self.details}

