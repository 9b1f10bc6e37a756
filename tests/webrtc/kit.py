"""Test kit for WebRTC: a real server on 127.0.0.1 and aiortc client peers that talk to it.

The client peer's microphone is a ``PlaybackTrack`` (the server's own paced track type): push PCM and it
is sent at real time, silence otherwise. Whatever the server sends back is decoded, downmixed and kept,
with the wall-clock time of the first frame that carried sound.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import uvicorn
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from vocable import Engine
from vocable.transports.webrtc.audio import PlaybackTrack, mono_pcm16
from vocable.transports.webrtc.hosts import pinned_host_addresses

LOOPBACK = ["127.0.0.1"]
PLUGINS = ["vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.webrtc"]
RATE = 48000
SOUND_RMS = 300.0  # a 20 ms frame louder than this carries sound (Opus silence decodes near 0)


def scripted_engine(webrtc: dict[str, Any] | None = None, *, server: dict[str, Any] | None = None,
                    websocket: dict[str, Any] | None = None, **pipeline: Any) -> Engine:
    """An engine on the scripted fakes with the WebRTC transport offering 127.0.0.1 (and ``/ws/audio`` if asked)."""
    slots: dict[str, Any] = {
        "vad": {"provider": "energy"},
        "turn": {"provider": "silence", "hangover_ms": 300},
        "stt": {"provider": "scripted", "transcripts": ["what is the weather today"]},
        "llm": {"provider": "scripted", "reply": "It is sunny. Take a hat with you today."},
        "tts": {"provider": "scripted"},
        **pipeline,
    }
    config = {
        "server": {"max_sessions": 50, **(server or {})},
        "transports": {"webrtc": {"host_addresses": LOOPBACK, **(webrtc or {})},
                       **({"websocket": websocket} if websocket is not None else {})},
        "pipeline": slots,
        "metrics": [{"provider": "log"}],
    }
    plugins = [*PLUGINS, "vocable.transports.websocket"] if websocket is not None else PLUGINS
    return Engine.from_dict(config, autoload=False, plugins=plugins)


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in this event loop; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class ClientPeer:
    """An aiortc peer playing the browser: a paced mic track out, the reply track recorded."""

    def __init__(self, *, data_channel: bool = False) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = PlaybackTrack(RATE, max_buffer_ms=30000)
        self.pc.addTrack(self.mic)
        self.frames: list[tuple[float, float]] = []  # (arrival time, rms) of every received 20 ms frame
        self.received = bytearray()
        self.channel_events: list[dict[str, Any]] = []
        self.channel = self.pc.createDataChannel("events") if data_channel else None
        if self.channel is not None:
            self.channel.on("message", lambda m: self.channel_events.append(json.loads(m)))
        self._reader: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.create_task(self._read(track), name="client-rx")

    async def _read(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = mono_pcm16(frame)
            if frame.sample_rate != RATE:
                raise AssertionError(f"unexpected decoded rate {frame.sample_rate}")
            self.received += pcm
            self.frames.append((loop.time(), rms16(pcm)))

    async def offer(self, *, trickle: bool = False) -> tuple[str, list[dict[str, Any]]]:
        """Our offer SDP; with ``trickle`` the candidates are taken out and returned as messages instead."""
        offer = await self.pc.createOffer()
        with pinned_host_addresses(LOOPBACK):  # aioice skips 127.0.0.1: offer it explicitly
            await self.pc.setLocalDescription(offer)
        sdp = self.pc.localDescription.sdp
        if not trickle:
            return sdp, []
        candidates = [
            {"type": "candidate", "candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0}
            for line in sdp.splitlines() if line.startswith("a=candidate:")
        ]
        stripped = "\r\n".join(l for l in sdp.splitlines() if not l.startswith(("a=candidate:", "a=end-of-candidates")))
        return stripped + "\r\n", candidates

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while self.pc.connectionState != "connected":
                await asyncio.sleep(0.01)

    def sound_after(self, t: float) -> float:
        """Seconds of received frames with sound that arrived after loop time ``t``."""
        return sum(0.02 for at, level in self.frames if at > t and level > SOUND_RMS)

    def first_sound_after(self, t: float) -> float | None:
        return next((at for at, level in self.frames if at > t and level > SOUND_RMS), None)

    async def close(self) -> None:
        self.mic.stop()
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


def rms16(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def post_offer(base: str, sdp: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{base}/webrtc/offer", json={"sdp": sdp, "type": "offer"})


def ws_url(base: str, path: str) -> str:
    return re.sub(r"^http", "ws", base) + path


class Events:
    """JSON events from a signalling socket, read in the background so nothing blocks the server."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.items: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._read(), name="client-events")

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.items.append(json.loads(message))
                self._new.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self._new.set()

    async def wait_for(self, kind: str, timeout_s: float = 10.0, **fields: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                for item in self.items:
                    if item.get("type") == kind and all(item.get(k) == v for k, v in fields.items()):
                        return item
                if self._task.done():
                    raise AssertionError(f"socket closed ({self.close_code}) before {kind!r}: {self.items}")
                self._new.clear()
                await self._new.wait()

    async def closed(self, timeout_s: float = 10.0) -> int | None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self._task)
        return self.close_code

    async def aclose(self) -> None:
        await self.ws.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
