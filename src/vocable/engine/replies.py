"""A session's replies: the one under way, its output paused or resumed, its end, and what memory keeps of it.

``ReplyRunner`` (``engine/reply.py``) produces a reply (LLM, TTS, paced audio); this module owns its life in
the session: starting it (held, for a speculative reply), pausing and resuming its output on the reply
lifecycle's decisions, cancelling it, and finishing it. On the way it keeps the playout accounting: the
transport's report of what the listener has not heard yet (``PlayoutSource``), or the paced send clock, so
that memory keeps exactly the reply text whose audio was heard. Tool calls run in ``ToolCalls``, owned
here and not by a reply, so an interruption does not lose them.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from vocable.engine.events import AudioOut, ErrorEvent, Event, Interrupted, MetricsEvent, Paused, Resumed
from vocable.engine.fallback import describe
from vocable.engine.metrics import TurnMetrics, now
from vocable.engine.outbox import PlayoutSource
from vocable.engine.records import TurnRecord
from vocable.engine.tools import Fillers, ToolCalls, ToolSpec
from vocable.engine.reply import AgentReply, ReplyRunner, Segment
from vocable.providers.errors import ProviderError

if TYPE_CHECKING:
    from vocable.engine.session import Session


class Replies:
    def __init__(self, session: Session, *, pace: bool) -> None:
        self.session = session
        config = session.engine.config
        output = config.pipeline.output
        self._frame_bytes = session.output_sample_rate * output.frame_ms // 1000 * 2
        self._lead_bytes = session.output_sample_rate * output.lead_ms // 1000 * 2
        self.tools = ToolCalls(session.engine.tools, session.emit, session.memory.resolve, {"session_id": session.id})
        self.current: AgentReply | None = None  # the current reply
        self.task: asyncio.Task[None] | None = None  # the task producing it
        self.playout: PlayoutSource | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ticking: asyncio.Task[None] | None = None
        self._runner = ReplyRunner(
            runtime=session.engine.runtime,
            output=output,
            output_sample_rate=session.output_sample_rate,
            emit=session.emit,
            on_speaking=self._on_speaking,
            tools=self.tools,
            fillers=Fillers(config.agent.filler_after_ms, config.agent.fillers),
            pace=pace,
            queue_chunks=max(8, config.pipeline.queue_frames // 4),
            log_context={"session_id": session.id},
        )

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def spoke(self) -> bool:
        """The current reply's audio has started."""
        return self.current is not None and self.current.metrics.first_audio_out is not None

    def segments(self, turn_id: str) -> list[Segment]:
        reply = self.current
        return reply.segments if reply is not None and reply.id == turn_id else []

    def offer_tool(self, spec: ToolSpec) -> None:
        self.tools.specs = {**self.tools.specs, spec.name: spec}

    async def aclose(self) -> None:
        self.disarm()
        if self._ticking is not None and self._ticking is not asyncio.current_task():
            self._ticking.cancel()
            await asyncio.gather(self._ticking, return_exceptions=True)
        await self._cancel_current()
        await self.tools.aclose()

    # ------------------------------------------------------------------------------------ a reply

    async def begin(
        self, user_text: str | None, metrics: TurnMetrics, *, fixed_text: str | None = None,
        release: asyncio.Event | None = None, prelude: tuple[Event, ...] = (),
    ) -> None:
        """Start the reply to ``user_text`` (or speak ``fixed_text``); the current one is replaced. With a
        ``release`` not yet open, it is held: prepared, but unheard until the release opens."""
        session = self.session
        await session.apply(session.lifecycle.started(metrics.turn_id, held=release is not None and not release.is_set()))
        await self._cancel_current()
        reply = AgentReply(metrics.turn_id, user_text, metrics, started_at=time.time())
        self.current = reply
        if release is None or release.is_set():
            await session.set_state("thinking")
        self.task = asyncio.create_task(self._run(reply, fixed_text, release, prelude), name=f"{reply.id}-reply")

    async def _run(self, reply: AgentReply, fixed_text: str | None, release: asyncio.Event | None,
                   prelude: tuple[Event, ...]) -> None:
        session = self.session
        remaining = 0.0
        try:
            messages = None
            if fixed_text is None:
                if session.memory.pending:  # a call from an earlier reply is still running: its result comes first
                    await self.tools.settle()
                messages = session.memory.context(reply.user_text)
            remaining = await self._runner.run(reply, messages, fixed_text, release, prelude)
        except asyncio.CancelledError:
            raise
        except BaseException as group:
            errors = group.exceptions if isinstance(group, BaseExceptionGroup) else (group,)
            first = errors[0]
            if isinstance(first, (KeyboardInterrupt, SystemExit)):
                raise
            code = first.code if isinstance(first, ProviderError) else "turn_failed"
            reply.error = code
            session.log.warning("turn_failed", turn_id=reply.id, error=describe(first))
            await session.emit(ErrorEvent(code, describe(first)))
        await self._finish(reply, played_bytes=reply.emitted_bytes)
        if remaining > 0:
            await asyncio.sleep(remaining)  # the listener is still hearing the tail: keep 'speaking'
        session.lifecycle.finished(reply.id)
        if self.current is reply:
            self.current = None
            await session.set_state("listening")

    async def drop(self, reply: AgentReply) -> None:
        """A held reply the user went on from: gone unheard, nothing to remember."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.current is reply:
            self.current = self.task = None

    async def _cancel_current(self) -> None:
        if self.active:
            await self.cancel("new_turn")
        self.task = None

    async def _on_speaking(self, turn_id: str) -> None:
        lifecycle = self.session.lifecycle
        lifecycle.audio_started(turn_id, now())  # when: a voice right after it was not answering it
        if not lifecycle.paused:
            await self.session.set_state("speaking")

    # ------------------------------------------------------------------------ lifecycle decisions

    def _unplayed_bytes(self) -> int:
        """Reply audio sent out but not heard yet, where the transport knows (WebRTC's track buffer)."""
        return self.playout.unplayed_bytes() if self.playout is not None else 0

    async def pause(self, turn_id: str) -> None:
        reply, session = self.current, self.session
        if reply is None or reply.id != turn_id:
            return
        # heard so far: all that was sent (a client plays what it holds), less what the transport still holds
        reply.heard_bytes = max(0, reply.emitted_bytes - self._unplayed_bytes())
        reply.pause()
        session.log.info("paused", turn_id=turn_id, heard_bytes=reply.heard_bytes)
        await session.emit(Paused(turn_id))
        await session.set_state("listening")

    async def resume(self, turn_id: str) -> None:
        self.disarm()
        reply, session = self.current, self.session
        if reply is None or reply.id != turn_id:
            return
        reply.heard_bytes = None
        reply.resume()
        session.log.info("resumed", turn_id=turn_id)
        await session.emit(Resumed(turn_id))
        await session.set_state("speaking" if reply.metrics.first_audio_out is not None else "thinking")

    async def cancel(self, reason: str) -> None:
        """The current reply stops for good; memory keeps what the listener heard of it."""
        self.disarm()
        task, reply, session = self.task, self.current, self.session
        if task is None or reply is None or task.done():
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        mine = lambda e: isinstance(e, AudioOut) and e.turn_id == reply.id  # noqa: E731
        if reply.finished:  # only the audible tail was left: the client must still drop it
            session.events.purge(mine)
            await session.emit(Interrupted(reply.id, reason))
            self.current = None
            await session.set_state("listening")
            return
        purged = session.events.purge(mine)
        reply.interrupted = True
        reply.metrics.interrupted = True
        session.log.info("interrupted", turn_id=reply.id, reason=reason, dropped_frames=purged)
        self.tools.interrupted(reply.id)  # its calls run on, but those that ask to be cancelled
        unheard = reply.metrics.first_audio_out is None or reason == "user_continued"  # the person went on
        if unheard and reply.user_text and not reply.tool_calls:
            session.hearing.words.carry(reply.user_text, reply.id)  # nothing was said: the words join the next turn
        await session.emit(Interrupted(reply.id, reason))
        if reply.heard_bytes is not None:  # paused first: the listener heard what had played by then
            played = reply.heard_bytes
        else:  # the client drops what it holds: at most the lead the paced send clock keeps
            ahead = self._unplayed_bytes() if self.playout is not None else self._lead_bytes
            played = reply.emitted_bytes - purged * self._frame_bytes - ahead
        await self._finish(reply, played_bytes=max(0, played), unheard=unheard)
        if self.current is reply:  # over: nothing current speaks any more (the state follows the next turn)
            self.current = None
        if not session.closed:
            await session.set_state("listening")

    def arm(self, at: float) -> None:
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, at - now()), self._on_timer)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        session = self.session
        if not session.closed:
            self._ticking = asyncio.create_task(session.apply(session.lifecycle.tick(now())), name=f"{session.id}-tick")

    # ---------------------------------------------------------------------------------- its end

    async def _finish(self, reply: AgentReply, *, played_bytes: int, unheard: bool = False) -> None:
        session, memory = self.session, self.session.memory
        reply.finished = True
        spoken = reply.spoken_text(played_bytes) if reply.interrupted else reply.reply_text
        unheard = unheard or (reply.interrupted and reply.metrics.first_audio_out is None)
        if reply.user_text is not None and (not unheard or reply.tool_calls):
            memory.add_user(reply.user_text)
            if reply.tool_calls:  # every call and its result, heard or not: the model must know what it did
                memory.add_tool_calls(tuple(reply.tool_calls), self.tools.take(reply.tool_calls))
            memory.add_assistant(spoken)
        elif reply.user_text is None and spoken:
            memory.add_assistant(spoken)
        session.turns += 1
        figures = reply.metrics.figures()
        record = TurnRecord(session.id, reply.id, reply.user_text, spoken, reply.reply_text, reply.interrupted,
                            reply.error, figures, reply.started_at)
        engine = session.engine
        await engine.host.notify("turn_completed", session=session, turn=record)  # persisted before announced
        await session.emit(MetricsEvent(reply.id, figures))
        session.log.info("turn_completed", turn_id=reply.id, interrupted=reply.interrupted, error=reply.error,
                         **_milliseconds(figures))
        engine.record_metrics(reply.metrics)
        await engine.host.notify("turn_metrics", session=session, metrics=reply.metrics)


def _milliseconds(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k.endswith("_ms") and v is not None}
