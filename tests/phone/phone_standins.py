"""Stand-ins for the carriers: a phone network's side of the media stream, and its REST API.

``CarrierCall`` plays the carrier: it signs the WebSocket upgrade as the carrier does, sends the call's
messages in the carrier's exact JSON shapes (20 ms G.711 frames at real time), and plays what the server
sends on its own clock: reply audio is queued and consumed at real time, a mark is echoed only once the
audio queued before it has played, and a clear drops the queued audio and echoes the marks it held (as
the real carriers do). What was played is kept, with timestamps, for the tests to check.

``RestStandIn`` is a small HTTP server on 127.0.0.1 that records the REST calls (hang-up, outbound call).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import websockets

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME = 160  # 20 ms of 8 kHz G.711


def ulaw(pcm8k: bytes) -> bytes:
    return audioop.lin2ulaw(pcm8k, 2)


def alaw(pcm8k: bytes) -> bytes:
    return audioop.lin2alaw(pcm8k, 2)


def to_pcm(data: bytes, encoding: str = "mulaw") -> bytes:
    return audioop.ulaw2lin(data, 2) if encoding == "mulaw" else audioop.alaw2lin(data, 2)


@dataclass
class Played:
    at: float
    audio: bytes


class Carrier:
    """The JSON one carrier speaks; ``CarrierCall`` asks it for every message it sends and reads."""

    name = "carrier"
    echo_marks_on_clear = True

    def __init__(self, stream_id: str, call_id: str, parameters: dict[str, str], encoding: str = "mulaw") -> None:
        self.stream_id = stream_id
        self.call_id = call_id
        self.parameters = parameters
        self.encoding = encoding
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def cleared(self) -> list[dict[str, Any]]:
        """What the carrier says after a clear, beside echoing marks."""
        return []


class TwilioCarrier(Carrier):
    name = "twilio"

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start(self) -> dict[str, Any]:
        return {"event": "start", "sequenceNumber": str(self.next_seq()), "streamSid": self.stream_id, "start": {
            "accountSid": "AC" + "0" * 32, "streamSid": self.stream_id, "callSid": self.call_id,
            "tracks": ["inbound"], "customParameters": self.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}

    def media(self, payload: bytes, chunk: int, timestamp_ms: int) -> dict[str, Any]:
        return {"event": "media", "sequenceNumber": str(self.next_seq()), "streamSid": self.stream_id,
                "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp_ms),
                          "payload": base64.b64encode(payload).decode()}}

    def dtmf(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "streamSid": self.stream_id, "sequenceNumber": str(self.next_seq()),
                "dtmf": {"track": "inbound_track", "digit": digit}}

    def mark(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "sequenceNumber": str(self.next_seq()), "streamSid": self.stream_id,
                "mark": {"name": name}}

    def stop(self) -> dict[str, Any]:
        return {"event": "stop", "sequenceNumber": str(self.next_seq()), "streamSid": self.stream_id,
                "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_id}}

    def outbound(self, message: dict[str, Any]) -> tuple[str, Any]:
        """What the server sent: ("media", g711 bytes), ("mark", name) or ("clear", None)."""
        event = message.get("event")
        assert message.get("streamSid") == self.stream_id, message
        if event == "media":
            assert set(message) == {"event", "streamSid", "media"} and set(message["media"]) == {"payload"}, message
            return "media", base64.b64decode(message["media"]["payload"])
        if event == "mark":
            assert set(message["mark"]) == {"name"}, message
            return "mark", message["mark"]["name"]
        if event == "clear":
            assert set(message) == {"event", "streamSid"}, message
            return "clear", None
        raise AssertionError(f"unexpected message from the server: {message}")


class TelnyxCarrier(Carrier):
    """Telnyx media streaming: snake_case fields, ``sequence_number`` on every message, PCMU or PCMA."""

    name = "telnyx"

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "version": "1.0.0"}

    def start(self) -> dict[str, Any]:
        return {"event": "start", "sequence_number": str(self.next_seq()), "stream_id": self.stream_id, "start": {
            "user_id": "u-1", "call_control_id": self.call_id, "call_session_id": "cs-1",
            "from": self.parameters.get("From"), "to": self.parameters.get("To"), "tags": [],
            "media_format": {"encoding": "PCMU" if self.encoding == "mulaw" else "PCMA", "sample_rate": 8000,
                             "channels": 1}}}

    def media(self, payload: bytes, chunk: int, timestamp_ms: int) -> dict[str, Any]:
        return {"event": "media", "sequence_number": str(self.next_seq()), "stream_id": self.stream_id,
                "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp_ms),
                          "payload": base64.b64encode(payload).decode()}}

    def dtmf(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "sequence_number": str(self.next_seq()), "stream_id": self.stream_id,
                "occurred_at": "2026-12-07T00:00:00Z", "dtmf": {"digit": digit}}

    def mark(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "sequence_number": str(self.next_seq()), "stream_id": self.stream_id,
                "mark": {"name": name}}

    def stop(self) -> dict[str, Any]:
        return {"event": "stop", "sequence_number": str(self.next_seq()), "stream_id": self.stream_id,
                "stop": {"user_id": "u-1", "call_control_id": self.call_id}}

    def outbound(self, message: dict[str, Any]) -> tuple[str, Any]:
        event = message.get("event")
        if event == "media":
            assert set(message) == {"event", "media"} and set(message["media"]) == {"payload"}, message
            return "media", base64.b64decode(message["media"]["payload"])
        if event == "mark":
            return "mark", message["mark"]["name"]
        if event == "clear":
            assert message == {"event": "clear"}, message
            return "clear", None
        raise AssertionError(f"unexpected message from the server: {message}")


class PlivoCarrier(Carrier):
    """Plivo Audio Streams: playAudio / checkpoint (echoed as playedStream) / clearAudio (clearedAudio)."""

    name = "plivo"
    echo_marks_on_clear = False

    def start(self) -> dict[str, Any]:
        return {"event": "start", "sequenceNumber": self.next_seq(), "start": {
            "callId": self.call_id, "streamId": self.stream_id, "accountId": "MA-1", "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
            "extra_headers": ",".join(f"{k}={v}" for k, v in self.parameters.items())}

    def media(self, payload: bytes, chunk: int, timestamp_ms: int) -> dict[str, Any]:
        return {"event": "media", "sequenceNumber": self.next_seq(), "streamId": self.stream_id,
                "media": {"track": "inbound", "timestamp": str(timestamp_ms), "chunk": chunk,
                          "payload": base64.b64encode(payload).decode()}}

    def dtmf(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "sequenceNumber": self.next_seq(), "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit, "timestamp": "0"}}

    def mark(self, name: str) -> dict[str, Any]:
        return {"event": "playedStream", "sequenceNumber": self.next_seq(), "streamId": self.stream_id,
                "name": name}

    def cleared(self) -> list[dict[str, Any]]:
        return [{"event": "clearedAudio", "sequenceNumber": self.next_seq(), "streamId": self.stream_id}]

    def stop(self) -> dict[str, Any]:
        return {"event": "stop", "sequenceNumber": self.next_seq(), "streamId": self.stream_id}

    def outbound(self, message: dict[str, Any]) -> tuple[str, Any]:
        event = message.get("event")
        if event == "playAudio":
            media = message["media"]
            assert media["contentType"] == "audio/x-mulaw" and media["sampleRate"] == 8000, message
            return "media", base64.b64decode(media["payload"])
        if event == "checkpoint":
            assert message["streamId"] == self.stream_id and set(message) == {"event", "streamId", "name"}, message
            return "mark", message["name"]
        if event == "clearAudio":
            assert message == {"event": "clearAudio", "streamId": self.stream_id}, message
            return "clear", None
        raise AssertionError(f"unexpected message from the server: {message}")


@dataclass
class CarrierCall:
    """One call from the carrier's side of the media stream."""

    carrier: Carrier
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    ws: Any = None
    played: list[Played] = field(default_factory=list)  # the reply audio the caller heard, as it played
    echoed: list[tuple[float, str]] = field(default_factory=list)  # marks echoed because their audio played
    echoed_on_clear: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    received: list[tuple[float, str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _queue: deque[tuple[str, Any]] = field(default_factory=deque)  # ("audio", bytes) | ("mark", name)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _sent_frames: int = 0

    async def __aenter__(self) -> CarrierCall:
        self.ws = await websockets.connect(self.url, additional_headers=self.headers, open_timeout=10,
                                           close_timeout=2, max_size=None, proxy=None)
        self._tasks = [asyncio.create_task(self._listen(), name="standin-listen"),
                       asyncio.create_task(self._play(), name="standin-play")]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()

    async def send(self, message: dict[str, Any] | str) -> None:
        # compact JSON, as the carriers write it
        await self.ws.send(message if isinstance(message, str) else json.dumps(message, separators=(",", ":")))

    async def begin(self) -> None:
        c = self.carrier
        if hasattr(c, "connected"):
            await self.send(c.connected())
        await self.send(c.start())

    async def speak(self, pcm8k: bytes, *, realtime: bool = True, swap_every: int = 0) -> None:
        """The caller's audio (PCM16 at 8 kHz) as 20 ms G.711 frames, at real time. ``swap_every``: send
        every n-th frame after the one that follows it (frames that overtake each other on the way)."""
        data = (ulaw if self.carrier.encoding == "mulaw" else alaw)(pcm8k)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        held: dict[str, Any] | None = None
        for i in range(0, len(data) - FRAME + 1, FRAME):
            self._sent_frames += 1
            message = self.carrier.media(data[i : i + FRAME], self._sent_frames, self._sent_frames * 20)
            if swap_every and held is None and self._sent_frames % swap_every == 0:
                held = message
                continue
            try:
                await self.send(message)
                if held is not None:
                    await self.send(held)
                    held = None
            except websockets.ConnectionClosed:
                return  # the call ended while the caller was talking
            if realtime:
                delay = t0 + (i // FRAME + 1) * 0.02 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        if held is not None:
            await self.send(held)

    async def press(self, digit: str) -> None:
        await self.send(self.carrier.dtmf(digit))

    async def hang_up(self) -> None:
        await self.send(self.carrier.stop())

    def vanish(self) -> None:
        """The caller's network goes: the TCP connection drops without a close frame."""
        self.ws.transport.abort()

    # --------------------------------------------------------------------------------- the carrier's side

    async def _listen(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                kind, value = self.carrier.outbound(message)
                now = time.monotonic()
                self.received.append((now, kind, value))
                if kind == "media":
                    self._queue.append(("audio", value))
                elif kind == "mark":
                    self._queue.append(("mark", value))
                else:
                    self.clears.append(now)
                    pending = [item for item_kind, item in self._queue if item_kind == "mark"]
                    self._queue.clear()
                    if self.carrier.echo_marks_on_clear:  # Twilio (and Telnyx) return them on a clear
                        for name in pending:
                            self.echoed_on_clear.append((now, name))
                            await self.send(self.carrier.mark(name))
                    for message in self.carrier.cleared():
                        await self.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def _play(self) -> None:
        """Play queued audio at real time, 20 ms a tick; echo each mark when everything before it has played."""
        loop = asyncio.get_running_loop()
        tick = loop.time()
        while True:
            while self._queue and self._queue[0][0] == "mark":
                _, name = self._queue.popleft()
                self.echoed.append((time.monotonic(), name))
                try:
                    await self.send(self.carrier.mark(name))
                except websockets.ConnectionClosed:
                    return
            if self._queue:
                need, chunk = FRAME, b""
                while need and self._queue and self._queue[0][0] == "audio":
                    _, audio = self._queue.popleft()
                    chunk += audio[:need]
                    if len(audio) > need:
                        self._queue.appendleft(("audio", audio[need:]))
                    need = FRAME - len(chunk)
                self.played.append(Played(time.monotonic(), chunk))
            tick += 0.02
            await asyncio.sleep(max(0.0, tick - loop.time()))
            if tick < loop.time() - 0.2:
                tick = loop.time()

    # --------------------------------------------------------------------------------- what happened

    def heard_pcm(self) -> bytes:
        return b"".join(to_pcm(p.audio, self.carrier.encoding) for p in self.played)

    def sent_marks(self) -> list[str]:
        return [value for _, kind, value in self.received if kind == "mark"]

    def media_frames(self) -> list[bytes]:
        return [value for _, kind, value in self.received if kind == "media"]

    async def wait_idle(self, timeout_s: float = 20.0) -> None:
        """Until the server has sent something and everything queued has played."""
        async with asyncio.timeout(timeout_s):
            while not self.received or self._queue:
                await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------- REST


@dataclass
class RestRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RestStandIn:
    """A carrier's REST API on 127.0.0.1: records each request and answers with ``reply(request)``."""

    def __init__(self, reply: Any = None) -> None:
        self.requests: list[RestRequest] = []
        self.reply = reply or (lambda request: (200, {"sid": "CA" + "1" * 32, "status": "completed"}))
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RestStandIn:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = RestRequest(method, path, headers, body)
                self.requests.append(request)
                status, payload = self.reply(request)
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
