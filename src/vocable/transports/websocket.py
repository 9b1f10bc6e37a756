"""The WebSocket transport: ``WS /ws/audio``, one connection is one session (docs/protocol.md).

Two tasks per connection. The reader turns client messages into session calls (binary -> ``send_audio``;
JSON -> start, text, interrupt, end). The writer drains the session's bounded event channel to the client.
While that channel is empty, producers send their events themselves (the session's sink, see ``take``),
which saves a wake-up per message; either way the client sees events in the order the session made them,
and the reader's own answers (errors, a fresh ``ready``) go the same way.

However the connection ends (client close, network error, ``end``, bad input, server shutdown), both tasks
are cancelled, the session is closed through the engine, and the socket gets a close code that says why.
Memory stays bounded: the session's channel is bounded, uvicorn stops reading while a message waits, and a
client that stops reading is closed once a single send has waited ``send_timeout_s``.

At about 500 lines this is one of vocable's longest modules, on purpose: the reader, the writer, the direct
frames fast path and the slow-client watchdog all keep one rule (events reach the client in the order the
session made them) over one connection's state, and it is easier to check in one place than across files.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from pydantic import Field
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from vocable.engine.channel import ChannelClosed
from vocable.engine.engine import CapacityError, NotReady
from vocable.engine.events import AudioOut, Event
from vocable.engine.gate import Refused, admit_websocket
from vocable.engine.session import Session, SessionClosed
from vocable.plugins.hookspecs import hookimpl
from vocable.providers.base import ProviderSettings
from vocable.transports.base import WIRE_SEND, Transport
from vocable.transports.direct_frames import AWAIT_MESSAGE, DIRECT_FRAMES, DirectFrames
from vocable.transports.protocol import (
    BadInput,
    InterruptMessage,
    StartMessage,
    TextMessage,
    parse_message,
    requested_rate,
)

log = structlog.get_logger("vocable.websocket")

DRAIN_S = 2.0  # time the last events (an error, ``closed``) get to reach a client before the close frame
CLOSE_S = 2.0  # a close frame that cannot be written within this is abandoned (the client is not reading)


class WebSocketSettings(ProviderSettings):
    path: str = Field(default="/ws/audio", pattern=r"^/")
    max_message_bytes: int = Field(
        default=512 * 1024, ge=1024,
        description="larger messages get a message_too_large error and close 1009; keep it below the "
                    "server's own WebSocket limit (uvicorn ws_max_size, 1 MiB under `vocable serve`)")
    max_text_chars: int = Field(default=4000, ge=1, description="longest typed turn")
    send_timeout_s: float = Field(default=10.0, gt=0, description="a client that takes longer to accept one "
                                                                  "message is closed (1008)")
    open_timeout_s: float = Field(default=120.0, gt=0, description="how long a connection waits for models")


# ----------------------------------------------------------------------------------- one connection


@dataclass(frozen=True, slots=True)
class Ending:
    """How a connection ends: the close code to send (None: the socket is gone) and the session's reason."""

    code: int | None
    reason: str
    drain: bool = True  # let queued events reach the client before the close frame
    resumable: bool = False  # the client vanished without ``end``: it may come back within the grace window


def ending_for_session(session: Session) -> Ending:
    reason = session.close_reason or "closed"
    code = {"server_shutdown": 1001, "server_draining": 1012}.get(reason, 1000)  # 1012: reconnect (a restart)
    return Ending(code, reason)


class Connection:
    """One client and its session. Whoever sees the end first (reader or writer) decides the Ending, once.

    Frames travel through the bare ASGI ``receive`` and ``send`` (Starlette's WebSocket checks its state
    and adds a wrapper on every message: a measurable share of a path that carries ~80 messages a second
    per client); the handshake and the close go through the WebSocket, whose state is kept in step. Under
    ``vocable serve`` the server also offers ``direct`` frames (``transports/direct_frames.py``): audio is
    heard as it is parsed while the reader is idle, and messages are written at once while the socket can
    take them, without the ASGI queue, a task wake-up or a coroutine per frame.
    """

    def __init__(self, transport: WebSocketTransport, ws: WebSocket, session: Session, receive: Receive,
                 send: Send, direct: DirectFrames | None = None) -> None:
        self.transport = transport
        self.direct = direct
        self._idle = False  # the reader waits in ``receive`` with nothing in hand: a frame may be heard at once
        self._pending: Awaitable[None] | None = None  # what ``_hear_now`` left for the reader to await
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = loop.create_future()  # what a send that has already happened returns
        self._done.set_result(None)
        self.settings = transport.settings
        self.ws = ws
        self._receive = receive
        self._send_asgi = send
        self.session = session
        self.log = log.bind(session_id=session.id)
        self.bytes_in = self.bytes_out = self.messages_in = 0
        self.heard_direct = 0  # of messages_in, the frames heard as they were parsed (direct frames)
        self._odd_reported = False
        self._sending = True  # False once the client cannot take more: the writer then only drains
        self._ended: asyncio.Future[Ending] = loop.create_future()
        self.send_started: float | None = None
        self.writer: asyncio.Task[None] | None = None
        self._direct = True  # producers may send directly (``take``) until the connection starts ending
        self._in_flight = False
        self._holding = False
        self._landed = asyncio.Event()

    def end(self, ending: Ending) -> None:
        self._idle = False  # from here on frames queue for the reader, which is about to be cancelled
        if not self._ended.done():
            self._ended.set_result(ending)
        self._direct = False  # from here on everything goes through the channel and the (draining) writer
        self.session.detach_sink(self)

    async def run(self) -> Ending:
        """Pump both ways until either side ends, then close the session and the socket, always."""
        reader = self._spawn(self._read(), "read")
        writer = self.writer = self._spawn(self._write(), "write")
        self.session.attach_sink(self)
        if self.direct is not None:
            self.direct.receiver = self._hear_now
        ending = Ending(1011, "internal_error", drain=False)
        try:
            ending = await self._ended
        finally:
            self._idle = False
            if self.direct is not None:
                self.direct.receiver = None
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if (pending := self._pending) is not None and asyncio.iscoroutine(pending):
                pending.close()  # the reader never reached it: the session is closing anyway
            if not ending.drain or ending.code is None:
                self._sending = False
            if writer.done():  # it ended early (or failed): keep draining, or closing the session could block
                self._sending = False
                writer = self._spawn(self._write(), "drain")
            await self.transport.engine.close_session(self.session, ending.reason, resumable=ending.resumable)
            await asyncio.wait({writer}, timeout=DRAIN_S)  # it stops at the channel's end (``closed``)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if ending.code is not None:
                await close_quietly(self.ws, ending.code, ending.reason)
        return ending

    def _spawn(self, work: Coroutine[Any, Any, None], role: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"{self.session.id}-ws-{role}")
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("ws_task_failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")
            self.end(Ending(1011, "internal_error", drain=False))

    # ------------------------------------------------------------------------------------ reader

    async def _read(self) -> None:
        self.end(await self._read_until_done())

    async def _read_until_done(self) -> Ending:
        limit = self.settings.max_message_bytes
        receive, feed_audio = self._receive, self.session.feed_audio
        while True:
            self._idle = True
            try:
                message = await receive()
            finally:
                self._idle = False
            data: bytes | None = message.get("bytes")
            text: str | None = None
            if data is not None:
                size = len(data)
                if size <= limit and not size & 1:  # the hot path: 50 messages a second per talking client
                    self.messages_in += 1
                    self.bytes_in += size
                    try:
                        if (rest := feed_audio(data)) is not None:  # most frames need nothing awaited
                            await rest
                    except SessionClosed:
                        return ending_for_session(self.session)
                    continue
            elif message["type"] == AWAIT_MESSAGE:  # the rest of a frame ``_hear_now`` heard
                try:
                    await message["awaitable"]
                except SessionClosed:
                    return ending_for_session(self.session)
                finally:
                    self._pending = None
                continue
            elif message["type"] == "websocket.disconnect":
                self.ws.client_state = WebSocketState.DISCONNECTED
                return Ending(None, "client_disconnected", resumable=True)
            else:
                text = message.get("text")
                size = len((text or "").encode())
            self.messages_in += 1
            self.bytes_in += size
            if (ending := await self._on_other_message(data, text, size, limit)) is not None:
                return ending

    def _hear_now(self, data: bytes) -> bool | Awaitable[None]:
        """The server's direct receiver: hear a well-formed audio frame as it is parsed, if nothing is ahead.

        Called only while nothing waits in the ASGI queue; declining (False) sends the frame that way, to
        the reader, in order: when the reader is busy with a message, and for anything but a plain frame.
        What hearing leaves to await goes back as the awaitable, which the reader awaits before the next.
        """
        if not self._idle:
            return False
        size = len(data)
        if size > self.settings.max_message_bytes or size & 1:
            return False
        try:
            rest = self.session.feed_audio(data)
        except SessionClosed:
            return False  # the reader meets it again and ends the connection
        self.messages_in += 1
        self.heard_direct += 1
        self.bytes_in += size
        if rest is None:
            return True
        self._idle = False  # until the reader has awaited the rest, later frames queue behind it
        self._pending = rest
        return rest

    async def _on_other_message(self, data: bytes | None, text: str | None, size: int, limit: int) -> Ending | None:
        """Everything but a well-formed audio frame: text messages, oversized or odd-length binaries."""
        try:
            if size > limit:
                await self.session.report_error(
                    "message_too_large", f"messages are limited to {limit} bytes; got {size}", fatal=True)
                return Ending(1009, "message_too_large")
            if data is not None:  # odd length: whole samples go on, the odd byte is carried over
                if not self._odd_reported:
                    await self._report_odd()
                await self.session.send_audio(data)
            elif text is not None:
                return await self._on_text(text)
        except BadInput as exc:
            await self.session.report_error(exc.code, exc.message)
        except SessionClosed:
            return ending_for_session(self.session)
        return None

    async def _report_odd(self) -> None:
        self._odd_reported = True  # once per session: the session carries the odd byte over
        await self.session.report_error(
            "odd_length_pcm", "binary messages should hold whole 16-bit samples; an odd byte was carried over")

    async def _on_text(self, text: str) -> Ending | None:
        message = parse_message(text)
        session = self.session
        if isinstance(message, StartMessage):
            try:
                session.set_input_sample_rate(message.sample_rate)
            except ValueError as exc:
                raise BadInput("unsupported_sample_rate", str(exc)) from None
            await self._emit(session.ready_event())
        elif isinstance(message, TextMessage):
            if len(message.text) > self.settings.max_text_chars:
                raise BadInput("invalid_field", f"text.text: longer than {self.settings.max_text_chars} characters")
            await session.send_text(message.text)
        elif isinstance(message, InterruptMessage):
            await session.interrupt("client")
        else:
            return Ending(1000, "client_end")
        return None

    async def _emit(self, event: Event) -> None:
        try:
            await self.session.events.put(event)
        except ChannelClosed:
            raise SessionClosed(self.session.id) from None

    # ------------------------------------------------------------------------------------ writer
    #
    # Events reach the socket two ways. While nothing is queued, the producer (the reply's player, the
    # reader, the STT task) sends its event itself through ``take``: no writer wake-up, and one message
    # per wake-up of the producer, like a bare echo. Once anything is queued, or a send is in flight, new
    # events go into the session's channel and the writer sends them in order. ``_holding`` (the writer has
    # an event it has taken from the channel but not yet sent) and ``_in_flight`` (a direct send is
    # waiting on the socket) are what keep the two ways from overtaking each other.

    def can_take(self) -> bool:
        return self._direct and not self._in_flight and not self._holding

    def take(self, event: Event) -> Awaitable[None]:
        """Send one event now (the producers' way and the writer's): the only place frames are written.

        Not a coroutine: with direct frames a message the socket can take at once is written here and a
        finished future comes back, so most frames cost no coroutine at all.
        """
        if not self._sending:
            return self._done  # the client cannot take more: drop, as the writer does when it only drains
        data: bytes | str
        if type(event) is AudioOut:
            data = event.pcm
        else:
            data = json.dumps(event.to_wire(), separators=(",", ":"), ensure_ascii=False, default=str)
        direct = self.direct
        if direct is not None and direct.send(data):
            self.bytes_out += len(data)
            return self._done
        return self._send(data)

    async def _send(self, data: bytes | str) -> None:
        message: dict[str, Any] = {"type": "websocket.send", "bytes": data} if type(data) is bytes else {
            "type": "websocket.send", "text": data}
        self._in_flight = True
        self.send_started = time.monotonic()  # the transport's watchdog closes a send stuck past the timeout
        try:
            await self._send_asgi(message)
        except (WebSocketDisconnect, OSError, RuntimeError):
            self.ws.application_state = WebSocketState.DISCONNECTED
            self._sending = False
            self.end(Ending(None, "client_disconnected", resumable=True))
        else:
            self.bytes_out += len(data)
        finally:
            self.send_started = None
            self._in_flight = False
            if self._holding:
                self._landed.set()

    async def _write(self) -> None:
        """Send every queued event in order; once the client cannot take more, keep draining so producers never block."""
        while (event := await self.session.events.get()) is not None:
            self._holding = True
            try:
                while self._in_flight:  # a direct send went first and is still on its way
                    self._landed.clear()
                    await self._landed.wait()
                await self.take(event)
            finally:
                self._holding = False
        self.end(ending_for_session(self.session))

    def check_slow(self, clock: float) -> None:
        """Called about once a second: a client that has not taken one message for ``send_timeout_s`` goes.

        One watchdog for every connection costs less than a timer around each of the ~100 sends a second
        of every session.
        """
        started = self.send_started
        if started is None or not self._sending or clock - started < self.settings.send_timeout_s:
            return
        self._sending = False
        self.log.warning("ws_slow_client", send_timeout_s=self.settings.send_timeout_s,
                         queued=len(self.session.events))
        self.transport.slow_client_closes += 1
        self.end(Ending(1008, "slow_client", drain=False, resumable=True))
        if self.writer is not None:
            self.writer.cancel()  # it is stuck in send; run() drains the session with a fresh writer


async def close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    """Send a close frame if the socket still takes one; a stuck or gone client is not an error here."""
    try:
        async with asyncio.timeout(CLOSE_S):
            await ws.close(code, reason[:120])
    except (TimeoutError, WebSocketDisconnect, OSError, RuntimeError):
        pass


# ----------------------------------------------------------------------------------- the transport


class WebSocketTransport(Transport):
    name: ClassVar[str] = "websocket"
    Settings: ClassVar[type[ProviderSettings]] = WebSocketSettings
    settings: WebSocketSettings

    def __init__(self, engine: Any, settings: ProviderSettings | None = None) -> None:
        super().__init__(engine, settings)
        self.live: set[asyncio.Task[Any]] = set()
        self.connections: set[Connection] = set()
        self.connections_total = self.refused_total = self.slow_client_closes = 0
        self._watchdog: asyncio.Task[None] | None = None

    async def _watch_slow_clients(self) -> None:
        period = min(1.0, self.settings.send_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            clock = time.monotonic()
            for connection in list(self.connections):
                connection.check_slow(clock)

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(self.settings.path, AudioEndpoint(self))]

    async def endpoint(self, ws: WebSocket, receive: Receive, send: Send, direct: DirectFrames | None = None) -> None:
        try:  # origin, rate limit and token are checked before accepting: a refused client costs nothing
            admission = await admit_websocket(self.engine.gate, ws)
        except Refused as refused:
            return await self.deny(ws, refused)
        await ws.accept()
        try:
            rate = requested_rate(ws.query_params.get("sample_rate"))
            async with asyncio.timeout(self.settings.open_timeout_s):
                session = await self.engine.open_session(
                    transport=self.name, input_sample_rate=rate, admission=admission)
        except BadInput as exc:
            await self.engine.gate.release(admission)
            return await self.refuse(ws, exc.code, exc.message, 1008)
        except ValueError as exc:
            await self.engine.gate.release(admission)
            return await self.refuse(ws, "unsupported_sample_rate", str(exc), 1008)
        except CapacityError as exc:
            return await self.refuse(ws, "capacity", str(exc), 1013)
        except (NotReady, TimeoutError) as exc:
            return await self.refuse(ws, "not_ready", f"the server is not ready: {exc}".rstrip(": "), 1013)
        await self.serve(ws, session, receive, send, direct)

    async def serve(self, ws: WebSocket, session: Session, receive: Receive, send: Send,
                    direct: DirectFrames | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.live.add(task)
        self.connections_total += 1
        connection = Connection(self, ws, session, receive, send, direct if isinstance(direct, DirectFrames) else None)
        self.connections.add(connection)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch_slow_clients(), name="ws-slow-clients")
        started = time.monotonic()
        connection.log.info("ws_connected", input_sample_rate=session.input_sample_rate)
        ending = Ending(1011, "internal_error")
        try:
            ending = await connection.run()
        finally:
            self.live.discard(task)
            self.connections.discard(connection)
            if not self.connections and self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            connection.log.info(
                "ws_closed", code=ending.code, reason=ending.reason, seconds=round(time.monotonic() - started, 2),
                messages_in=connection.messages_in, heard_direct=connection.heard_direct, bytes_in=connection.bytes_in,
                bytes_out=connection.bytes_out)

    async def deny(self, ws: WebSocket, refused: Refused) -> None:
        """Refuse the handshake with an HTTP status and a JSON body (scripts can read it; browsers see 1006)."""
        self.refused_total += 1
        log.info("ws_refused", reason=refused.code, status=refused.status)
        body = {"type": "error", "code": refused.code, "message": refused.reason, "fatal": True}
        try:
            await ws.send_denial_response(JSONResponse(body, status_code=refused.status, headers=refused.headers))
        except RuntimeError:  # the server cannot send HTTP responses on a WebSocket route
            await ws.close(refused.close_code, refused.code)

    async def refuse(self, ws: WebSocket, code: str, message: str, close_code: int) -> None:
        """Turn a connection away with an ``error`` event and a close code, without opening a session."""
        self.refused_total += 1
        log.info("ws_refused", reason=code, close_code=close_code)
        try:
            async with asyncio.timeout(CLOSE_S):
                await ws.send_text(json.dumps({"type": "error", "code": code, "message": message, "fatal": True}))
        except (TimeoutError, WebSocketDisconnect, OSError, RuntimeError):
            return
        await close_quietly(ws, close_code, code)

    async def aclose(self) -> None:
        """The engine has closed every session; give their connections a moment to send the close frames."""
        if self.live:
            await asyncio.wait(set(self.live), timeout=DRAIN_S + CLOSE_S)

    def stats(self) -> dict[str, Any]:
        return {"connections": len(self.live), "connections_total": self.connections_total,
                "refused_total": self.refused_total, "slow_client_closes": self.slow_client_closes}

    def client_config(self) -> dict[str, Any]:
        settings = self.settings
        return {"path": settings.path, "max_message_bytes": settings.max_message_bytes}


class AudioEndpoint:
    """The route's ASGI app (a class, so Starlette passes ``receive`` and ``send`` through untouched)."""

    __slots__ = ("transport",)

    def __init__(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive=receive, send=send)  # handshake and close, through every middleware
        direct = scope.get("extensions", {}).get(DIRECT_FRAMES)  # offered by ``vocable serve``'s server
        await self.transport.endpoint(ws, receive, scope.get(WIRE_SEND, send), direct)  # frames: the server's own


@hookimpl
def register_transports(register: Callable[[type], None]) -> None:
    register(WebSocketTransport)
