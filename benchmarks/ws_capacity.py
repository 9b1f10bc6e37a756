"""Sessions per core over WebSocket: vocable, Pipecat's FastAPI WebSocket transport, and a bare Starlette echo.

Every session streams 20 ms PCM16 frames at 16 kHz to the server at real time: silence, with a 600 ms
"speech" burst (a tone the energy VAD hears) every 4 s. The servers run the same instant scripted pipeline
(energy VAD, 300 ms silence hangover, scripted STT/LLM/TTS) and answer each burst with ~2 s of reply audio
in 20 ms frames; the echo server sends every frame straight back. All three run under the same uvicorn
settings in ONE process pinned to CPU 0; the load comes from a separate process pinned to CPU 1 (a lean
asyncio WebSocket client, so the client is not the bottleneck), on 127.0.0.1 only.

Frame lateness, measured at the client: within each reply (or each 4 s stretch of echo), frame i of
cumulative audio position ``pos_i`` arriving at ``t_i`` is ``t_i - pos_i - min_{j<=i}(t_j - pos_j)`` late:
how far it is behind the best real-time schedule that stream has shown so far. A perfectly paced stream
reads 0 whatever its lead; a stall reads as its length. It is strict: neither vocable's 120 ms lead nor
Pipecat's 2x-real-time pacing is counted as a buffer (the 2x pacing still earns Pipecat up to 10 ms of
credit per frame, so the measure slightly favours it).

Capacity is the largest number of sessions N for which, over a measuring window of ``--window-s``:
lateness p99 < 20 ms, every session connected and >= 90 % of the expected replies arrived. N steps up
(10, 20, 40, ...) until a step fails, then bisects, each step bounded in time. At capacity: memory per
session (server RSS with N sessions minus RSS after a warm-up, over N) and CPU per session (server CPU
seconds in the window / window / N, from /proc).

Prints a table, then a JSON object of all figures as the last line.
Usage: python benchmarks/ws_capacity.py [--kinds vocable,pipecat,echo] [--window-s 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _instant_fakes import instant_fake_audio
from _common import emit, family_cpu_s, family_rss_bytes, family_threads, pct, proc_cpu_s, table
from starlette.websockets import WebSocket

HERE = Path(__file__).resolve()
RATE = 16000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
CYCLE_MS = 4000
TONE_FROM_MS, TONE_TO_MS = 200, 800  # the "speech" inside each cycle
HANGOVER_MS = 300
REPLY = ("Sure. Here is a reply that is long enough to take about two seconds to speak, "
         "and then it stops so that the user can talk again in a moment.")
TRANSCRIPT = "what is the weather like today"
LATENESS_GOAL_MS = 20.0
SERVER_CPU, CLIENT_CPU = 0, 1
# echo_direct: the same echo on vocable's server protocol (SERVE_OPTIONS), which it gains from only through the
# protocol's own frame parser (it uses no extension): what of vocable's gain any ASGI app would get there
PATHS = {"vocable": "/ws/audio", "pipecat": "/ws", "echo": "/ws", "echo_direct": "/ws"}


def split_kind(kind: str) -> tuple[str, int]:
    """``vocable_w2``: vocable under ``vocable serve --workers 2``; ``echo_w2``: the echo under two uvicorn
    workers. Plain kinds are one process (0 workers)."""
    base, _, count = kind.rpartition("_w")
    if base in ("vocable", "echo") and count.isdigit() and int(count) >= 1:
        return base, int(count)
    if kind not in PATHS:
        raise SystemExit(f"unknown server kind {kind!r}: vocable, pipecat, echo, echo_direct, vocable_wN or echo_wN")
    return kind, 0


def workers_of(kind: str) -> int:
    return split_kind(kind)[1]


def path_of(kind: str) -> str:
    return PATHS[split_kind(kind)[0]]


# ================================================================================================ servers


def vocable_config() -> dict[str, Any]:
    return {
        "server": {"max_sessions": 100000, "rate_limit_per_minute": 0, "idle_timeout_s": None,
                   "max_session_s": None, "log_level": "warning", "resume_grace_s": 0},
        "transports": {"websocket": {}},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence", "hangover_ms": HANGOVER_MS},
            "stt": {"provider": "scripted", "transcripts": [TRANSCRIPT], "interim_every_ms": 200},
            "llm": {"provider": "scripted", "reply": REPLY},
            "tts": {"provider": "scripted", "chunk_ms": 20},
        },
        "metrics": [],
    }


def vocable_app() -> Any:
    from vocable import Engine

    engine = Engine.from_dict(vocable_config(), autoload=False, freeze_gc=True, plugins=[  # as `vocable serve`
        "vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.websocket"])
    return engine.asgi_app()


def serve_vocable_workers(workers: int, port: int) -> None:
    """``vocable serve --workers N`` as the command runs it, on the same config as ``vocable_app``.

    ``_instant_fakes`` is listed as a plugin module so that every worker process caches the fake TTS's tone,
    as the one-process servers do.
    """
    import tempfile

    from vocable.serving import serve_workers

    config = vocable_config()
    config["plugins"] = {"autoload": False, "modules": [
        "vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.websocket", "_instant_fakes"]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(config, f)  # JSON is YAML
    try:
        serve_workers(f.name, host="127.0.0.1", port=port, workers=workers, log_level="warning")
    finally:
        os.unlink(f.name)


def echo_app() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                await ws.send({"type": "websocket.send", "bytes": data})

    return Starlette(routes=[WebSocketRoute("/ws", echo)])


def serve_echo_workers(workers: int, port: int) -> None:
    """The echo under uvicorn's own worker supervisor, as ``vocable serve --workers`` runs vocable."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("ws_capacity:echo_app", factory=True, host="127.0.0.1", port=port, workers=workers,
                            log_level="warning", ws_max_size=1 << 20, lifespan="on")
    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()


def pipecat_app() -> Any:
    from _pipecat_fakes import RawPCMSerializer, quiet_pipecat_logs
    from fastapi import FastAPI
    from pipecat.transports.websocket.fastapi import (
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )

    quiet_pipecat_logs()
    app = FastAPI()

    @app.websocket("/ws")
    async def session(websocket: WebSocket) -> None:
        await websocket.accept()
        await run_pipecat(FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, audio_in_sample_rate=RATE,
            audio_out_sample_rate=RATE, audio_out_10ms_chunks=FRAME_MS // 10, add_wav_header=False,
            serializer=RawPCMSerializer(RATE))))

    return app


async def run_pipecat(transport: Any) -> None:
    """The instant scripted pipeline behind one connection's Pipecat ``transport``, until the client goes
    (phone_capacity.py runs it behind Pipecat's Twilio serializer)."""
    from _pipecat_fakes import (
        EndOfSpeechAndFinalTranscript,
        ScriptedLLMService,
        ScriptedSTTService,
        ScriptedTTSService,
        energy_vad,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.turns.user_start import (
        TranscriptionUserTurnStartStrategy,
        VADUserTurnStartStrategy,
    )
    from pipecat.turns.user_turn_strategies import UserTurnStrategies
    from pipecat.workers.runner import WorkerRunner

    context = LLMContext([{"role": "system", "content": "You are a concise, friendly voice assistant."}])
    strategies = UserTurnStrategies(start=[VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()],
                                    stop=[EndOfSpeechAndFinalTranscript()])
    pair = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(
        vad_analyzer=energy_vad(stop_secs=HANGOVER_MS / 1000), user_turn_strategies=strategies))
    pipeline = Pipeline([
        transport.input(), ScriptedSTTService(transcript=TRANSCRIPT, interim_every_ms=200), pair.user(),
        ScriptedLLMService(reply=REPLY), ScriptedTTSService(chunk_ms=20), transport.output(), pair.assistant(),
    ])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
                            enable_rtvi=False, enable_turn_tracking=False, idle_timeout_secs=None)

    @transport.event_handler("on_client_disconnected")
    async def _gone(_transport, _client):  # type: ignore[no-untyped-def]
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def favour() -> None:
    """Other work on this shared machine only adds lateness: give ours a head start (same for every server)."""
    try:
        os.nice(-10)
    except OSError:
        pass


def serve(kind: str, port: int, variant: str = "") -> None:
    favour()
    base, workers = split_kind(kind)
    if workers and base == "vocable":  # the workers and the load generator share every CPU
        return serve_vocable_workers(workers, port)
    if workers:
        return serve_echo_workers(workers, port)
    os.sched_setaffinity(0, {SERVER_CPU})
    instant_fake_audio()
    if variant:
        import _experiments

        _experiments.apply(variant)
    import logging

    import structlog
    import uvicorn

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    app = {"vocable": vocable_app, "pipecat": pipecat_app, "echo": echo_app, "echo_direct": echo_app}[kind]()
    # uvicorn as `vocable serve` runs it; the echo and Pipecat on uvicorn's own WebSocket protocol, vocable on
    # its subclass that offers direct frames (which only vocable's transport uses)
    options: dict[str, object] = {"ws_max_size": 1 << 20, "lifespan": "on"}
    if kind in ("vocable", "echo_direct"):
        try:
            from vocable.transports.direct_frames import SERVE_OPTIONS
        except ImportError:  # a revision from before direct frames (ab_variants.py --revs)
            SERVE_OPTIONS = options
        options = SERVE_OPTIONS
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **options)  # type: ignore[arg-type]


# ================================================================================================ client


class Session(asyncio.Protocol):
    """A minimal WebSocket client: raw PCM out at real time, arrival times of binary messages in."""

    def __init__(self, path: str, port: int, offset_ms: float) -> None:
        self.path, self.port, self.offset_ms = path, port, offset_ms
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.buffer = bytearray()
        self.t0 = 0.0  # when frame 0 was due
        self.sent = 0
        self.arrivals: list[float] = []
        self.sizes: list[int] = []
        self.texts = 0
        self.closed = False

    # --------------------------------------------------------------------- protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://127.0.0.1:{self.port}\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        clock = time.perf_counter()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                return
            self.upgraded = True
            if not self.ready.done():
                self.ready.set_result(None)
        buf = self.buffer
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if len(buf) < offset + length:
                return
            if opcode == 2 or (opcode == 0 and self.sizes):
                self.arrivals.append(clock)
                self.sizes.append(length)
            elif opcode == 1:
                self.texts += 1
            elif opcode == 9:  # ping: answer with the same payload
                self.write_frame(bytes(buf[offset : offset + length]), 0xA)
            elif opcode == 8:
                self.closed = True
            del buf[: offset + length]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost"))

    # --------------------------------------------------------------------- sending
    def write_frame(self, payload: bytes, opcode: int = 2) -> None:
        """A masked frame with an all-zero mask (legal, and the payload needs no XOR)."""
        if self.transport is None or self.closed or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB4x", 0x80 | opcode, 0x80 | n)
        else:
            header = struct.pack("!BBH4x", 0x80 | opcode, 0x80 | 126, n)
        self.transport.write(header + payload)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.write_frame(struct.pack("!H", 1000), 8)
            self.transport.close()


def lateness_ms(s: Session, window: tuple[float, float]) -> tuple[list[float], int]:
    """Lateness of every binary message that arrived inside ``window``, grouped by the session's cycles."""
    out: list[float] = []
    bursts: set[int] = set()
    anchor = 0.0
    pos = 0.0
    group = None
    for t, size in zip(s.arrivals, s.sizes):
        cycle = int(((t - s.t0) * 1000 + s.offset_ms - TONE_TO_MS) // CYCLE_MS)
        if cycle != group:
            group, pos, anchor = cycle, 0.0, float("inf")
        anchor = min(anchor, t - pos)
        if window[0] <= t <= window[1]:
            out.append((t - pos - anchor) * 1000)
            bursts.add(cycle)
        pos += size / 2 / RATE
    return out, len(bursts)


async def load(kind: str, port: int, n: int, window_s: float, server_pid: int, seed: int,
               ramp_per_s: float = 0.0) -> dict[str, Any]:
    """Run one step: warm up, open ``n`` sessions, measure for ``window_s``, close them. ``ramp_per_s``: open
    them at this rate (0: in batches of 25 as fast as they open); refused handshakes are timed."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    path = path_of(kind)
    silence = bytes(FRAME_BYTES)
    from vocable.testing.fakes import tone

    speech = tone(FRAME_MS, RATE)
    sessions: list[Session] = []
    send_late: list[float] = []
    slots: dict[int, list[Session]] = {i: [] for i in range(FRAME_MS)}  # 1 ms slots inside each 20 ms
    stopping = False

    def tick(slot: int, due: float) -> None:
        late = time.perf_counter() - due
        if len(send_late) < 200000:
            send_late.append(late * 1000)
        for s in slots[slot]:
            if s.closed:
                continue
            if s.t0 == 0.0:
                s.t0 = due
            k = s.sent
            at = (k * FRAME_MS + s.offset_ms) % CYCLE_MS
            s.write_frame(speech if TONE_FROM_MS <= at < TONE_TO_MS else silence)
            s.sent += 1
        if not stopping:
            nxt = due + FRAME_MS / 1000
            loop.call_at(loop.time() + (nxt - time.perf_counter()), tick, slot, nxt)

    refusals_ms: list[float] = []

    async def open_one(offset_ms: float) -> Session | None:
        s = Session(path, port, offset_ms)
        asked = time.perf_counter()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: s, "127.0.0.1", port), 10)
            await asyncio.wait_for(s.ready, 10)
        except (OSError, ConnectionError, TimeoutError) as exc:
            if " 503 " in str(exc):  # shed before the upgrade (server.max_loop_lag_ms)
                refusals_ms.append((time.perf_counter() - asked) * 1000)
            s.close()
            return None
        return s

    # warm-up: two short sessions, so lazily imported code and first-use caches are in the baseline
    warm = [s for s in await asyncio.gather(*(open_one(0.0) for _ in range(2))) if s is not None]
    for s in warm:
        for _ in range(5):
            s.write_frame(silence)
    await asyncio.sleep(1.0)
    for s in warm:
        s.close()
    await asyncio.sleep(1.0)
    rss0 = family_rss_bytes(server_pid)
    threads0 = family_threads(server_pid)

    start = time.perf_counter()
    for i in range(FRAME_MS):
        due = start + 0.05 + i / 1000
        loop.call_at(loop.time() + (due - time.perf_counter()), tick, i, due)
    failed = 0
    batch = max(1, round(ramp_per_s / 10)) if ramp_per_s else 25
    for i in range(0, n, batch):
        if ramp_per_s:
            await asyncio.sleep(max(0.0, start + i / ramp_per_s - time.perf_counter()))
        opened = await asyncio.gather(*(open_one(rng.uniform(0, CYCLE_MS)) for _ in range(min(batch, n - i))))
        for s in opened:
            if s is None:
                failed += 1
                continue
            sessions.append(s)
            slots[rng.randrange(FRAME_MS)].append(s)
        await asyncio.sleep(0.02)
    ramp_s = time.perf_counter() - start
    await asyncio.sleep(1.5)  # settle: every session has gone through its first frames
    w0 = time.perf_counter()
    cpu0 = family_cpu_s(server_pid)
    client_cpu0 = proc_cpu_s(os.getpid())
    send_late.clear()
    rss_peak = 0
    while time.perf_counter() - w0 < window_s:
        await asyncio.sleep(0.5)
        rss_peak = max(rss_peak, family_rss_bytes(server_pid))
    w1 = time.perf_counter()
    cpu1 = family_cpu_s(server_pid)
    client_cpu1 = proc_cpu_s(os.getpid())
    threads1 = family_threads(server_pid)
    stopping = True
    late: list[float] = []
    bursts = 0
    for s in sessions:
        values, b = lateness_ms(s, (w0, w1))
        late.extend(values)
        bursts += b
    dropped = sum(1 for s in sessions if s.closed)
    for s in sessions:
        s.close()
    await asyncio.sleep(0.5)
    expected = len(sessions) * window_s * 1000 / CYCLE_MS
    return {
        "kind": kind, "sessions": n, "connected": len(sessions), "failed_connects": failed,
        "dropped": dropped, "ramp_s": round(ramp_s, 2), "window_s": round(w1 - w0, 2),
        "frames": len(late), "replies": bursts, "replies_expected": round(expected, 1),
        "lateness_p50_ms": round(pct(late, 50), 3), "lateness_p99_ms": round(pct(late, 99), 3),
        "lateness_max_ms": round(max(late) if late else float("nan"), 3),
        "client_send_late_p99_ms": round(pct(send_late, 99), 3),
        "server_cpu_pct": round((cpu1 - cpu0) / (w1 - w0) * 100, 1),
        "client_cpu_pct": round((client_cpu1 - client_cpu0) / (w1 - w0) * 100, 1),
        "rss_base_mib": round(rss0 / 2**20, 1), "rss_mib": round(rss_peak / 2**20, 1),
        "rss_per_session_mib": round((rss_peak - rss0) / 2**20 / max(1, len(sessions)), 3),
        "threads_base": threads0, "threads": threads1,
        "texts_per_s": round(sum(s.texts for s in sessions) / max(1e-9, time.perf_counter() - start), 1),
        "refused": len(refusals_ms), "refusal_p50_ms": round(pct(refusals_ms, 50), 2),
        "refusal_p99_ms": round(pct(refusals_ms, 99), 2),
    }


def run_load(args: argparse.Namespace) -> None:
    if not workers_of(args.kind):
        os.sched_setaffinity(0, {CLIENT_CPU})
    favour()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(load(args.kind, args.port, args.n, args.window_s, args.server_pid, args.seed,
                              args.ramp_per_s))
    print(json.dumps(result), flush=True)


# ================================================================================================ orchestration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start listening")


def step(kind: str, n: int, window_s: float, seed: int, variant: str = "", source: str | None = None) -> dict[str, Any]:
    """One measuring step on a fresh server; ``source`` is a directory holding another ``vocable`` package
    (a checkout's ``src``) for the server to import instead of the installed one (A/B of revisions)."""
    port = free_port()
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    server = subprocess.Popen([sys.executable, str(HERE), "--serve", kind, "--port", str(port), "--variant", variant],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_listening(port, server)
        time.sleep(0.5)
        budget = 60 + n / 20 + window_s * 2
        client = subprocess.run(
            [sys.executable, str(HERE), "--load", kind, "--port", str(port), "--n", str(n), "--window-s",
             str(window_s), "--server-pid", str(server.pid), "--seed", str(seed)],
            capture_output=True, text=True, timeout=budget, check=False)
        lines = [line for line in client.stdout.splitlines() if line.startswith("{")]
        if client.returncode != 0 or not lines:
            raise RuntimeError(f"load generator failed: {client.stderr[-2000:]}")
        return json.loads(lines[-1])
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def verdict(r: dict[str, Any]) -> tuple[bool, str]:
    if r["connected"] < r["sessions"] or r["dropped"]:
        return False, "sessions refused or dropped"
    if r["replies"] < 0.9 * r["replies_expected"]:
        return False, "replies missing"
    if not r["lateness_p99_ms"] < LATENESS_GOAL_MS:
        return False, "lateness"
    if r["client_send_late_p99_ms"] > 10:
        return False, "client saturated"
    return True, "ok"


class Search:
    """One server's capacity search: step up by doubling until a step fails, then bisect to ~10 %.

    A step failing on lateness or missing replies is tried once more (noise from other processes only
    ever makes a step worse). ``search_all`` runs several searches in lockstep, one step of each in turn,
    so a noisy stretch of a shared machine falls on every server alike instead of on whichever ran then.
    """

    def __init__(self, kind: str, start: int, max_n: int, max_steps: int, retry: bool = True,
                 variant: str = "") -> None:
        self.kind, self.max_n, self.max_steps, self.retry, self.variant = kind, max_n, max_steps, retry, variant
        self.n: int | None = start
        self.steps = 0
        self.retrying = False
        self.best: dict[str, Any] | None = None
        self.worst: dict[str, Any] | None = None

    def seed(self) -> int:
        return self.steps + (100 if self.retrying else 0)

    def record(self, r: dict[str, Any], log: list[dict[str, Any]]) -> None:
        """Take one step's result and decide the next N (``self.n`` is None once the search is over)."""
        assert self.n is not None
        ok, why = verdict(r)
        if not ok and why in ("lateness", "replies missing") and self.retry and not self.retrying:
            r["pass"], r["why"] = ok, why + " (retried)"
            log.append(r)
            self.retrying = True  # the same N once more
            return
        self.retrying = False
        r["pass"], r["why"] = ok, why
        log.append(r)
        self.steps += 1
        print(f"  {self.kind:8} N={self.n:5}  p99 {r['lateness_p99_ms']:8.2f} ms  cpu {r['server_cpu_pct']:5.1f}%  "
              f"rss/session {r['rss_per_session_mib']:.3f} MiB  replies {r['replies']}/{r['replies_expected']}  "
              f"client cpu {r['client_cpu_pct']}%  -> {why}", file=sys.stderr, flush=True)
        if ok:
            self.best = r
        else:
            self.worst = r
            if why == "client saturated":
                self.n = None
                return
        if self.steps >= self.max_steps:
            self.n = None
        elif self.worst is None:
            self.n = None if self.n >= self.max_n else min(self.max_n, self.n * 2)
        else:
            low = self.best["sessions"] if self.best else 0
            high = self.worst["sessions"]
            self.n = None if high - low <= max(2, low // 10) else (low + high) // 2

    def result(self) -> dict[str, Any]:
        best, worst = self.best, self.worst
        result = dict(best) if best else {"sessions": 0}
        result["capacity"] = best["sessions"] if best else 0
        result["first_failing"] = worst["sessions"] if worst else None
        result["first_failing_why"] = worst["why"] if worst else None
        result["client_limited"] = bool(worst and worst["why"] == "client saturated")
        return result


def search_all(searches: list[Search], window_s: float, log: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run the searches interleaved, one step of each in turn, until all are over."""
    while active := [s for s in searches if s.n is not None]:
        for s in active:
            assert s.n is not None
            s.record(step(s.kind, s.n, window_s, seed=s.seed(), variant=s.variant), log)
    return {s.kind: s.result() for s in searches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="vocable,pipecat,echo")
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--start", type=int, default=10)
    parser.add_argument("--max-sessions", type=int, default=2560)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="6 s windows, at most 9 steps per server")
    parser.add_argument("--at", type=int, help="run one step at this many sessions per kind, no search")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ramp-per-s", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", help="vocable only: proposed changes from _experiments.py to "
                        "apply in its server process (comma-separated), to measure them before they land")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port, args.variant)
    if args.load:
        args.kind = args.load
        return run_load(args)
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        sys.exit("needs 2 CPUs: the server on one, the load generator on the other")
    if args.quick:
        args.window_s, args.max_steps = min(args.window_s, 6.0), min(args.max_steps, 9)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    log: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    if args.at:
        for kind in kinds:
            r = step(kind, args.at, args.window_s, seed=0, variant=args.variant if kind == "vocable" else "")
            r["pass"], r["why"] = verdict(r)
            r["capacity"] = args.at if r["pass"] else 0
            log.append(r)
            results[kind] = r
    else:
        results = search_all([Search(kind, args.start, args.max_sessions, args.max_steps,
                                     variant=args.variant if kind == "vocable" else "") for kind in kinds],
                             args.window_s, log)
    figures: dict[str, Any] = {"window_s": args.window_s, "lateness_goal_ms": LATENESS_GOAL_MS,
                               "vocable_variant": args.variant or None}
    rows = []
    for kind, r in results.items():
        cap = r.get("capacity", 0)
        cpu_per = r["server_cpu_pct"] / cap if cap else float("nan")
        figures[f"{kind}_capacity"] = cap
        figures[f"{kind}_first_failing"] = r.get("first_failing")
        figures[f"{kind}_first_failing_why"] = r.get("first_failing_why")
        figures[f"{kind}_client_limited"] = r.get("client_limited", False)
        for key in ("lateness_p50_ms", "lateness_p99_ms", "server_cpu_pct", "rss_per_session_mib", "rss_base_mib",
                    "threads"):
            figures[f"{kind}_{key}"] = r.get(key)
        figures[f"{kind}_cpu_per_session_pct"] = round(cpu_per, 3)
        # what one core would carry if CPU were the only limit (robust to lateness noise from other processes)
        figures[f"{kind}_cpu_bound_sessions_per_core"] = round(100 / cpu_per) if cap else None
        rows.append((kind, cap, r.get("lateness_p99_ms"), r.get("server_cpu_pct"), round(cpu_per, 3),
                     figures[f"{kind}_cpu_bound_sessions_per_core"], r.get("rss_per_session_mib"), r.get("threads")))
    if "vocable" in results:
        voc = results["vocable"].get("capacity", 0)
        for other in ("pipecat", "echo", "echo_direct"):
            if other in results and results[other].get("capacity"):
                figures[f"vocable_vs_{other}"] = round(voc / results[other]["capacity"], 2)
            if figures.get(f"{other}_cpu_bound_sessions_per_core") and figures.get("vocable_cpu_bound_sessions_per_core"):
                figures[f"vocable_vs_{other}_cpu_bound"] = round(
                    figures["vocable_cpu_bound_sessions_per_core"] / figures[f"{other}_cpu_bound_sessions_per_core"], 2)
        figures["goal_vs_pipecat"] = ">= 3x"
        figures["goal_vs_echo"] = ">= 0.8x"
        figures["goal_memory"] = "<= 2 MiB per session"
        if "vocable_vs_pipecat" in figures and "vocable_vs_echo" in figures:
            figures["goal_met"] = (figures["vocable_vs_pipecat"] >= 3 and figures["vocable_vs_echo"] >= 0.8
                                   and (figures.get("vocable_rss_per_session_mib") or 99) <= 2)
        else:
            figures["goal_met"] = None  # needs all three servers in the same run
    for kind in results:  # several workers: what they add over one process, and against the echo's workers
        base, workers = split_kind(kind)
        cap = results[kind].get("capacity", 0)
        if workers and base == "vocable":
            for other in ("vocable", f"echo_w{workers}", "echo"):
                if results.get(other, {}).get("capacity"):
                    figures[f"{kind}_vs_{other}"] = round(cap / results[other]["capacity"], 2)
    figures["steps"] = [{k: r[k] for k in ("kind", "sessions", "lateness_p99_ms", "server_cpu_pct",
                                           "rss_per_session_mib", "client_cpu_pct", "why")} for r in log]
    print(f"WebSocket capacity at lateness p99 < {LATENESS_GOAL_MS:g} ms (one-process servers on CPU {SERVER_CPU}, "
          f"load from CPU {CLIENT_CPU}; _wN servers and their load share every CPU; {args.window_s:g} s windows)")
    print(table(("server", "sessions", "p99 ms", "cpu %", "cpu %/session", "cpu-bound/core", "MiB/session",
                 "threads"), rows))
    emit(figures)


if __name__ == "__main__":
    main()
