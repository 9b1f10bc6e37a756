"""``DirectFramesProtocol``: uvicorn's WebSocket protocol plus vocable's direct-frames extension, on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
import uvicorn
import websockets
from websockets.frames import Frame, Opcode

from vocable.transports import direct_frames
from vocable.transports.direct_frames import AWAIT_MESSAGE, DIRECT_FRAMES, SERVE_OPTIONS, DirectFrames, frame_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 640, 65535, 65536, 70000])
@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.TEXT])
def test_frame_header_is_what_the_protocol_library_writes(opcode: Opcode, length: int) -> None:
    payload = b"a" * length
    expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
    assert frame_header(opcode.value, length) + payload == expected


class App:
    """An ASGI app that records where each message went: heard by the receiver, or through ``receive``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.direct: DirectFrames | None = None
        self.busy = False  # like vocable's reader: decline frames while a message is in hand
        self.done = asyncio.Event()

    def hear(self, data: bytes) -> bool | Any:
        if self.busy or data.startswith(b"decline"):
            return False
        if data.startswith(b"boom"):
            raise ValueError("a bug in the app")
        self.log.append(("direct", data))
        if data.startswith(b"await"):
            return self._later(data)
        assert self.direct is not None
        self.direct.send(b"ack:" + data)
        return True

    async def _later(self, data: bytes) -> None:
        await asyncio.sleep(0.01)
        self.log.append(("awaited", data))
        assert self.direct is not None
        self.direct.send(b"ack:" + data)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        direct = self.direct = scope["extensions"].get(DIRECT_FRAMES)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        if direct is not None:
            direct.receiver = self.hear
        try:
            while True:
                message = await receive()
                if message["type"] == AWAIT_MESSAGE:
                    await message["awaitable"]
                    continue
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") or message.get("text", "").encode()
                self.log.append(("asgi", data))
                if data == b"slow":
                    self.busy = True
                    await asyncio.sleep(0.2)
                    self.busy = False
                if data == b"paused":
                    protocol = direct._protocol  # type: ignore[union-attr]
                    protocol.pause_writing()
                    self.log.append(("send_while_paused", direct.send(b"x")))  # type: ignore[union-attr]
                    protocol.resume_writing()
                if data == b"close":
                    await send({"type": "websocket.close", "code": 1000})
                    self.log.append(("send_after_close", direct.send(b"x")))  # type: ignore[union-attr]
                    return
                await send({"type": "websocket.send", "bytes": b"ack:" + data})
        finally:
            self.done.set()


@asynccontextmanager
async def serving(app: App, **options: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            **{**SERVE_OPTIONS, "lifespan": "off", **options})
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def exchange(url: str, messages: list[bytes | str], *, compression: str | None = None) -> list[bytes]:
    """Send each message and wait for its ack, so each reaches the server with nothing queued ahead."""
    acks = []
    async with websockets.connect(url, compression=compression, proxy=None) as ws:
        for message in messages:
            await ws.send(message)
            acks.append(await asyncio.wait_for(ws.recv(), 5))
    return acks


async def test_frames_are_heard_as_parsed_and_acks_written_directly() -> None:
    app = App()
    async with serving(app) as url:
        acks = await exchange(url, [b"one", b"decline me", b"await this", b"two", "text"])
    assert acks == [b"ack:one", b"ack:decline me", b"ack:await this", b"ack:two", b"ack:text"]
    assert app.log == [("direct", b"one"), ("asgi", b"decline me"), ("direct", b"await this"),
                       ("awaited", b"await this"), ("direct", b"two"), ("asgi", b"text")]


async def test_with_permessage_deflate_the_library_frames_the_messages() -> None:
    app = App()
    async with serving(app, ws_per_message_deflate=True) as url:
        acks = await exchange(url, [b"one" * 100, b"two"], compression="deflate")
    assert acks == [b"ack:" + b"one" * 100, b"ack:two"]
    assert [source for source, _ in app.log] == ["direct", "direct"]


async def test_nothing_overtakes_a_message_waiting_for_the_app() -> None:
    """While the app is busy (and declines), frames queue; once anything is queued, later frames queue too."""
    app = App()
    async with serving(app) as url:
        async with websockets.connect(url, compression=None, proxy=None) as ws:
            await ws.send("slow")  # text: through receive, and the app is busy with it for 0.2 s
            for i in range(20):
                await ws.send(b"f%d" % i)
            received = [await asyncio.wait_for(ws.recv(), 5) for _ in range(21)]
    sent = [b"slow"] + [b"f%d" % i for i in range(20)]
    assert [data for _, data in app.log] == sent  # every message, each once, in order
    assert sorted(received) == sorted(b"ack:" + m for m in sent)
    assert app.log[1][0] == "asgi"  # the first frame came while the app was busy


async def test_send_declines_while_the_socket_is_paused_and_after_close() -> None:
    app = App()
    async with serving(app) as url:
        async with websockets.connect(url, compression=None, proxy=None) as ws:
            await ws.send("paused")
            assert await asyncio.wait_for(ws.recv(), 5) == b"ack:paused"
            await ws.send("close")
            await asyncio.wait_for(app.done.wait(), 5)
    assert ("send_while_paused", False) in app.log
    assert ("send_after_close", False) in app.log


async def test_a_receiver_that_raises_is_detached_and_frames_go_through_receive(caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    async with serving(app) as url:
        acks = await exchange(url, [b"boom", b"after"])
    assert acks == [b"ack:boom", b"ack:after"]
    assert app.log == [("asgi", b"boom"), ("asgi", b"after")]
    assert app.direct is not None and app.direct.receiver is None


async def test_uvicorns_own_protocol_offers_no_extension() -> None:
    app = App()
    async with serving(app, ws="websockets-sansio") as url:
        acks = await exchange(url, [b"one"])
    assert acks == [b"ack:one"] and app.direct is None and app.log == [("asgi", b"one")]


# ------------------------------------------------------------------------- the start-up check of uvicorn's internals


def test_this_uvicorn_has_every_internal_direct_frames_use() -> None:
    from vocable import serving
    from vocable.config.model import ServerConfig

    assert direct_frames.direct_frames_missing() == []
    assert SERVE_OPTIONS["ws"] == direct_frames.DIRECT_FRAMES_PROTOCOL
    assert serving.serve_options(ServerConfig())["ws"] == direct_frames.DIRECT_FRAMES_PROTOCOL


def test_without_an_internal_it_uses_uvicorns_protocol_and_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A uvicorn whose protocol lost a name direct frames use: ``SERVE_OPTIONS`` and ``serve_options`` name
    uvicorn's own protocol, and one warning says what is missing, however often they are read."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from vocable import serving
    from vocable.config.model import ServerConfig

    monkeypatch.delattr(WebSocketsSansIOProtocol, "send_receive_event_to_app")
    monkeypatch.delitem(vars(direct_frames), "SERVE_OPTIONS")  # decided again, and put back after the test
    with structlog.testing.capture_logs() as logged:
        chosen = [direct_frames.SERVE_OPTIONS["ws"], serving.serve_options(ServerConfig())["ws"],
                  serving.serve_options(ServerConfig())["ws"]]
    assert chosen == ["websockets-sansio"] * 3
    warnings = [e for e in logged if e["event"] == "direct_frames_unavailable"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert warnings[0]["missing"] == ["WebSocketsSansIOProtocol.send_receive_event_to_app"]


def test_without_uvicorns_sansio_module_it_uses_uvicorns_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_frames, "UVICORN_PROTOCOL", "vocable_no_such_module:Protocol")
    monkeypatch.setattr(direct_frames, "NEEDS", (("vocable_no_such_module:Protocol", ("conn",)),))
    with structlog.testing.capture_logs() as logged:
        options = direct_frames.serve_ws_options()
    assert options["ws"] == "auto" and options["ws_per_message_deflate"] is False
    assert [e["missing"] for e in logged] == [["vocable_no_such_module:Protocol.conn"]]


# ------------------------------------------------------------------------- the binary-frame parser, byte by byte


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """A frame as a client writes it (RFC 6455 5.2), masked unless told otherwise."""
    from websockets.utils import apply_mask

    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if masked else 0
    if length < 126:
        head = bytes((first, bit | length))
    elif length < 1 << 16:
        head = bytes((first, bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, bit | 127)) + length.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = b"\x1f\x2e\x3d\x4c"
    return head + mask + apply_mask(payload, mask)


async def read_server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


@asynccontextmanager
async def raw_client(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = url.removeprefix("ws://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    response = await reader.readuntil(b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 101"), response
    try:
        yield reader, writer
    finally:
        writer.close()


@pytest.mark.parametrize("piece", [1, 3, 7, 1 << 20])  # bytes per write: frames split anywhere, or many in one
async def test_frames_split_anywhere_arrive_whole_and_in_order(piece: int) -> None:
    app = App()
    big, huge = bytes(range(256)) * 2, bytes(range(256)) * 300  # 16-bit and 64-bit length encodings
    stream = b"".join([
        client_frame(0x2, b"one"),
        client_frame(0x2, big),
        client_frame(0x9, b"ping?"),  # answered with a pong by the library
        client_frame(0x1, "text".encode()),
        client_frame(0x2, b"frag", fin=False), client_frame(0x0, b"ment"),  # fragmented: the library joins it
        client_frame(0x2, huge),
        client_frame(0x2, b"last"),
    ])
    async with serving(app) as url, raw_client(url) as (reader, writer):
        for i in range(0, len(stream), piece):
            writer.write(stream[i : i + piece])
            await writer.drain()
            if piece < 8:
                await asyncio.sleep(0)
        got = [await asyncio.wait_for(read_server_frame(reader), 5) for _ in range(7)]
        writer.write(client_frame(0x8, (1000).to_bytes(2, "big")))
        assert (await asyncio.wait_for(read_server_frame(reader), 5))[0] == 0x8  # the close is answered
    assert (0xA, b"ping?") in got
    assert [data for _, data in app.log] == [b"one", big, b"text", b"fragment", huge, b"last"]
    sources = dict((data, source) for source, data in app.log)
    assert sources[b"one"] == sources[big] == sources[huge] == "direct" and sources[b"fragment"] == "asgi"


@pytest.mark.parametrize(("frame", "code"), [
    (client_frame(0x2, b"x" * 2000), 1009),  # above ws_max_size
    (client_frame(0x2, b"unmasked", masked=False), 1002),
    (client_frame(0x0, b"stray continuation"), 1002),
], ids=["too_large", "unmasked", "stray_continuation"])
async def test_bad_frames_are_closed_by_the_protocol_library(frame: bytes, code: int) -> None:
    app = App()
    async with serving(app, ws_max_size=1024) as url, raw_client(url) as (reader, writer):
        writer.write(client_frame(0x2, b"fine") + frame + client_frame(0x2, b"never seen"))
        opcode, payload = await asyncio.wait_for(read_server_frame(reader), 5)
        assert (opcode, payload) == (0x2, b"ack:fine")
        opcode, payload = await asyncio.wait_for(read_server_frame(reader), 5)
        assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == code
    assert [data for _, data in app.log] == [b"fine"]
