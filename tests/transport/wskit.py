"""Helpers for the transport tests: a real uvicorn server on 127.0.0.1 and a protocol-aware client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from vocable import Engine
from vocable.testing.fakes import tone
from vocable.testing.scripted import scripted_config
from vocable.testing.speech import silence
from vocable.transports.direct_frames import SERVE_OPTIONS

PLUGINS = ["vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.websocket"]

Message = dict[str, Any] | bytes


def config(websocket: dict[str, Any] | None = None, *, server: dict[str, Any] | None = None,
           **pipeline: Any) -> dict[str, Any]:
    """A config on the scripted fakes with the WebSocket transport; keyword arguments replace pipeline slots."""
    data = scripted_config(**pipeline)
    data["server"] = {"max_sessions": 10, **(server or {})}
    data["transports"] = {"websocket": websocket or {}}
    return data


def engine(websocket: dict[str, Any] | None = None, **kwargs: Any) -> Engine:
    return Engine.from_dict(config(websocket, **kwargs), autoload=False, plugins=PLUGINS)


@dataclass
class LiveServer:
    engine: Engine
    port: int
    server: uvicorn.Server

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/ws/audio", query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")


@asynccontextmanager
async def live_server(engine: Engine, *, ws_max_size: int = 1 << 20, **options: Any) -> AsyncIterator[LiveServer]:
    """Serve ``engine`` with a real uvicorn on an ephemeral loopback port, in this event loop.

    As ``vocable serve`` runs it (direct frames); ``options`` override uvicorn settings, e.g.
    ``ws="websockets-sansio"`` for uvicorn's own protocol.
    """
    cfg = uvicorn.Config(engine.asgi_app(), host="127.0.0.1", port=0, log_level="warning",
                         **{**SERVE_OPTIONS, "ws_max_size": ws_max_size, **options})
    server = uvicorn.Server(cfg)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        await engine.wait_ready(10)
        yield LiveServer(engine, port, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@dataclass
class Client:
    """A protocol client: JSON text messages become dicts, binary messages stay bytes."""

    ws: ClientConnection
    seen: list[Message] = field(default_factory=list)

    async def send(self, message: dict[str, Any] | bytes | str) -> None:
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def recv(self, timeout_s: float = 10.0) -> Message:
        async with asyncio.timeout(timeout_s):
            raw = await self.ws.recv()
        message: Message = raw if isinstance(raw, bytes) else json.loads(raw)
        self.seen.append(message)
        return message

    async def next(self, kind: str, timeout_s: float = 10.0, **match: Any) -> dict[str, Any]:
        """Skip messages until a JSON event of ``type`` ``kind`` (and matching fields) arrives."""
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.recv(timeout_s)
                if isinstance(message, dict) and message.get("type") == kind and all(
                        message.get(k) == v for k, v in match.items()):
                    return message

    async def turn(self, timeout_s: float = 20.0) -> list[Message]:
        """Every message up to and including the next ``metrics`` event."""
        out: list[Message] = []
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.recv(timeout_s)
                out.append(message)
                if isinstance(message, dict) and message.get("type") == "metrics":
                    return out

    async def closed(self, timeout_s: float = 10.0) -> tuple[int | None, str]:
        """Read until the server closes; return the close code and reason it sent."""
        async with asyncio.timeout(timeout_s):
            try:
                while True:
                    await self.recv(timeout_s)
            except websockets.ConnectionClosed:
                pass
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


@asynccontextmanager
async def connect(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    kwargs = {"open_timeout": 10, "close_timeout": 5, "max_size": None, "proxy": None, **kwargs}
    async with websockets.connect(url, **kwargs) as ws:
        yield Client(ws)


def events(messages: list[Message], kind: str | None = None) -> list[dict[str, Any]]:
    return [m for m in messages if isinstance(m, dict) and (kind is None or m["type"] == kind)]


def audio_bytes(messages: list[Message]) -> int:
    return sum(len(m) for m in messages if isinstance(m, bytes))


async def send_audio(client: Client, pcm: bytes, *, rate: int = 16000, frame_ms: int = 20,
                     realtime: bool = False) -> None:
    step = rate * frame_ms // 1000 * 2
    for i in range(0, len(pcm), step):
        await client.send(pcm[i : i + step])
        if realtime:
            await asyncio.sleep(frame_ms / 1000)


def utterance(speech_ms: int = 600, pause_ms: int = 600, rate: int = 16000) -> bytes:
    """A 'spoken' utterance the energy VAD hears: a tone, then silence long enough to end the turn."""
    return silence(100, rate) + tone(speech_ms, rate) + silence(pause_ms, rate)


def websocket_transport(engine: Engine) -> Any:
    return next(t for t in engine.transports if t.name == "websocket")


def stop_process(process: "subprocess.Popen[bytes]", timeout_s: float = 30.0) -> None:
    """SIGTERM, as a service manager stops the server; SIGKILL if it does not exit in time."""
    import signal
    import subprocess

    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
