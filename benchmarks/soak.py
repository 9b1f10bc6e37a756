"""Sessions in a row against one server: does anything grow?

Default: 1,000 sequential WebSocket sessions. Each connects to ``/ws/audio`` on 127.0.0.1, sends a little audio
and a typed turn, reads the reply and ends (every tenth one vanishes without a close frame instead, to exercise
the abrupt path). The server runs in this process's event loop with scripted providers, so its asyncio tasks
can be counted; the client is a plain websocket client in the same loop. RSS and task count are taken after a
warm-up and at the end. Goal: RSS growth under 10 MiB, tasks back to baseline.

``--offline``: the built-in offline default (whisper, smollm, piper, silero: the real local models, loaded from
their packages) under ``vocable serve`` in a subprocess, run by the CLI itself with rate limits off and
``resume_grace_s: 0``, plus one read-only route that reports the server's task count after a garbage collection.
Each session sends 200 ms of silence and one typed question (its words and length vary), reads the reply up to
the turn's ``metrics`` event, and ends as above; ``--concurrency`` sessions at a time. The server's RSS
(``/proc/PID/status`` VmRSS, so the client is not in it) is read after ``--warmup`` sessions, halfway through
``--sessions`` and at the end. Goal: growth over the second half under 50 MiB, no task or session left.

Last line: a JSON object of the figures.
Usage: python benchmarks/soak.py [--sessions 1000]
       python benchmarks/soak.py --offline [--sessions 500] [--warmup 50] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import structlog
import uvicorn
import websockets
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import proc_cpu_s
from vocable import Engine
from vocable.testing.fakes import tone
from vocable.transports.direct_frames import SERVE_OPTIONS

CONFIG = {
    "server": {"rate_limit_per_minute": 0, "max_sessions": 20, "resume_grace_s": 0},
    "transports": {"websocket": {}},
    "pipeline": {
        "vad": {"provider": "energy"},
        "turn": {"provider": "silence", "hangover_ms": 200},
        "stt": {"provider": "scripted"},
        "llm": {"provider": "scripted", "reply": "Short answer. Done."},
        "tts": {"provider": "scripted", "ms_per_char": 2},
    },
    "metrics": [{"provider": "prometheus"}],
}
PLUGINS = ["vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.websocket"]


def rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def one_session(url: str, index: int, audio: bytes, text: str | None = None,
                      reply_timeout: float = 10) -> dict[str, Any]:
    """One session: audio, a typed turn, its reply up to ``metrics``, then the end (or, every tenth, a vanishing).
    Returns the ``metrics`` event and the codes of any ``error`` events."""
    errors: list[str] = []
    async with websockets.connect(url, max_size=None, proxy=None, open_timeout=10) as ws:
        json.loads(await ws.recv())
        for i in range(0, len(audio), 640):
            await ws.send(audio[i : i + 640])
        await ws.send(json.dumps({"type": "text", "text": text or f"question {index}"}))
        async with asyncio.timeout(reply_timeout):
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    event = json.loads(message)
                    if event["type"] == "error":
                        errors.append(event.get("code", "?"))
                    elif event["type"] == "metrics":
                        break
        if index % 10 == 9:
            ws.transport.abort()  # vanish: no close frame
            return {"metrics": event, "errors": errors}
        await ws.send(json.dumps({"type": "end"}))
        async with asyncio.timeout(5):
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed:
                pass
    return {"metrics": event, "errors": errors}


async def settle(engine: Engine) -> None:
    for _ in range(200):
        if not engine.sessions:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    gc.collect()


async def scripted(sessions: int, warmup: int) -> dict[str, float | int | bool]:
    engine = Engine.from_dict(CONFIG, autoload=False, plugins=PLUGINS, freeze_gc=True)  # as `vocable serve`
    server = uvicorn.Server(uvicorn.Config(engine.asgi_app(), host="127.0.0.1", port=0, log_level="warning",
                                           **SERVE_OPTIONS))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/ws/audio"
    audio = tone(200, 16000)
    for i in range(warmup):
        await one_session(url, i, audio)
    await settle(engine)
    rss_before, tasks_before = rss_mib(), len(asyncio.all_tasks())
    started = time.perf_counter()
    for i in range(sessions):
        await one_session(url, i, audio)
    elapsed = time.perf_counter() - started
    await settle(engine)
    rss_after, tasks_after = rss_mib(), len(asyncio.all_tasks())
    open_sessions = len(engine.sessions)
    server.should_exit = True
    await serving
    return {
        "sessions": sessions,
        "seconds": round(elapsed, 1),
        "sessions_per_s": round(sessions / elapsed, 1),
        "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
        "rss_growth_mib": round(rss_after - rss_before, 2),
        "tasks_before": tasks_before,
        "tasks_after": tasks_after,
        "sessions_left_open": open_sessions,
        "fds": len(os.listdir("/proc/self/fd")),
        "goal_met": (rss_after - rss_before) < 10 and tasks_after <= tasks_before and open_sessions == 0,
    }


# ------------------------------------------------------------------------------------------ --offline

PROBE_PATH = "/soak-probe"
TOPICS = ("the moon", "coffee", "Tokyo", "bicycles", "rain", "chess", "whales", "bread", "volcanoes", "jazz",
          "autumn", "the number {n}")
FORMS = ("What is {t}?", "Tell me one fact about {t}.", "Give me a short tip about {t}, please.",
         "In a few words, why do people like {t}?")
MORE = " I am asking because I am curious, and I would like a short, clear answer that I can remember later."


def question(index: int) -> str:
    """A typed question whose words and length vary with ``index`` (about 15 to 330 characters)."""
    topic = TOPICS[index % len(TOPICS)].format(n=index)
    return FORMS[index // len(TOPICS) % len(FORMS)].format(t=topic) + MORE * (index % 4)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_state() -> dict[str, float]:
    """glibc's view: memory malloc holds free (not given back to the system) and memory in use (MiB)."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc >= 2.33
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"malloc_free_mib": round(info.fordblks / 2**20, 1),
            "malloc_used_mib": round((info.uordblks + info.hblkhd) / 2**20, 1)}


def serve_with_probe(config: str, port: int) -> int:
    """The ``--offline`` server: ``vocable serve -c CONFIG --port PORT`` run by the CLI itself, with one extra
    route, ``GET /soak-probe``: after a garbage collection, the loop's task count, open sessions and RSS."""
    from vocable import cli
    from vocable.engine.engine import Engine

    plain_app = Engine.asgi_app

    def asgi_app(engine: Engine) -> Any:
        app = plain_app(engine)

        async def with_probe(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] != PROBE_PATH:
                return await app(scope, receive, send)
            gc.collect()
            body = {"tasks": len(asyncio.all_tasks()), "sessions": len(engine.sessions), "rss_mib": rss_mib(),
                    **malloc_state()}
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(body).encode()})

        return with_probe

    Engine.asgi_app = asgi_app  # type: ignore[method-assign]
    return cli.main(["serve", "-c", config, "--port", str(port)])


def offline_config(port: int) -> dict[str, Any]:
    """The built-in default as ``vocable serve`` reads it with no ``-c``, with rate limits off and no resume."""
    from vocable.cli import default_config_path

    config = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    config["server"] = {**config.get("server", {}), "port": port, "rate_limit_per_minute": 0,
                        "max_turns_per_minute": 0, "resume_grace_s": 0}
    return config


def get_json(url: str, timeout: float = 30) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OfflineSoak:
    def __init__(self, base: str, pid: int, concurrency: int, reply_timeout: float) -> None:
        self.base, self.pid = base, pid
        self.url = base.replace("http://", "ws://") + "/ws/audio"
        self.concurrency, self.reply_timeout = concurrency, reply_timeout
        self.audio = bytes(6400)  # 200 ms of silence: the VAD runs, no speech turn starts
        self.done = 0
        self.began = time.perf_counter()
        self.durations: list[float] = []
        self.failures: list[str] = []
        self.turn_errors: Counter[str] = Counter()
        self.providers: Counter[str] = Counter()
        self.samples: list[tuple[int, float]] = []

    async def run(self, count: int) -> None:
        indices = iter(range(self.done, self.done + count))  # shared: each session is taken by one worker

        async def worker() -> None:
            for index in indices:
                began = time.perf_counter()
                try:
                    result = await one_session(self.url, index, self.audio, question(index), self.reply_timeout)
                except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
                    self.failures.append(f"{index}: {exc!r}")
                else:
                    self.durations.append(time.perf_counter() - began)
                    self.turn_errors.update(result["errors"])
                    metrics = result["metrics"]
                    self.providers[f"{metrics.get('llm_provider')}+{metrics.get('tts_provider')}"] += 1
                self.done += 1
                if self.done % 25 == 0:
                    self.samples.append((self.done, round(rss_mib(self.pid), 1)))
                    print(f"  {self.done:4d} sessions, {time.perf_counter() - self.began:6.0f} s, "
                          f"server RSS {self.samples[-1][1]:.1f} MiB", flush=True)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def probe(self) -> dict[str, Any]:
        """The server once every session has closed: tasks, sessions and RSS after a garbage collection."""
        for _ in range(100):
            state = await asyncio.to_thread(get_json, self.base + PROBE_PATH)
            if state["sessions"] == 0:
                break
            await asyncio.sleep(0.1)
        return dict(state)


async def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 600) -> dict[str, Any]:
    """``/health`` once the models have loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            health = await asyncio.to_thread(get_json, base + "/health", 5)
            if health["status"] == "ok":
                return dict(health)
        except OSError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the server was not ready within {timeout:.0f} s")


async def offline(sessions: int, warmup: int, concurrency: int, reply_timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vocable-soak-") as tmp:
        port = free_port()
        config = Path(tmp, "offline.yaml")
        config.write_text(yaml.safe_dump(offline_config(port)), encoding="utf-8")
        log_path = Path(tmp, "server.log")
        env = {**os.environ, "VOCABLE_DB": str(Path(tmp, "sessions.db"))}
        with open(log_path, "wb") as log:
            server = subprocess.Popen([sys.executable, __file__, "--serve", str(config), "--port", str(port)],
                                      stdout=log, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            loading = time.perf_counter()
            health = await wait_ready(base, server)
            print(f"server pid {server.pid} ready in {time.perf_counter() - loading:.1f} s, "
                  f"RSS {rss_mib(server.pid):.1f} MiB", flush=True)
            soak = OfflineSoak(base, server.pid, concurrency, reply_timeout)
            await soak.run(warmup)
            warm = await soak.probe()
            started, cpu_started = time.perf_counter(), proc_cpu_s(server.pid)
            await soak.run(sessions // 2)
            mid = await soak.probe()
            await soak.run(sessions - sessions // 2)
            end = await soak.probe()
            elapsed, cpu = time.perf_counter() - started, proc_cpu_s(server.pid) - cpu_started
        except BaseException:
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            server.kill()  # the figures are in: nothing to shut down gracefully
            server.wait()
    durations = soak.durations
    second_half = end["rss_mib"] - mid["rss_mib"]
    answered = sum(n for pair, n in soak.providers.items() if "None" not in pair)
    return {
        "mode": "offline",
        "sessions": sessions,
        "warmup": warmup,
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "session_s_p50": round(statistics.median(durations), 2) if durations else None,
        "session_s_max": round(max(durations), 2) if durations else None,
        "server_cpu_s_per_session": round(cpu / sessions, 2),
        "rss_warm_mib": round(warm["rss_mib"], 1),
        "rss_mid_mib": round(mid["rss_mib"], 1),
        "rss_end_mib": round(end["rss_mib"], 1),
        "growth_first_half_mib": round(mid["rss_mib"] - warm["rss_mib"], 1),
        "growth_second_half_mib": round(second_half, 1),
        # glibc's share: freed memory malloc keeps, and memory in use, after warm-up, at midpoint and at the end
        "malloc_free_mib": [probe.get("malloc_free_mib") for probe in (warm, mid, end)],
        "malloc_used_mib": [probe.get("malloc_used_mib") for probe in (warm, mid, end)],
        "tasks_warm": warm["tasks"],
        "tasks_end": end["tasks"],
        "tasks_left": end["tasks"] - warm["tasks"],
        "sessions_left_open": end["sessions"],
        "failed_sessions": len(soak.failures),
        "first_failures": soak.failures[:3],
        "turns_answered": answered,
        "turn_errors": dict(soak.turn_errors),
        "llm_tts": dict(soak.providers),
        "rss_every_25": soak.samples,
        "providers": health["providers"],
        # and the models really worked: a turn that failed (say, the LLM's 10 s first-token timeout on a busy
        # machine; three in a row open its breaker for 30 s) skips them
        "goal_met": second_half < 50 and end["tasks"] <= warm["tasks"] and end["sessions"] == 0 and not soak.failures
        and answered >= 0.9 * (sessions + warmup),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--offline", action="store_true", help="the offline default's real models, under vocable serve")
    parser.add_argument("--sessions", type=int, help="measured sessions (default 1000; --offline: 500)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4, help="--offline: sessions at a time")
    parser.add_argument("--reply-timeout", type=float, default=120, help="--offline: seconds for one turn")
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)  # the --offline server process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        sys.exit(serve_with_probe(args.serve, args.port))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.offline:
        figures = asyncio.run(offline(args.sessions or 500, args.warmup, args.concurrency, args.reply_timeout))
        print(f"{figures['sessions']} sessions ({figures['concurrency']} at a time) in {figures['seconds']} s, "
              f"{figures['session_s_p50']} s a session (p50); server RSS {figures['rss_warm_mib']} after warm-up, "
              f"{figures['rss_mid_mib']} at midpoint, {figures['rss_end_mib']} MiB at the end "
              f"({figures['growth_second_half_mib']:+} MiB over the second half); tasks left: "
              f"{figures['tasks_left']}; failed sessions: {figures['failed_sessions']}")
        print(json.dumps(figures))
        sys.exit(0)
    sessions = args.sessions or 1000
    figures = asyncio.run(scripted(sessions, args.warmup))
    print(f"{sessions} sessions in {figures['seconds']} s; RSS {figures['rss_before_mib']} -> "
          f"{figures['rss_after_mib']} MiB ({figures['rss_growth_mib']:+} MiB); tasks {figures['tasks_before']} -> "
          f"{figures['tasks_after']}; sessions left open: {figures['sessions_left_open']}")
    print(json.dumps(figures))
