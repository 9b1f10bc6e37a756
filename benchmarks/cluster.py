"""A cluster's figures: load shedding past a node's capacity, Redis round trips per session, admissions per second.

1. **Shedding.** One vocable node (pinned to CPU 0, ``server.max_loop_lag_ms`` set) gets twice its capacity in
   sessions, opened at a steady rate by ``ws_capacity.py``'s load generator (pinned to CPU 1): the sessions it
   admits must keep frame lateness p99 < 20 ms (the capacity benchmark's measure), and the excess must be refused
   (HTTP 503 before the upgrade) in < 50 ms. ``--capacity``: the node's capacity from ``ws_capacity.py``.
2. **Redis round trips** per session, counted by the ledger: a token minted, a session admitted and opened, a
   finished turn, the session's end (auth on).
3. **Sessions admitted per second** by 1, 2 and 3 ``vocable serve`` nodes sharing one redis-server, auth on:
   each admission is a token (``POST /session``), a WebSocket handshake and its ``ready``. Nodes and client share
   this machine's cores, so more nodes than cores add little here; on separate machines they add up.

Needs ``redis-server`` (apt) and the ``redis`` package. Traffic goes to 127.0.0.1 only. Prints tables, then a JSON
object of every figure as the last line.
Usage: python benchmarks/cluster.py [--capacity 440] [--lag-ms 10] [--window-s 10] [--admissions 300] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ws_capacity
from _common import emit, table

HERE = Path(__file__).resolve()
KEY = "benchmark-api-key-0123456789"
REFUSAL_GOAL_MS = 50.0


# ------------------------------------------------------------------------------------------ 1. shedding


def serve_shedding(port: int, lag_ms: float) -> None:
    """``ws_capacity``'s vocable server, with load shedding on."""
    plain = ws_capacity.vocable_config

    def shedding() -> dict[str, Any]:
        config = plain()
        config["server"]["max_loop_lag_ms"] = lag_ms
        return config

    ws_capacity.vocable_config = shedding
    ws_capacity.serve("vocable", port)


def shedding_step(n: int, lag_ms: float, window_s: float, ramp_per_s: float) -> dict[str, Any]:
    port = ws_capacity.free_port()
    server = subprocess.Popen([sys.executable, str(HERE), "--serve-shedding", "--port", str(port), "--lag-ms",
                               str(lag_ms)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ws_capacity.wait_listening(port, server)
        time.sleep(0.5)
        client = subprocess.run(
            [sys.executable, str(ws_capacity.HERE), "--load", "vocable", "--port", str(port), "--n", str(n),
             "--window-s", str(window_s), "--server-pid", str(server.pid), "--ramp-per-s", str(ramp_per_s)],
            capture_output=True, text=True, timeout=120 + n / ramp_per_s + window_s * 2, check=False)
        lines = [line for line in client.stdout.splitlines() if line.startswith("{")]
        if client.returncode != 0 or not lines:
            raise RuntimeError(f"load generator failed: {client.stderr[-2000:]}")
        return dict(json.loads(lines[-1]))
    finally:
        server.terminate()
        server.wait(15)


# ------------------------------------------------------------------------------------------ redis


class Redis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.root = tempfile.mkdtemp(prefix="vocable-bench-redis-")
        self.port = ws_capacity.free_port()
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.root], stdout=subprocess.DEVNULL)
        ws_capacity.wait_listening(self.port, self.proc)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def node_config(redis_url: str, prefix: str) -> dict[str, Any]:
    config = ws_capacity.vocable_config()
    config["server"].update({"auth": {"api_key": KEY}, "resume_grace_s": 30})
    config["state"] = {"url": redis_url, "prefix": prefix}
    return config


# ------------------------------------------------------------------------------------------ 2. round trips


async def round_trips(redis_url: str) -> dict[str, int]:
    import httpx

    from vocable import Engine

    plugins = ["vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.websocket"]
    config = node_config(redis_url, "rt:")
    config["server"]["rate_limit_per_minute"] = 120  # the default: a rate-limit hit per token and per session
    engine = Engine.from_dict(config, autoload=False, plugins=plugins)
    ledger: Any = engine.ledger
    await engine.start()
    counts: dict[str, int] = {}

    def mark(what: str, since: int) -> int:
        counts[what] = ledger.round_trips - since
        return ledger.round_trips

    at = ledger.round_trips
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=engine.asgi_app()), base_url="http://b") as http:
        token = (await http.post("/session", headers={"Authorization": f"Bearer {KEY}"})).json()["token"]
    at = mark("token", at)
    admission = await engine.gate.admit(token=token, origin=None, host=None, client="203.0.113.1")
    session = await engine.open_session(transport="python", admission=admission, pace=False)
    at = mark("session_start", at)
    await session.send_text("hello")
    while (event := await session.events.get()) is not None and event.type != "metrics":
        pass
    at = mark("turn", at)
    await engine.close_session(session, "client_end")
    mark("session_end", at)
    await engine.stop()
    await ledger.aclose()
    return counts


# ------------------------------------------------------------------------------------------ 3. admissions


async def admit_many(bases: list[str], total: int, concurrency: int = 16) -> dict[str, Any]:
    import httpx
    import websockets

    done = 0
    failures = 0
    queue = list(range(total))

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal done, failures
        while queue:
            i = queue.pop()
            base = bases[i % len(bases)]
            try:
                token = (await http.post(f"{base}/session", headers={"Authorization": f"Bearer {KEY}"})).json()["token"]
                async with websockets.connect(f"{base.replace('http', 'ws')}/ws/audio?token={token}",
                                              open_timeout=10, proxy=None) as ws:
                    await ws.recv()  # ready
                done += 1
            except Exception:  # noqa: BLE001 - counted, not fatal
                failures += 1

    async with httpx.AsyncClient(timeout=10) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"admitted": done, "failed": failures, "seconds": round(elapsed, 2), "per_s": round(done / elapsed, 1)}


def admissions(redis_url: str, nodes: int, total: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="vocable-bench-nodes-"))
    config = root / "vocable.yaml"
    data = node_config(redis_url, f"n{nodes}:")
    data["server"]["rate_limit_per_minute"] = 0
    data["plugins"] = {"autoload": False, "modules": ["vocable.plugins.core", "vocable.testing.plugin",
                                                      "vocable.transports.websocket"]}
    config.write_text(json.dumps(data))
    ports = [ws_capacity.free_port() for _ in range(nodes)]
    procs = [subprocess.Popen([sys.executable, "-m", "vocable.cli", "serve", "-c", str(config), "--port", str(p)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for port, proc in zip(ports, procs):
            ws_capacity.wait_listening(port, proc)
        return asyncio.run(admit_many([f"http://127.0.0.1:{p}" for p in ports], total))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=440, help="the node's capacity (ws_capacity.py)")
    parser.add_argument("--lag-ms", type=float, default=10.0, help="server.max_loop_lag_ms of the shedding node")
    parser.add_argument("--ramp-per-s", type=float, default=60.0, help="new sessions a second at the shedding node")
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--admissions", type=int, default=300, help="sessions opened per node count")
    parser.add_argument("--quick", action="store_true", help="6 s window, 150 admissions")
    parser.add_argument("--serve-shedding", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_shedding:
        return serve_shedding(args.port, args.lag_ms)
    if args.quick:
        args.window_s, args.admissions = 6.0, 150
    figures: dict[str, Any] = {}

    shed = shedding_step(2 * args.capacity, args.lag_ms, args.window_s, args.ramp_per_s)
    figures["shedding"] = {k: shed[k] for k in ("sessions", "connected", "refused", "failed_connects", "dropped",
                                                "lateness_p50_ms", "lateness_p99_ms", "refusal_p50_ms",
                                                "refusal_p99_ms", "replies", "replies_expected", "server_cpu_pct")}
    figures["shedding"].update(lag_ms=args.lag_ms, ramp_per_s=args.ramp_per_s, capacity=args.capacity)
    figures["shedding_ok"] = (shed["lateness_p99_ms"] < ws_capacity.LATENESS_GOAL_MS
                              and shed["refused"] > 0 and shed["refusal_p99_ms"] < REFUSAL_GOAL_MS)
    print(table(["sessions offered", "admitted", "refused", "lateness p99 ms", "refusal p99 ms"],
                [[shed["sessions"], shed["connected"], shed["refused"], shed["lateness_p99_ms"],
                  shed["refusal_p99_ms"]]]))

    redis = Redis()
    try:
        figures["redis_round_trips"] = asyncio.run(round_trips(redis.url))
        print(table(["redis round trips", "count"], list(figures["redis_round_trips"].items())))
        rates = {n: admissions(redis.url, n, args.admissions) for n in (1, 2, 3)}
    finally:
        redis.stop()
    figures["admitted_per_s"] = {str(n): r["per_s"] for n, r in rates.items()}
    figures["admissions"] = {str(n): r for n, r in rates.items()}
    print(table(["nodes", "admitted", "failed", "seconds", "per s"],
                [[n, r["admitted"], r["failed"], r["seconds"], r["per_s"]] for n, r in rates.items()]))
    figures["cpus"] = os.cpu_count()
    emit(figures)


if __name__ == "__main__":
    main()
