"""A session's replies: the one under way, its output paused or resumed, its end, and what memory keeps of it.

``ReplyRunner`` (``engine/turn.py``) produces a reply (LLM, TTS, paced audio); this module owns its life in
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
from vocable.engine.turn import ReplyRunner, Segment, Turn
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
        self.turn: Turn | None = None  # the current reply
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
        return self.turn is not None and self.turn.metrics.first_audio_out is not None

    def segments(self, turn_id: str) -> list[Segment]:
        turn = self.turn
        return turn.segments if turn is not None and turn.id == turn_id else []

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
        turn = Turn(metrics.turn_id, user_text, metrics, started_at=time.time())
        self.turn = turn
        if release is None or release.is_set():
            await session.set_state("thinking")
        self.task = asyncio.create_task(self._run(turn, fixed_text, release, prelude), name=f"{turn.id}-reply")

    async def _run(self, turn: Turn, fixed_text: str | None, release: asyncio.Event | None,
                   prelude: tuple[Event, ...]) -> None:
        session = self.session
        remaining = 0.0
        try:
            messages = None
            if fixed_text is None:
                if session.memory.pending:  # a call from an earlier reply is still running: its result comes first
                    await self.tools.settle()
                messages = session.memory.context(turn.user_text)
            remaining = await self._runner.run(turn, messages, fixed_text, release, prelude)
        except asyncio.CancelledError:
            raise
        except BaseException as group:
            errors = group.exceptions if isinstance(group, BaseExceptionGroup) else (group,)
            first = errors[0]
            if isinstance(first, (KeyboardInterrupt, SystemExit)):
                raise
            code = first.code if isinstance(first, ProviderError) else "turn_failed"
            turn.error = code
            session.log.warning("turn_failed", turn_id=turn.id, error=describe(first))
            await session.emit(ErrorEvent(code, describe(first)))
        await self._finish(turn, played_bytes=turn.emitted_bytes)
        if remaining > 0:
            await asyncio.sleep(remaining)  # the listener is still hearing the tail: keep 'speaking'
        session.lifecycle.finished(turn.id)
        if self.turn is turn:
            self.turn = None
            await session.set_state("listening")

    async def drop(self, turn: Turn) -> None:
        """A held reply the user went on from: gone unheard, nothing to remember."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.turn is turn:
            self.turn = self.task = None

    async def _cancel_current(self) -> None:
        if self.active:
            await self.cancel("new_turn")
        self.task = None

    async def _on_speaking(self, turn_id: str) -> None:
        lifecycle = self.session.lifecycle
        lifecycle.audio_started(turn_id)
        if not lifecycle.paused:
            await self.session.set_state("speaking")

    # ------------------------------------------------------------------------ lifecycle decisions

    def _unplayed_bytes(self) -> int:
        """Reply audio sent out but not heard yet, where the transport knows (WebRTC's track buffer)."""
        return self.playout.unplayed_bytes() if self.playout is not None else 0

    async def pause(self, turn_id: str) -> None:
        turn, session = self.turn, self.session
        if turn is None or turn.id != turn_id:
            return
        # heard so far: all that was sent (a client plays what it holds), less what the transport still holds
        turn.heard_bytes = max(0, turn.emitted_bytes - self._unplayed_bytes())
        turn.pause()
        session.log.info("paused", turn_id=turn_id, heard_bytes=turn.heard_bytes)
        await session.emit(Paused(turn_id))
        await session.set_state("listening")

    async def resume(self, turn_id: str) -> None:
        self.disarm()
        turn, session = self.turn, self.session
        if turn is None or turn.id != turn_id:
            return
        turn.heard_bytes = None
        turn.resume()
        session.log.info("resumed", turn_id=turn_id)
        await session.emit(Resumed(turn_id))
        await session.set_state("speaking" if turn.metrics.first_audio_out is not None else "thinking")

    async def cancel(self, reason: str) -> None:
        """The current reply stops for good; memory keeps what the listener heard of it."""
        self.disarm()
        task, turn, session = self.task, self.turn, self.session
        if task is None or turn is None or task.done():
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        mine = lambda e: isinstance(e, AudioOut) and e.turn_id == turn.id  # noqa: E731
        if turn.finished:  # only the audible tail was left: the client must still drop it
            session.events.purge(mine)
            await session.emit(Interrupted(turn.id, reason))
            self.turn = None
            await session.set_state("listening")
            return
        purged = session.events.purge(mine)
        turn.interrupted = True
        turn.metrics.interrupted = True
        session.log.info("interrupted", turn_id=turn.id, reason=reason, dropped_frames=purged)
        self.tools.interrupted(turn.id)  # its calls run on, but those that ask to be cancelled
        if turn.metrics.first_audio_out is None and turn.user_text and not turn.tool_calls:
            session.hearing.words.carry(turn.user_text, turn.id)  # nothing was said: the words join the next turn
        await session.emit(Interrupted(turn.id, reason))
        if turn.heard_bytes is not None:  # paused first: the listener heard what had played by then
            played = turn.heard_bytes
        else:  # the client drops what it holds: at most the lead the paced send clock keeps
            ahead = self._unplayed_bytes() if self.playout is not None else self._lead_bytes
            played = turn.emitted_bytes - purged * self._frame_bytes - ahead
        await self._finish(turn, played_bytes=max(0, played))
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

    async def _finish(self, turn: Turn, *, played_bytes: int) -> None:
        session, memory = self.session, self.session.memory
        turn.finished = True
        spoken = turn.spoken_text(played_bytes) if turn.interrupted else turn.reply_text
        unheard = turn.interrupted and turn.metrics.first_audio_out is None
        if turn.user_text is not None and (not unheard or turn.tool_calls):
            memory.add_user(turn.user_text)
            if turn.tool_calls:  # every call and its result, heard or not: the model must know what it did
                memory.add_tool_calls(tuple(turn.tool_calls), self.tools.take(turn.tool_calls))
            memory.add_assistant(spoken)
        elif turn.user_text is None and spoken:
            memory.add_assistant(spoken)
        session.turns += 1
        figures = turn.metrics.figures()
        record = TurnRecord(session.id, turn.id, turn.user_text, spoken, turn.reply_text, turn.interrupted,
                            turn.error, figures, turn.started_at)
        engine = session.engine
        await engine.host.notify("turn_completed", session=session, turn=record)  # persisted before announced
        await session.emit(MetricsEvent(turn.id, figures))
        session.log.info("turn_completed", turn_id=turn.id, interrupted=turn.interrupted, error=turn.error,
                         **_milliseconds(figures))
        engine.record_metrics(turn.metrics)
        await engine.host.notify("turn_metrics", session=session, metrics=turn.metrics)


def _milliseconds(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k.endswith("_ms") and v is not None}
