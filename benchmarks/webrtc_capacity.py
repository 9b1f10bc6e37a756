"""Cost of a WebRTC session: vocable against a bare aiortc echo server, measured side by side in one run.

N aiortc client peers (one process, pinned to CPU 1) each send Opus at real time: silence with a 600 ms
"speech" burst (a tone the energy VAD hears) every 2 s, staggered across peers. The server under test runs
in its own process, pinned to CPU 0, under uvicorn:

- vocable: the WebRTC transport on the instant scripted pipeline (energy VAD, 100 ms silence hangover,
  scripted STT/LLM/TTS answering each burst with 0.6 s of tone, as much sound as the echo returns); each
  client negotiates on ``WS /ws/webrtc`` and keeps reading its events, as a browser would;
- echo: a bare aiortc server that sends every received frame straight back (the transport cost alone);
- echo16: the same, returning 16 kHz mono frames as vocable does (see ``echo_app`` for why that matters).

Figures, over a ``--window-s`` window after a warm-up:
- CPU per session: server CPU seconds (from /proc) / window / N, in % of one core;
- audio round trip at the client: echo, first echoed sound - first sent sound of a burst; vocable, first
  reply sound - end of the burst - the 100 ms hangover (the turn detector's deliberate wait), so both are
  "network + jitter buffers + codec + server" time. Raw voice-to-voice is reported too.

Runs inside a loopback-only network namespace (it re-executes itself under ``unshare -n`` when needed).
Prints a table, then a JSON object of all figures as the last line. Goal: cost ratio (vs the bare echo) <= 1.2.
Usage: python benchmarks/webrtc_capacity.py [--peers 5] [--window-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, pct, proc_cpu_s, table

HERE = Path(__file__).resolve()
RATE = 48000
BURST_MS, PERIOD_S, HANGOVER_MS = 600, 2.0, 100
SOUND_RMS = 300.0
LOOPBACK = ["127.0.0.1"]


# ----------------------------------------------------------------------------------------- servers


def vocable_app() -> Any:
    from vocable import Engine

    config = {
        "server": {"max_sessions": 200, "log_level": "warning"},
        "transports": {"webrtc": {"host_addresses": LOOPBACK, "max_peers": 200}},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence", "hangover_ms": HANGOVER_MS},
            "stt": {"provider": "scripted", "transcripts": ["what is the weather today"]},
            "llm": {"provider": "scripted", "reply": "It is sunny today."},
            "tts": {"provider": "scripted", "ms_per_char": 33},  # 0.6 s of reply: as much sound as the echo returns
        },
        "metrics": [],
    }
    plugins = ["vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.webrtc"]
    return Engine.from_dict(config, autoload=False, plugins=plugins).asgi_app()


def echo_app(mono16: bool = False) -> Any:
    """The baseline: POST /offer, answer, and return every received audio frame on our own track.

    ``mono16`` returns each frame as 16 kHz mono instead (downmix + soxr, as vocable's audio path does).
    aiortc's sender computes the RFC 6464 audio level in pure Python over every sample of every frame it
    sends, and the decoder's 48 kHz stereo frames carry padded planes: the bare echo pays ~1.7 ms a frame
    for that alone, vocable's 16 kHz mono frames ~0.07 ms. The mono16 echo shows the transport cost
    without that difference.
    """
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamTrack
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from vocable.engine.audio import Resampler
    from vocable.transports.webrtc.audio import mono_pcm16
    from vocable.transports.webrtc.hosts import pinned_host_addresses

    class Echo(MediaStreamTrack):
        kind = "audio"

        def __init__(self, source: MediaStreamTrack) -> None:
            super().__init__()
            self.source = source
            self.resample = Resampler(RATE, 16000)
            self.pending = bytearray()
            self.pts = 0

        async def recv(self) -> Any:
            if not mono16:
                return await self.source.recv()
            import av

            while len(self.pending) < 640:  # 20 ms at 16 kHz; the resampler holds a little back at first
                self.pending += self.resample(mono_pcm16(await self.source.recv()))
            pcm = bytes(self.pending[:640])
            del self.pending[:640]
            out = av.AudioFrame(format="s16", layout="mono", samples=320)
            out.planes[0].update(pcm)
            out.sample_rate, out.pts, out.time_base = 16000, self.pts, fractions.Fraction(1, 16000)
            self.pts += 320
            return out

    peers: set[RTCPeerConnection] = set()

    async def offer(request: Request) -> JSONResponse:
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peers.add(pc)
        pc.on("track", lambda track: pc.addTrack(Echo(track)))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        answer = await pc.createAnswer()
        with pinned_host_addresses(LOOPBACK):
            await pc.setLocalDescription(answer)
        return JSONResponse({"sdp": pc.localDescription.sdp, "type": "answer"})

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await asyncio.gather(*(pc.close() for pc in peers))

    return Starlette(routes=[Route("/offer", offer, methods=["POST"])], lifespan=lifespan)


def serve(kind: str, port: int) -> None:
    import uvicorn

    os.sched_setaffinity(0, {0})
    app = vocable_app() if kind == "vocable" else echo_app(mono16=kind == "echo16")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


# ----------------------------------------------------------------------------------------- clients


class Client:
    """One peer: a paced mic that records when each burst's first frame left, and the received levels."""

    def __init__(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        from vocable.transports.webrtc.audio import PlaybackTrack

        class Mic(PlaybackTrack):
            def _next_frame(inner) -> Any:
                loud = bytes(inner._buffer[: inner._frame_bytes]).strip(b"\x00") != b""
                if loud and not self.sending:  # the first frame of a burst leaves now
                    self.sent.append(asyncio.get_running_loop().time())
                self.sending = loud
                return super()._next_frame()

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = Mic(RATE, max_buffer_ms=5000)
        self.pc.addTrack(self.mic)
        self.sending = False
        self.sent: list[float] = []  # loop time the first frame of each burst was sent
        self.heard: list[tuple[float, bool]] = []
        self.ws: Any = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.pc.on("track", lambda track: self.tasks.append(asyncio.create_task(self._read(track))))

    async def _read(self, track: Any) -> None:
        import numpy as np
        from aiortc.mediastreams import MediaStreamError

        from vocable.transports.webrtc.audio import mono_pcm16

        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            samples = np.frombuffer(mono_pcm16(frame), dtype="<i2").astype(np.float32)
            self.heard.append((loop.time(), float(np.sqrt(np.mean(samples**2))) > SOUND_RMS))

    async def connect(self, kind: str, base: str) -> None:
        import httpx
        import websockets
        from aiortc import RTCSessionDescription

        from vocable.transports.webrtc.hosts import pinned_host_addresses

        offer = await self.pc.createOffer()
        with pinned_host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(offer)
        sdp = self.pc.localDescription.sdp
        if kind.startswith("echo"):
            async with httpx.AsyncClient() as http:
                answer = (await http.post(f"{base}/offer", json={"sdp": sdp, "type": "offer"})).json()
        else:
            self.ws = await websockets.connect(base.replace("http", "ws") + "/ws/webrtc")
            await self.ws.send(json.dumps({"type": "offer", "sdp": sdp}))
            answer = json.loads(await self.ws.recv())
            self.tasks.append(asyncio.create_task(self._drain()))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    async def _drain(self) -> None:
        async for _ in self.ws:
            pass

    async def talk(self, offset_s: float, until: float) -> None:
        from vocable.testing.fakes import tone
        from vocable.testing.speech import silence

        loop = asyncio.get_running_loop()
        await asyncio.sleep(offset_s)
        burst = tone(BURST_MS, RATE, amplitude=0.3)
        while loop.time() < until:
            await self.mic.push(burst + silence(int(PERIOD_S * 1000) - BURST_MS, RATE))
            await asyncio.sleep(PERIOD_S)

    def round_trips(self, kind: str, start: float, end: float) -> tuple[list[float], list[float]]:
        """(round trips, raw first-sound delays) in ms for bursts sent inside [start, end]."""
        trips, raw = [], []
        for sent in self.sent:
            if not start <= sent <= end:
                continue
            echo = kind.startswith("echo")
            ref = sent if echo else sent + BURST_MS / 1000
            first = next((t for t, loud in self.heard if loud and ref < t < ref + 1.8), None)
            if first is None:
                continue
            delay = (first - ref) * 1000
            raw.append(delay)
            trips.append(delay if echo else delay - HANGOVER_MS)
        return trips, raw

    async def close(self) -> None:
        self.mic.stop()
        if self.ws is not None:
            await self.ws.close()
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# ----------------------------------------------------------------------------------------- one run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


async def measure(kind: str, peers: int, window_s: float, warmup_s: float) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE), "--serve", kind, "--port", str(port)])  # noqa: ASYNC220 - spawning does not block
    clients: list[Client] = []
    try:
        await wait_port(port)
        base = f"http://127.0.0.1:{port}"
        if kind == "vocable":  # models (here: fakes) load in the background; wait for /health
            import httpx

            async with httpx.AsyncClient() as http:
                while (await http.get(f"{base}/health")).status_code != 200:
                    await asyncio.sleep(0.1)
        idle0 = proc_cpu_s(server.pid)
        await asyncio.sleep(2)
        idle = (proc_cpu_s(server.pid) - idle0) / 2
        for _ in range(peers):
            client = Client()
            await client.connect(kind, base)
            clients.append(client)
        async with asyncio.timeout(20):
            while any(c.pc.connectionState != "connected" for c in clients):
                await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup_s
        end = start + window_s
        talkers = [asyncio.create_task(c.talk(i * PERIOD_S / peers, end + 1)) for i, c in enumerate(clients)]
        await asyncio.sleep(warmup_s)
        cpu0, own0 = proc_cpu_s(server.pid), time.process_time()
        await asyncio.sleep(window_s)
        cpu = proc_cpu_s(server.pid) - cpu0
        client_cpu = time.process_time() - own0
        await asyncio.sleep(2.0)  # the last replies arrive
        for task in talkers:
            task.cancel()
        await asyncio.gather(*talkers, return_exceptions=True)
        trips: list[float] = []
        raw: list[float] = []
        bursts = 0
        for client in clients:
            t, r = client.round_trips(kind, start, end - 1.5)
            trips += t
            raw += r
            bursts += sum(1 for s in client.sent if start <= s <= end - 1.5)
        return {
            "peers": peers, "window_s": window_s,
            "cpu_per_session_pct": round(100 * (cpu / window_s) / peers, 2),
            "server_cpu_pct": round(100 * cpu / window_s, 1), "server_idle_cpu_pct": round(100 * idle, 2),
            "client_cpu_pct": round(100 * client_cpu / window_s, 1),
            "round_trip_ms": {"p50": round(pct(trips, 50), 1), "p95": round(pct(trips, 95), 1)},
            "first_sound_ms": {"p50": round(pct(raw, 50), 1), "p95": round(pct(raw, 95), 1)},
            "answered": f"{len(trips)}/{bursts}",
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        server.terminate()
        server.wait(timeout=20)


async def run(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {1} if os.cpu_count() and os.cpu_count() > 1 else {0})
    kinds = ("echo", "echo16", "vocable")
    results = {kind: await measure(kind, args.peers, args.window_s, args.warmup_s) for kind in kinds}
    echo, echo16, ours = results["echo"], results["echo16"], results["vocable"]

    def ratio_to(base: dict[str, Any]) -> float:
        cost = base["cpu_per_session_pct"]
        return ours["cpu_per_session_pct"] / cost if cost else float("nan")

    ratio, ratio16 = ratio_to(echo), ratio_to(echo16)
    print(table(
        ["server", "peers", "cpu/session %", "server cpu %", "client cpu %", "rtt p50 ms", "rtt p95 ms", "answered"],
        [[k, r["peers"], r["cpu_per_session_pct"], r["server_cpu_pct"], r["client_cpu_pct"],
          r["round_trip_ms"]["p50"], r["round_trip_ms"]["p95"], r["answered"]] for k, r in results.items()],
    ))
    print(f"vocable / bare echo cost per session: {ratio:.2f} (goal <= 1.2); vocable / 16 kHz mono echo: "
          f"{ratio16:.2f}; vocable voice-to-voice p95 {ours['first_sound_ms']['p95']} ms including the "
          f"{HANGOVER_MS} ms hangover")
    emit({"benchmark": "webrtc_capacity", "echo": echo, "echo16": echo16, "vocable": ours,
          "cost_ratio": round(ratio, 3), "cost_ratio_vs_echo16": round(ratio16, 3), "goal_ratio": 1.2,
          "meets_goal": ratio <= 1.2, "hangover_ms": HANGOVER_MS})


def in_loopback_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=4.0)
    parser.add_argument("--serve", choices=["vocable", "echo", "echo16"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    if not in_loopback_namespace():  # WebRTC traffic must stay on loopback: re-run in a namespace with only lo
        command = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                   sys.executable, str(HERE), *sys.argv[1:]]
        sys.exit(subprocess.call(command))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
