"""``DirectFramesProtocol``: uvicorn's WebSocket protocol plus vocable's direct-frames extension, on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
import websockets
from websockets.frames import Frame, Opcode

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
