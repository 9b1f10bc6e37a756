"""Phone calls over a carrier's media streams: the part every carrier shares (docs/telephony.md).

A carrier (Twilio, Telnyx, Plivo) calls ``POST <webhook_path>`` when a call comes in; the answer tells it to
open a WebSocket to ``<stream_path>`` and stream the call's audio both ways as JSON messages. One stream is
one engine session, opened when the carrier's ``start`` message arrives, with the call (``PhoneCall``) bound
for every task of the session (``current_call()``).

Per stream, two tasks: the reader (G.711 in -> PCM16 at 16 kHz -> ``session.feed_audio``; marks, DTMF,
stop) and the pump (the session's events -> ``MarkedPlayout`` -> media, mark and clear messages). Reply
audio leaves as the session paces it (real time plus ``pipeline.output.lead_ms``); the carrier's own
buffer is accounted for by marks. However the stream ends (``stop``, the caller gone, the session ending,
``end_call``, shutdown) both tasks end, the session is closed through the engine, and the socket closed.

At over 600 lines this is one of vocable's longest modules: it is what every carrier shares, so that each
carrier's module holds only its dialect, and a stream's reader and pump keep one call's state (marks,
clears, DTMF, what was heard) together.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib.util
import json
import secrets
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import structlog
from pydantic import Field
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from vocable.config.loader import ConfigError
from vocable.engine.engine import CapacityError, NotReady
from vocable.engine.events import AudioOut, Closed, Event, Interrupted, MetricsEvent, Paused, Resumed
from vocable.engine.gate import Refused
from vocable.engine.session import Session, SessionClosed
from vocable.engine.tools import ToolSpec, tool_spec
from vocable.providers.base import ProviderSettings
from vocable.transports.base import WIRE_SEND, Transport
from vocable.transports.direct_frames import AWAIT_MESSAGE, DIRECT_FRAMES, DirectFrames
from vocable.transports.phone import hookspecs
from vocable.transports.phone.call import PhoneCall, bind, current_call, unbind
from vocable.transports.phone.codec import PhoneAudioIn
from vocable.transports.phone.dialect import Dialect, Inbound, Reorder, StreamStart, load_json
from vocable.transports.phone.playout import MarkedPlayout, Out
from vocable.transports.protocol import BadInput

log = structlog.get_logger("vocable.phone")

CLOSE_S = 2.0
DIGITS = frozenset("0123456789*#ABCD")
LOGGED_BAD = 20  # bad messages logged per stream in full; after that every 100th (a flood must not flood logs)


class DtmfSettings(ProviderSettings):
    as_text: bool = Field(default=False, description="also add the digits to the conversation as a user turn")
    collect_ms: int = Field(default=1500, ge=0, description="with as_text: digits pressed within this of each "
                                                            "other make one turn (# ends it at once)")
    template: str = Field(default="The caller pressed {digits} on the keypad.",
                          description="with as_text: the turn's text; {digits} is replaced")


class EndCallSettings(ProviderSettings):
    enabled: bool = Field(default=True, description="offer the built-in end_call tool on phone sessions")
    wait_s: float = Field(default=10.0, gt=0, description="longest wait for the goodbye to be heard")


class PhoneSettings(ProviderSettings):
    public_url: str = Field(pattern=r"^https?://[^/?#]+", description="where the carrier reaches this server, "
                            "e.g. https://voice.example.com (the signatures are computed on it)")
    webhook_path: str = Field(default="/phone/voice", pattern=r"^/")
    stream_path: str = Field(default="/phone/stream", pattern=r"^/")
    call_path: str = Field(default="/phone/call", pattern=r"^/")
    api_base_url: str | None = Field(default=None, description="the carrier's REST API (override for tests)")
    from_number: str | None = Field(default=None, description="the caller id of outbound calls")
    mark_interval_ms: int = Field(default=200, ge=0, description="a mark this often within a piece of reply "
                                  "text too (0: marks only between pieces)")
    start_timeout_s: float = Field(default=10.0, gt=0, description="a stream without `start` by then is closed")
    max_message_bytes: int = Field(default=64 * 1024, ge=1024)
    send_timeout_s: float = Field(default=10.0, gt=0, description="a carrier that takes longer to accept one "
                                  "message is gone: the call ends (slow_client)")
    reorder_window: int = Field(default=8, ge=1, description="messages held while an earlier one is missing")
    dtmf: DtmfSettings = Field(default_factory=DtmfSettings)
    end_call: EndCallSettings = Field(default_factory=EndCallSettings)


# ----------------------------------------------------------------------------------- end_call


async def end_call() -> dict[str, str]:
    """Hang up: the call ends once this reply (say a short goodbye in it) has been heard."""
    call = current_call()
    if call is None:
        return {"error": "this conversation is not a phone call"}
    call.ending = True
    return {"status": "the call will end after this reply: say a short goodbye now"}


END_CALL: ToolSpec = tool_spec(
    end_call, name="end_call",
    description="End the phone call when the conversation is over. Say a short goodbye in the same reply.")


# ----------------------------------------------------------------------------------- one stream


class Gone(Exception):
    """The carrier's socket cannot take more."""


class MediaStream:
    """One carrier WebSocket: one call, one session."""

    def __init__(self, transport: PhoneTransport, ws: WebSocket, receive: Receive, send: Send,
                 direct: DirectFrames | None = None) -> None:
        self.transport = transport
        self.direct = direct
        self.settings: PhoneSettings = transport.settings
        self.engine = transport.engine
        self.ws = ws
        self._receive = receive
        self._send_asgi = send
        self.dialect = transport.dialect()
        self.reorder = Reorder(self.settings.reorder_window) if self.dialect.reorder else None
        self.log = log.bind(carrier=transport.name)
        self.session: Session | None = None
        self.call: PhoneCall | None = None
        self.playout: MarkedPlayout | None = None
        self.bad_messages = self.messages_in = self.frames_out = 0
        self._decode: Callable[[bytes], bytes] = PhoneAudioIn("mulaw")  # G.711 -> PCM16 at 16 kHz
        self._tasks: set[asyncio.Task[Any]] = set()
        self._finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._dtmf_buffer: list[str] = []
        self._idle = False  # the reader waits in ``receive`` with nothing in hand: a frame may be heard at once
        self._pending: Awaitable[None] | None = None  # what ``_hear_now`` left for the reader to await
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self._gone = False  # the carrier's socket takes no more: events are dropped
        self._in_flight = self._holding = False
        self._landed = asyncio.Event()
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # what a write done returns
        self._done.set_result(None)

    # ------------------------------------------------------------------------------- the whole life

    async def run(self) -> str:
        reason = "closed"
        token = None
        try:
            start = await self._wait_start()
            if start is None:
                return "no_start"
            call = self.call = self.transport.make_call(start)
            token = bind(call)  # every task the session starts inherits the call
            session = await self._open(start)
            if session is None:
                return "refused"
            reader = self._spawn(self._read(), "read")
            pump = self._spawn(self._pump(), "pump")
            await asyncio.wait({reader, pump, self._finished}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, pump):
                if task.done() and not task.cancelled() and task.exception() is None:
                    reason = task.result()
                    break
            else:
                reason = self._finished.result() if self._finished.done() else "internal_error"
        finally:
            await self._teardown(reason)
            if token is not None:
                unbind(token)
        return reason

    async def _open(self, start: StreamStart) -> Session | None:
        try:
            session = await self.engine.open_session(transport=self.transport.name,
                                                     input_sample_rate=PhoneAudioIn.RATE)
        except CapacityError as exc:
            self.log.warning("phone_refused", reason="capacity", error=str(exc))
            await self._close(1013, "capacity")
            return None
        except (NotReady, TimeoutError, ValueError) as exc:
            self.log.warning("phone_refused", reason="not_ready", error=str(exc))
            await self._close(1013, "not_ready")
            return None
        self.session = session
        self.log = self.log.bind(session_id=session.id)
        assert self.call is not None
        session.details.update(self.call.summary())
        playout = self.playout = MarkedPlayout(
            session.output_sample_rate, "alaw" if start.encoding == "alaw" else "mulaw",
            mark_interval_ms=self.settings.mark_interval_ms, segments=session.reply_segments)
        session.attach_playout(playout)
        if self.settings.end_call.enabled:
            session.offer_tool(END_CALL)
        self.log.info("phone_call_started", call=self.call.summary(), encoding=start.encoding)
        return session

    def _spawn(self, work: Any, role: str) -> asyncio.Task[Any]:
        name = f"{self.session.id if self.session else 'phone'}-{self.transport.name}-{role}"
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("phone_task_failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")
            self.finish("internal_error")

    def finish(self, reason: str) -> None:
        if not self._finished.done():
            self._finished.set_result(reason)

    async def _teardown(self, reason: str) -> None:
        self._idle = False
        if self.direct is not None:
            self.direct.text_receiver = None
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if (pending := self._pending) is not None and asyncio.iscoroutine(pending):
            pending.close()  # the reader never reached it: the session is closing anyway
        if self.session is not None:
            await self.engine.close_session(self.session, reason)
            self.log.info("phone_call_ended", reason=reason, messages_in=self.messages_in,
                          frames_out=self.frames_out, bad_messages=self.bad_messages,
                          marks_acked=self.playout.marks_acked if self.playout else 0)
        await self._close(1000, reason)

    async def _close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_S):
                await self.ws.close(code, reason[:120])
        except (TimeoutError, WebSocketDisconnect, OSError, RuntimeError):
            pass

    # ------------------------------------------------------------------------------- inbound

    async def _next(self) -> bytes | list[Inbound] | str:
        """The next inbound messages in order (reordered where the carrier needs it), or why the stream ended."""
        while (got := self._judge(await self._receive())) is None:
            pass
        return got

    def _judge(self, message: Message) -> bytes | list[Inbound] | str | None:
        """One received ASGI message: a media payload of this stream (the hot path, 50 a second, recognised
        without parsing its JSON where the dialect can), the messages it makes ready, why the stream ended,
        or None (nothing ready: a bad message, or one held back for reordering)."""
        if message["type"] == "websocket.disconnect":
            return "caller_gone"
        self.messages_in += 1
        text = message.get("text")
        if text is not None and self.reorder is None and (payload := self.dialect.fast_media(text.encode())) is not None:
            return payload
        size = len(text) if text is not None else len(message.get("bytes") or b"")
        try:
            if size > self.settings.max_message_bytes:
                raise BadInput("message_too_large", f"{size} bytes; the limit is {self.settings.max_message_bytes}")
            inbound = self.dialect.parse(load_json(text))
        except BadInput as exc:
            self.bad(exc.code, exc.message)
            return None
        if self.reorder is None:
            return [inbound]
        return self.reorder.push(inbound) or None

    def bad(self, code: str, message: str) -> None:
        """A malformed, unexpected or out-of-order message: logged (with what is wrong) and dropped."""
        self.bad_messages += 1
        self.transport.bad_messages_total += 1
        if self.bad_messages <= LOGGED_BAD or self.bad_messages % 100 == 0:
            self.log.warning("phone_bad_message", code=code, error=message, count=self.bad_messages)

    async def _wait_start(self) -> StreamStart | None:
        try:
            async with asyncio.timeout(self.settings.start_timeout_s):
                while True:
                    got = await self._next()
                    if isinstance(got, str):
                        self.log.info("phone_stream_ended_before_start", reason=got)
                        return None
                    for inbound in got:
                        if inbound.kind == "start" and inbound.start is not None:
                            self.dialect.bind(inbound.start.stream_id)
                            self._decode = PhoneAudioIn("alaw" if inbound.start.encoding == "alaw" else "mulaw")
                            return inbound.start
                        if inbound.kind == "stop":
                            return None
                        if inbound.kind not in ("connected", "ignored"):
                            self.bad("out_of_order", f"{inbound.kind} before start")
        except TimeoutError:
            self.log.warning("phone_bad_message", code="no_start",
                             error=f"no start message within {self.settings.start_timeout_s:g} s")
            await self._close(1008, "no_start")
            return None

    async def _read(self) -> str:
        session = self.session
        assert session is not None and self.call is not None and self.playout is not None
        feed, decode, receive, judge = session.feed_audio, self._decode, self._receive, self._judge
        if self.direct is not None and self.reorder is None:
            self.direct.text_receiver = self._hear_now
        while True:
            self._idle = True
            try:
                message = await receive()
            finally:
                self._idle = False
            if message["type"] == AWAIT_MESSAGE:  # the rest of a frame ``_hear_now`` heard
                try:
                    await message["awaitable"]
                except SessionClosed:
                    return session.close_reason or "closed"
                finally:
                    self._pending = None
                continue
            got = judge(message)
            if got is None:
                continue
            if type(got) is bytes:  # the hot path: one media frame
                try:
                    if (rest := feed(decode(got))) is not None:
                        await rest
                except SessionClosed:
                    return session.close_reason or "closed"
                continue
            if isinstance(got, str):
                if self.reorder is not None:
                    for inbound in self.reorder.flush():
                        await self._handle(inbound, feed, decode)
                return got
            for inbound in got:  # type: ignore[union-attr]
                if inbound.kind == "media":
                    try:
                        if (rest := feed(decode(inbound.payload))) is not None:  # type: ignore[arg-type]
                            await rest
                    except SessionClosed:
                        return session.close_reason or "closed"
                elif (ended := await self._handle(inbound, feed, decode)) is not None:
                    return ended

    def _hear_now(self, data: bytes) -> bool | Awaitable[None]:
        """Direct frames' text receiver: hear a media message as the server parses it, while the reader waits
        with nothing in hand (so nothing is reordered); anything else, or a busy reader: False, the ASGI way.
        What hearing leaves to await goes back as an awaitable, which the reader awaits before the next."""
        if not self._idle or (payload := self.dialect.fast_media(data)) is None:
            return False
        try:
            rest = self.session.feed_audio(self._decode(payload))  # type: ignore[union-attr]
        except SessionClosed:
            return False  # the reader meets it again and ends the stream
        self.messages_in += 1
        self.transport.heard_direct_total += 1
        if rest is None:
            return True
        self._idle = False  # until the reader has awaited the rest, later frames queue behind it
        self._pending = rest
        return rest

    async def _handle(self, inbound: Inbound, feed: Any, decode: Any) -> str | None:
        kind = inbound.kind
        try:
            if kind == "media":
                if (rest := feed(decode(inbound.payload))) is not None:
                    await rest
            elif kind == "mark":
                if not self.playout.acknowledged(inbound.mark):  # type: ignore[union-attr, arg-type]
                    self.log.debug("phone_mark_ignored", mark=inbound.mark)
            elif kind == "dtmf":
                await self._on_digit(inbound.digit or "")
            elif kind == "stop":
                return "call_ended"
            elif kind == "start":
                self.bad("out_of_order", "start: this stream has already started")
        except SessionClosed:
            return self.session.close_reason or "closed"  # type: ignore[union-attr]
        return None

    # ------------------------------------------------------------------------------- DTMF

    async def _on_digit(self, digit: str) -> None:
        if digit not in DIGITS:
            self.bad("invalid_field", f"dtmf: {digit!r} is not a key")
            return
        call, session = self.call, self.session
        assert call is not None and session is not None
        call.add_digit(digit)
        self.log.info("phone_dtmf", digits=len(call.digits))  # not the digit itself: it may be a PIN
        await hookspecs.notify_dtmf(self.engine.host, session=session, call=call, digit=digit)
        options = self.settings.dtmf
        if not options.as_text:
            return
        self._dtmf_buffer.append(digit)
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
            self._dtmf_timer = None
        if digit == "#" or options.collect_ms == 0:
            await self._dtmf_turn()
        else:
            loop = asyncio.get_running_loop()
            self._dtmf_timer = loop.call_later(options.collect_ms / 1000, self._dtmf_due)

    def _dtmf_due(self) -> None:
        self._dtmf_timer = None
        self._spawn(self._dtmf_turn(), "dtmf")

    async def _dtmf_turn(self) -> None:
        digits, self._dtmf_buffer = self._dtmf_buffer, []
        if digits and self.session is not None and not self.session.closed:
            text = self.settings.dtmf.template.replace("{digits}", " ".join(digits))
            try:
                await self.session.send_text(text)
            except SessionClosed:
                pass

    # ------------------------------------------------------------------------------- outbound

    # Events reach the carrier two ways, as on the WebSocket transport: while nothing is queued, the producer
    # (the reply's player, the session) hands its event to ``take`` (the session's sink), which writes it at
    # once: no pump wake-up per 20 ms frame. Once anything is queued, or a write is in flight, events go into
    # the session's channel and the pump writes them in order. ``_holding`` (the pump has an event in hand)
    # and ``_in_flight`` (a write waits on the socket) keep the two ways from overtaking each other.

    def can_take(self) -> bool:
        return not self._gone and not self._in_flight and not self._holding

    def take(self, event: Event) -> Awaitable[None]:
        pending = self._write(self._outgoing(event))
        return self._done if pending is None else pending

    def _outgoing(self, event: Event) -> list[Out]:
        """What the carrier is sent for one session event (nothing, for events a phone has no use for)."""
        playout, call = self.playout, self.call
        assert playout is not None and call is not None
        kind = type(event)
        if kind is AudioOut:
            return playout.audio(event)  # type: ignore[arg-type]
        if kind is Paused:
            return playout.pause()
        if kind is Resumed:
            return playout.resume()
        if kind is Interrupted:
            return playout.interrupt(event.turn_id)  # type: ignore[attr-defined]
        if kind is MetricsEvent:
            if call.ending and not call.ended:
                self._spawn(self._hang_up_when_heard(), "hangup")
            return playout.reply_done(event.turn_id)  # type: ignore[attr-defined]
        return []

    def _write(self, out: list[Out]) -> Awaitable[None] | None:
        """Write ``out`` in order: at once while the socket takes it, the rest in a coroutine (returned)."""
        for i, item in enumerate(out):
            if self._gone:
                return None
            if (pending := self._send(item)) is not None:
                return self._write_rest(pending, out[i + 1 :])
        return None

    async def _write_rest(self, pending: Awaitable[None], rest: list[Out]) -> None:
        self._in_flight = True
        try:
            await pending
            for item in rest:
                if (more := self._send(item)) is not None:
                    await more
        except Gone:
            self._gone = True
            self.finish("caller_gone")
        finally:
            self._in_flight = False
            self._landed.set()

    async def _pump(self) -> str:
        session = self.session
        assert session is not None
        reason = "closed"
        session.attach_sink(self)
        try:
            while (event := await session.events.get()) is not None:
                if type(event) is Closed:
                    reason = event.reason  # type: ignore[attr-defined]
                    continue
                self._holding = True
                try:
                    while self._in_flight:  # a write the producer started is still on its way
                        self._landed.clear()
                        await self._landed.wait()
                    if (pending := self._write(self._outgoing(event))) is not None:
                        await pending
                finally:
                    self._holding = False
                if self._gone:
                    return self._finished.result() if self._finished.done() else "caller_gone"
        finally:
            session.detach_sink(self)
        return reason

    def _send(self, item: Out) -> Awaitable[None] | None:
        """Send one message: written at once through direct frames when the server offers them and the socket
        takes it (no coroutine, no queue), else through ASGI (what is left to await)."""
        dialect = self.dialect
        if item[0] == "media":
            text = dialect.media(item[1])  # type: ignore[arg-type]
            self.frames_out += 1
        elif item[0] == "mark":
            text = dialect.mark(item[1])  # type: ignore[arg-type]
        else:
            text = dialect.clear()
            self.log.debug("phone_clear")
        if self.direct is not None and self.direct.send(text):
            return None
        return self._send_by_asgi(text)

    async def _send_by_asgi(self, text: str) -> None:
        """The slow way (the socket cannot take the message now, or no direct frames): bounded in time, so a
        carrier that stops reading cannot hold the call, its session and its tasks for ever."""
        try:
            async with asyncio.timeout(self.settings.send_timeout_s):
                await self._send_asgi({"type": "websocket.send", "text": text})
        except TimeoutError:
            self.log.warning("phone_slow_carrier", send_timeout_s=self.settings.send_timeout_s)
            self.finish("slow_client")
            raise Gone from None
        except (WebSocketDisconnect, OSError, RuntimeError):
            raise Gone from None

    async def _hang_up_when_heard(self) -> None:
        """``end_call``: wait until the goodbye's last mark is echoed (or ``end_call.wait_s``), then hang up."""
        assert self.call is not None and self.playout is not None
        try:
            async with asyncio.timeout(self.settings.end_call.wait_s):
                await self.playout.heard.wait()
        except TimeoutError:
            self.log.info("phone_goodbye_not_acknowledged", wait_s=self.settings.end_call.wait_s)
        try:
            await self.call.hangup()
            self.log.info("phone_hung_up", call_id=self.call.call_id)
        except Exception as exc:  # noqa: BLE001 - the REST API's failure must not keep the stream open
            self.log.warning("phone_hangup_failed", error=f"{type(exc).__name__}: {exc}")
        self.finish("end_call")


async def rest_request(method: str, url: str, *, headers: dict[str, str] | None = None,
                       json_body: Any = None, auth: tuple[str, str] | None = None, timeout_s: float = 10.0) -> Any:
    """One call to a carrier's REST API (aiohttp, from the ``phone`` extra): its JSON answer, or RuntimeError
    naming the status (never the credentials)."""
    import aiohttp

    headers = dict(headers or {})
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as client:
        async with client.request(method, url, headers=headers, json=json_body) as response:
            text = await response.text()
            if response.status >= 400:
                raise RuntimeError(f"{method} {urlsplit(url).path}: HTTP {response.status}")
            try:
                return json.loads(text) if text else {}
            except ValueError:
                return {}


# ----------------------------------------------------------------------------------- the transport


class PhoneTransport(Transport):
    """A carrier's webhook, media stream and outbound-call routes. Subclasses speak one carrier."""

    name: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]] = PhoneSettings
    dialect_class: ClassVar[type[Dialect]]
    requires: ClassVar[tuple[str, ...]] = ("aiohttp",)  # modules it imports when a call needs them
    settings: PhoneSettings

    def __init__(self, engine: Any, settings: ProviderSettings | None = None) -> None:
        missing = [module for module in self.requires if importlib.util.find_spec(module) is None]
        if missing:  # an install hint when the config is read, not a 500 on the first call
            raise ConfigError([(f"transports.{self.name}", f"needs {', '.join(missing)}: pip install 'vocable[phone]'")])
        super().__init__(engine, settings)
        hookspecs.add_to(engine.host)
        self.live: set[asyncio.Task[Any]] = set()
        self.streams: set[MediaStream] = set()
        self.calls_total = self.refused_total = self.bad_messages_total = 0
        self.heard_direct_total = 0  # media messages heard as the server parsed them (direct frames)
        self._stream_tokens: dict[str, float] = {}  # one-time stream tokens (carriers without stream signatures)

    # ------------------------------------------------------------------------------- carrier specifics

    def dialect(self) -> Dialect:
        """A fresh dialect for one stream (it keeps that stream's id)."""
        return self.dialect_class()

    @abstractmethod
    def verify_webhook(self, request: Request, body: bytes, form: FormData) -> bool:
        """Whether the webhook request really comes from the carrier."""

    @abstractmethod
    def verify_stream(self, ws: WebSocket) -> bool:
        """Whether the WebSocket upgrade really comes from the carrier (checked before accepting)."""

    @abstractmethod
    def answer(self, form: Mapping[str, str]) -> Response:
        """The webhook's answer: connect the call to ``stream_url()``."""

    @abstractmethod
    async def hangup(self, call: PhoneCall) -> None:
        """End ``call`` through the carrier's REST API."""

    @abstractmethod
    async def place_call(self, to: str, from_: str, parameters: dict[str, str]) -> dict[str, Any]:
        """Start an outbound call answered like an incoming one; what the carrier said about it."""

    def make_call(self, start: StreamStart) -> PhoneCall:
        call = PhoneCall(self.name, start.call_id, start.stream_id, start.caller, start.callee,
                         dict(start.parameters), start.encoding)
        call._hangup = lambda: self.hangup(call)
        return call

    # ------------------------------------------------------------------------------- URLs

    def public_url(self, path: str, query: str = "") -> str:
        return self.settings.public_url.rstrip("/") + path + (f"?{query}" if query else "")

    def stream_url(self, query: str = "") -> str:
        """``wss://<public host>/<stream_path>`` (``ws://`` when ``public_url`` is plain http)."""
        parts = urlsplit(self.settings.public_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        prefix = parts.path.rstrip("/")
        return f"{scheme}://{parts.netloc}{prefix}{self.settings.stream_path}" + (f"?{query}" if query else "")

    # ------------------------------------------------------------------------------- one-time stream tokens

    def _token_key(self) -> bytes:
        return hashlib.sha256(b"vocable phone stream|" + self.secret().encode()).digest()

    def secret(self) -> str:
        """The carrier credential stream tokens are derived from."""
        return ""

    def issue_stream_token(self, ttl_s: float = 300.0) -> str:
        """A token for one stream connection, put in the stream URL of an answer the carrier fetched with a
        valid signature (for carriers that do not sign the WebSocket upgrade themselves)."""
        expires = int(time.time() + ttl_s)
        nonce = secrets.token_urlsafe(12)
        mac = hmac.new(self._token_key(), f"{expires}.{nonce}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{expires}.{nonce}.{mac}"

    def check_stream_token(self, token: str | None) -> bool:
        if not token or token.count(".") != 2:
            return False
        expires, nonce, mac = token.split(".")
        good = hmac.new(self._token_key(), f"{expires}.{nonce}".encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, good) or not expires.isdigit() or int(expires) < time.time():
            return False
        now = time.time()
        for used, until in list(self._stream_tokens.items()):
            if until < now:
                del self._stream_tokens[used]
        if nonce in self._stream_tokens:
            return False
        self._stream_tokens[nonce] = float(expires)
        return True

    # ------------------------------------------------------------------------------- routes

    def routes(self) -> list[BaseRoute]:
        s = self.settings
        return [
            Route(s.webhook_path, self.webhook, methods=["POST"]),
            WebSocketRoute(s.stream_path, StreamEndpoint(self)),
            Route(s.call_path, self.outbound, methods=["POST"]),
        ]

    async def webhook(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > self.settings.max_message_bytes:
            return JSONResponse({"error": "too_large"}, status_code=413)
        form = await request.form()
        if not self.verify_webhook(request, body, form):
            self.refused_total += 1
            log.warning("phone_webhook_refused", carrier=self.name, reason="bad_signature")
            return JSONResponse({"error": "forbidden", "message": "bad or missing signature"}, status_code=403)
        return self.answer({k: v for k, v in form.items() if isinstance(v, str)})

    async def outbound(self, request: Request) -> Response:
        """``POST <call_path>`` {"to", "from"?, "parameters"?}: call someone; needs the API key, as ``/session``.

        Unlike ``/session``, a server without ``server.auth`` refuses: an open route would dial out (and spend
        the carrier account's money) for anyone who finds it."""
        gate = self.engine.gate
        if not gate.enabled:
            return JSONResponse({"error": "auth_required", "message": "set server.auth.api_key to place calls"},
                                status_code=403)
        try:
            await gate.check_rate(request.client.host if request.client else None)
            gate.check_api_key(request.headers.get("authorization"))
        except Refused as refused:
            return JSONResponse({"error": refused.code, "message": refused.reason}, status_code=refused.status)
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            data = None
        to = data.get("to") if isinstance(data, dict) else None
        from_ = (data.get("from") if isinstance(data, dict) else None) or self.settings.from_number
        parameters = data.get("parameters", {}) if isinstance(data, dict) else {}
        if not isinstance(to, str) or not to or not isinstance(from_, str) or not isinstance(parameters, dict):
            return JSONResponse({"error": "invalid_field", "message": "a JSON object with a string 'to' (and "
                                 "'from', unless from_number is set) is required"}, status_code=400)
        try:
            placed = await self.place_call(to, from_, {str(k): str(v) for k, v in parameters.items()})
        except Exception as exc:  # noqa: BLE001 - the carrier's answer, whatever it is, goes back as a 502
            log.warning("phone_call_failed", carrier=self.name, error=f"{type(exc).__name__}: {exc}")
            return JSONResponse({"error": "carrier_error", "message": f"{type(exc).__name__}: {exc}"[:300]},
                                status_code=502)
        return JSONResponse(placed)

    async def stream(self, ws: WebSocket, receive: Receive, send: Send, direct: DirectFrames | None = None) -> None:
        if not self.verify_stream(ws):
            self.refused_total += 1
            log.warning("phone_stream_refused", carrier=self.name, reason="bad_signature")
            return await deny(ws, 403, "forbidden", "bad or missing signature")
        try:
            await self.engine.gate.check_rate(ws.client.host if ws.client else None)
        except Refused as refused:
            self.refused_total += 1
            return await deny(ws, refused.status, refused.code, refused.reason)
        await ws.accept()
        task = asyncio.current_task()
        assert task is not None
        self.live.add(task)
        self.calls_total += 1
        stream = MediaStream(self, ws, receive, send, direct if isinstance(direct, DirectFrames) else None)
        self.streams.add(stream)
        try:
            await stream.run()
        finally:
            self.live.discard(task)
            self.streams.discard(stream)

    async def aclose(self) -> None:
        if self.live:
            await asyncio.wait(set(self.live), timeout=CLOSE_S * 2)

    def stats(self) -> dict[str, Any]:
        return {"calls": len(self.live), "calls_total": self.calls_total, "refused_total": self.refused_total,
                "bad_messages_total": self.bad_messages_total, "heard_direct_total": self.heard_direct_total}

    def client_config(self) -> dict[str, Any]:
        s = self.settings
        return {"webhook_path": s.webhook_path, "stream_path": s.stream_path}


async def deny(ws: WebSocket, status: int, code: str, message: str) -> None:
    try:
        await ws.send_denial_response(JSONResponse({"error": code, "message": message}, status_code=status))
    except RuntimeError:  # the server cannot send HTTP responses on a WebSocket route
        await ws.close(1008, code)


class StreamEndpoint:
    """The stream route's ASGI app (a class, so Starlette passes ``receive`` and ``send`` through untouched)."""

    __slots__ = ("transport",)

    def __init__(self, transport: PhoneTransport) -> None:
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.transport.stream(WebSocket(scope, receive=receive, send=send), receive,
                                    scope.get(WIRE_SEND, send), scope.get("extensions", {}).get(DIRECT_FRAMES))

