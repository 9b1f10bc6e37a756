"""The spans of one conversation, made after the fact with explicit start and end times.

::

    conversation                     session_started -> session_ended        (parent: the request's traceparent)
      turn                           the earliest of the turn's stamps -> the turn finished (turn_completed)
        end_of_turn                  end of user speech -> end-of-turn decision
        stt                          end of user speech -> final transcript   (the figure stt_ms)
        llm                          LLM request -> its last text              (GenAI semantic conventions)
          tool                       tool_call -> tool_result, one per call
        tts                          first TTS request -> the last reply audio handed to the transport

The turn's stamps (``TurnMetrics``, ``time.perf_counter`` seconds) become epoch nanoseconds by one offset
taken when the turn's spans are made. The ends that ``TurnMetrics`` does not stamp come from ``on_event``, a
tap on the session's events: the final ``reply`` (the LLM's end), ``tool_call`` and ``tool_result``, the last
``audio`` frame, ``paused``/``resumed``/``interrupted`` (span events on the turn). A tool call still running
when its turn ends (the user talked over it) gets its span when it ends, or when the conversation does.

The user's and the agent's words go into attributes only with ``include_text``; nothing else carries them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from vocable.engine.events import AudioOut, Event, Interrupted, Paused, Reply, Resumed, ToolCallEvent, ToolResultEvent
from vocable.engine.metrics import now

if TYPE_CHECKING:
    from vocable.engine.metrics import TurnMetrics
    from vocable.engine.runtime import Runtime
    from vocable.engine.session import Session, TurnRecord

PRIMITIVE = (str, bool, int, float)


def incoming_context(scope: Mapping[str, Any] | None) -> Context:
    """The trace context of the request that opened the session (its W3C ``traceparent``, through the configured
    propagators), else the current one (an app's own instrumentation), else none: a new trace."""
    current = trace.set_span_in_context(trace.get_current_span())
    if not scope:
        return current
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
    return propagate.extract(headers, context=current)


@dataclass(slots=True)
class ToolTiming:
    turn_id: str
    call_id: str
    name: str
    arguments: str
    start: float
    end: float | None = None
    status: str | None = None
    parent: Context | None = None  # set once its turn's spans exist and the call is still running


class ConversationTrace:
    """One session's spans; ``on_event`` runs for every event the session emits, so it only notes times."""

    def __init__(self, tracer: Any, session: Session, parent: Context, *, include_text: bool, runtime: Runtime) -> None:
        self.tracer = tracer
        self.include_text = include_text
        self.runtime = runtime
        self.span = tracer.start_span(
            "conversation", context=parent, kind=SpanKind.SERVER, start_time=int(session.started_at * 1e9),
            attributes={"vocable.session.id": session.id, "vocable.transport": session.transport,
                        "vocable.session.resumed": bool(session.resumed)})
        self.context = trace.set_span_in_context(self.span)
        self.records: dict[str, tuple[TurnRecord, float]] = {}  # turn id -> the record, when the turn finished
        self.llm_end: dict[str, float] = {}
        self.audio_end: dict[str, float] = {}
        self.marks: dict[str, list[tuple[str, float, dict[str, Any]]]] = {}
        self.tools: dict[str, ToolTiming] = {}  # call id -> timing, until its span is made

    # ------------------------------------------------------------------------------------- the tap

    def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is AudioOut:  # 50 a second while the agent speaks: one dict store
            self.audio_end[event.turn_id] = now()  # type: ignore[attr-defined]
        elif kind is Reply:
            if event.final:  # type: ignore[attr-defined]
                self.llm_end[event.turn_id] = now()  # type: ignore[attr-defined]
        elif kind is ToolCallEvent:
            assert isinstance(event, ToolCallEvent)
            self.tools[event.id] = ToolTiming(event.turn_id, event.id, event.name, event.arguments, now())
        elif kind is ToolResultEvent:
            assert isinstance(event, ToolResultEvent)
            timing = self.tools.get(event.id)
            if timing is not None:
                timing.end, timing.status = now(), event.status
                if timing.parent is not None:  # its turn has ended: the span can be made now
                    self._tool_span(self.tools.pop(event.id), _clock())
        elif kind is Paused or kind is Resumed or kind is Interrupted:
            attributes = {"vocable.reason": event.reason} if kind is Interrupted else {}  # type: ignore[attr-defined]
            self.marks.setdefault(event.turn_id, []).append((event.type, now(), attributes))  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------- turns

    def turn_completed(self, record: TurnRecord) -> None:
        self.records[record.turn_id] = (record, now())

    def turn_metrics(self, m: TurnMetrics) -> None:
        turn_id = m.turn_id
        record, end = self.records.pop(turn_id, (None, None))
        clock = _clock()
        end = end or clock.at
        stamps = [t for t in (m.speech_end, m.end_of_turn, m.final_transcript, m.llm_request, m.tts_request)
                  if t is not None]
        start = min(stamps, default=end)
        turn = self.tracer.start_span("turn", context=self.context, start_time=clock.ns(start),
                                      attributes=self._turn_attributes(m, record))
        for name, at, attributes in self.marks.pop(turn_id, ()):
            turn.add_event(name, attributes, timestamp=clock.ns(at))
        if record is not None and record.error:
            turn.set_status(Status(StatusCode.ERROR, record.error))
            turn.set_attribute("error.type", record.error)
        inside = trace.set_span_in_context(turn)
        if m.speech_end is not None and m.end_of_turn is not None:
            detector = self.runtime.turn[0].name if self.runtime.turn else None
            self._child("end_of_turn", inside, clock, m.speech_end, m.end_of_turn,
                        _clean({"vocable.turn.detector": detector, "vocable.turn.eot_ms": _ms(m.speech_end, m.end_of_turn)}))
        if m.speech_end is not None and m.final_transcript is not None and m.stt_provider is not None:
            self._child("stt", inside, clock, m.speech_end, m.final_transcript,
                        {"vocable.stt.provider": m.stt_provider, "vocable.turn.stt_ms": _ms(m.speech_end, m.final_transcript)})
        llm_end = self.llm_end.pop(turn_id, None)
        if m.llm_request is not None and (m.llm_provider is not None or (record is not None and record.user_text is not None)):
            llm = self._child("llm", inside, clock, m.llm_request, llm_end or end, self._llm_attributes(m),
                              kind=SpanKind.CLIENT, finish=False)
            if record is not None and record.error and m.llm_first_token is None:
                llm.set_status(Status(StatusCode.ERROR, record.error))
            tools = trace.set_span_in_context(llm)
            for timing in [t for t in self.tools.values() if t.turn_id == turn_id]:
                if timing.end is None:
                    timing.parent = tools  # still running: its span is made when it ends
                else:
                    self._tool_span(self.tools.pop(timing.call_id), clock, tools)
            llm.end(clock.ns(max(m.llm_request, llm_end or end)))
        audio_end = self.audio_end.pop(turn_id, None)
        if m.tts_request is not None:
            self._child("tts", inside, clock, m.tts_request, audio_end or end,
                        _clean({"vocable.tts.provider": m.tts_provider, "vocable.turn.tts_ttfb_ms": _ms(m.tts_request, m.tts_first_audio)}))
        turn.end(clock.ns(end))

    def end(self, reason: str, *, turns: int) -> None:
        """The session ended: tool calls still unaccounted for end here, then the conversation span."""
        clock = _clock()
        for timing in list(self.tools.values()):
            if timing.parent is not None:
                timing.end, timing.status = timing.end or clock.at, timing.status or "unfinished"
                self._tool_span(timing, clock)
        self.tools.clear()
        self.span.set_attributes({"vocable.session.end_reason": reason, "vocable.session.turns": turns})
        self.span.end(clock.ns(clock.at))

    # ------------------------------------------------------------------------------------- spans

    def _child(self, name: str, parent: Context, clock: _Clock, start: float, end: float,
               attributes: dict[str, Any], *, kind: SpanKind = SpanKind.INTERNAL, finish: bool = True) -> Any:
        span = self.tracer.start_span(name, context=parent, kind=kind, start_time=clock.ns(start), attributes=attributes)
        if finish:
            span.end(clock.ns(max(start, end)))
        return span

    def _tool_span(self, timing: ToolTiming, clock: _Clock, parent: Context | None = None) -> None:
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": timing.name,
                      "gen_ai.tool.call.id": timing.call_id, "vocable.tool.status": timing.status or "unfinished"}
        if self.include_text:
            attributes["gen_ai.tool.call.arguments"] = timing.arguments
        span = self._child("tool", parent or timing.parent or self.context, clock, timing.start,
                           timing.end if timing.end is not None else clock.at, attributes, finish=False)
        if timing.status != "ok":
            span.set_status(Status(StatusCode.ERROR, timing.status or "unfinished"))
            span.set_attribute("error.type", timing.status or "unfinished")
        span.end(clock.ns(max(timing.start, timing.end if timing.end is not None else clock.at)))

    def _turn_attributes(self, m: TurnMetrics, record: TurnRecord | None) -> dict[str, Any]:
        """The same figures as the ``metrics`` event, the providers, whether a fallback served, the breakers."""
        figures = record.metrics if record is not None and record.metrics else m.figures()
        attributes: dict[str, Any] = {"vocable.session.id": m.session_id, "vocable.turn.id": m.turn_id}
        for key, value in figures.items():
            if isinstance(value, PRIMITIVE):
                attributes[f"vocable.turn.{key}"] = value
        runtime = self.runtime
        for kind, served in (("stt", m.stt_provider), ("llm", m.llm_provider), ("tts", m.tts_provider)):
            chain = getattr(runtime, kind)
            if served is not None:
                attributes[f"vocable.{kind}.provider"] = served
                attributes[f"vocable.{kind}.fallback"] = bool(chain) and served != chain[0].name
        for kind, named in runtime.breakers().items():
            for name, breaker in named.items():
                attributes[f"vocable.breaker.{kind}.{name}"] = breaker.state
        if record is not None:
            if record.interrupted:
                reasons = [a.get("vocable.reason") for name, _, a in self.marks.get(m.turn_id, ()) if name == "interrupted"]
                if reasons and reasons[-1]:
                    attributes["vocable.turn.interrupted_reason"] = reasons[-1]
            if self.include_text:
                attributes.update(_clean({"vocable.user.text": record.user_text, "vocable.agent.text": record.reply_text,
                                          "vocable.agent.full_text": record.full_reply_text}))
        return attributes

    def _llm_attributes(self, m: TurnMetrics) -> dict[str, Any]:
        """GenAI semantic conventions: operation, provider, requested model, token usage."""
        live = next((p for p in self.runtime.llm if p.name == m.llm_provider), None)
        if live is None and m.llm_provider is None and self.runtime.llm:
            live = self.runtime.llm[0]  # every provider failed: the request went to the first one
        provider = live.provider if live is not None else None
        return _clean({
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": getattr(provider, "name", None) or m.llm_provider,
            "gen_ai.request.model": getattr(getattr(provider, "settings", None), "model", None),
            "gen_ai.usage.input_tokens": m.prompt_tokens,
            "gen_ai.usage.output_tokens": m.completion_tokens,
            "vocable.llm.provider": m.llm_provider,
            "vocable.turn.llm_ttft_ms": _ms(m.llm_request, m.llm_first_token),
        })


@dataclass(frozen=True, slots=True)
class _Clock:
    """``perf_counter`` seconds to epoch nanoseconds, by one offset taken at ``at``."""

    at: float
    offset_ns: int

    def ns(self, t: float) -> int:
        return int(t * 1e9) + self.offset_ns


def _clock() -> _Clock:
    at = now()
    return _Clock(at, time.time_ns() - int(at * 1e9))


def _ms(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000.0, 3)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if isinstance(v, PRIMITIVE)}
