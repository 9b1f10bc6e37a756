"""Recording sessions (``storage: {record: audio | events}``): an observer plugin, registered by the engine.

Per session it writes one file (``vocable.recording.format``) as the session goes: what the client sent, every
event with its time (a tap on the session's events, as the tracing plugin uses), and what each provider
produced. It needs no change to the session: the inputs are recorded by wrapping the session's own input
methods when it starts, and the providers' outputs by proxies that the recorder puts in front of the engine's
providers once, at start-up.

A provider is shared by every session, so a proxy finds the session a call belongs to through the context:
the ASGI scope of the request that opened it (``vocable.engine.app.REQUEST_SCOPE``, inherited by every task
the session starts from that request), where the recorder leaves its ``SessionRecording``. A session opened
from Python has no request: the recorder sets its own scope while the session's input methods run, and the
STT stream, whose task the session starts before any observer hears of it, is known by that task's name
(``<session id>-stt``) and sets it for the replies it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocable.engine.app import REQUEST_SCOPE
from vocable.engine.events import Event, StateChanged
from vocable.engine.metrics import now
from vocable.plugins.hookspecs import hookimpl
from vocable.recording.format import FORMAT_KEY, VERSION, Writer, encode_pcm, recording_path
from vocable.recording.proxies import install_proxies

if TYPE_CHECKING:
    from vocable.engine.engine import Engine
    from vocable.engine.metrics import TurnMetrics
    from vocable.engine.session import Session

KEY = "vocable.recording"  # where a request's scope holds its session's recording


class SessionRecording:
    """One session's file and clock (``t``: seconds since the recorder heard the session start)."""

    def __init__(self, writer: Writer, *, audio: bool, holder: dict[str, Any]) -> None:
        self.writer = writer
        self.audio = audio
        self.holder = holder
        self.t0 = now()
        self._numbers: dict[tuple[str, int], int] = {}

    def t(self) -> float:
        return round(max(0.0, now() - self.t0), 6)

    def line(self, **item: Any) -> None:
        self.writer.write({"t": self.t(), **item})

    def on_event(self, event: Event) -> None:
        self.writer.write({"t": self.t(), "event": event.to_wire()})

    def number(self, kind: str, place: int) -> int:
        """The next stream (STT) or request (LLM, TTS) number of provider ``place`` of chain ``kind``."""
        n = self._numbers.get((kind, place), 0)
        self._numbers[(kind, place)] = n + 1
        return n

    def adopt(self) -> None:
        """Make this session's the recording of the current task and the tasks it starts."""
        if REQUEST_SCOPE.get() is not self.holder:
            REQUEST_SCOPE.set(self.holder)

    async def within(self, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` with this session's recording current (the tasks it starts inherit it)."""
        token = REQUEST_SCOPE.set(self.holder)
        try:
            return await awaitable
        finally:
            REQUEST_SCOPE.reset(token)


class Recorder:
    """Registered on the engine's plugin host when ``storage.record`` is set."""

    def __init__(self, engine: Engine) -> None:
        storage = engine.config.storage
        self.engine = engine
        self.audio = storage.record == "audio"
        self.folder = Path(storage.recordings)
        self.live: dict[str, SessionRecording] = {}
        install_proxies(engine.runtime, self)

    def current(self) -> SessionRecording | None:
        """The recording of the session the running code works for, if it is being recorded."""
        holder = REQUEST_SCOPE.get()
        recording = holder.get(KEY) if holder is not None else None
        if recording is None and (task := asyncio.current_task()) is not None:
            name = task.get_name()
            if name.endswith("-stt"):  # the session's STT task, started before the recorder heard of it
                recording = self.live.get(name[:-4])
        return recording

    @hookimpl
    def session_started(self, session: Session) -> None:
        scope = REQUEST_SCOPE.get()
        holder: dict[str, Any] = scope if scope is not None else {"type": "vocable.python"}
        recording = SessionRecording(Writer(recording_path(self.folder, session.id)), audio=self.audio, holder=holder)
        holder[KEY] = recording
        self.live[session.id] = recording
        recording.writer.write(self._header(session))
        recording.on_event(session.ready_event())  # both went out before any observer heard of the session
        recording.on_event(StateChanged("listening"))
        session.add_tap(recording.on_event)  # every later event, as it is emitted
        _wrap_inputs(session, recording)
        if scope is None:
            recording.adopt()  # a greeting and typed turns started from this task are this session's

    @hookimpl
    def turn_metrics(self, session: Session, metrics: TurnMetrics) -> None:
        if (recording := self.live.get(session.id)) is not None:
            recording.writer.flush()  # a finished turn is on disk (GET /sessions/{id}/recording reads it)

    @hookimpl
    def session_ended(self, session: Session, reason: str) -> None:
        recording = self.live.pop(session.id, None)
        if recording is not None:
            recording.line(end=reason)
            recording.writer.close()
            recording.holder.pop(KEY, None)

    def _header(self, session: Session) -> dict[str, Any]:
        runtime = self.engine.runtime
        return {
            FORMAT_KEY: VERSION, "session_id": session.id, "transport": session.transport,
            "started_at": session.started_at, "resumed": session.resumed,
            "record": "audio" if self.audio else "events", "input_sample_rate": session.input_sample_rate,
            "sample_rate": session.sample_rate, "output_sample_rate": session.output_sample_rate,
            "chains": {kind: [{"name": live.name, "provider": live.provider.name, **_capabilities(live.provider)}
                              for live in getattr(runtime, kind)] for kind in ("stt", "llm", "tts")},
            "config": self.engine.redacted_config(),
        }


def _capabilities(provider: Any) -> dict[str, Any]:
    caps = provider.capabilities
    if provider.kind == "tts":
        return {"sample_rate": caps.sample_rate, "streaming_input": caps.streaming_input}
    if provider.kind == "stt":
        return {"streaming": caps.streaming, "interim_results": caps.interim_results,
                "sample_rates": list(caps.sample_rates), "endpointing": caps.endpointing}
    return {"tools": caps.tools}


def _wrap_inputs(session: Session, recording: SessionRecording) -> None:
    """Record what the client sends by wrapping the session's input methods (instance attributes shadow them)."""
    feed, set_rate, send_text, interrupt, say = (session.feed_audio, session.set_input_sample_rate,
                                                 session.send_text, session.interrupt, session.say)

    def feed_audio(pcm: bytes) -> Any:
        if recording.audio:
            recording.line(**{"in": "audio", "pcm": encode_pcm(pcm)})
        rest = feed(pcm)
        return None if rest is None else recording.within(rest)

    def set_input_sample_rate(rate: int) -> None:
        set_rate(rate)
        recording.line(**{"in": "rate", "sample_rate": rate})

    async def send_text_recorded(text: str) -> None:
        recording.line(**{"in": "text", "text": text})
        await recording.within(send_text(text))

    async def interrupt_recorded(reason: str = "client") -> bool:
        if reason == "client":  # the session interrupts itself too (a new turn): that is not input
            recording.line(**{"in": "interrupt"})
        return bool(await recording.within(interrupt(reason)))

    async def say_recorded(text: str) -> None:
        recording.line(**{"in": "say", "text": text})
        await recording.within(say(text))

    session.feed_audio = feed_audio  # type: ignore[method-assign]
    session.set_input_sample_rate = set_input_sample_rate  # type: ignore[method-assign]
    session.send_text = send_text_recorded  # type: ignore[method-assign]
    session.interrupt = interrupt_recorded  # type: ignore[method-assign]
    session.say = say_recorded  # type: ignore[method-assign]
