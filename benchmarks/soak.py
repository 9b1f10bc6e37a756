"""1,000 sequential WebSocket sessions against one server: does anything grow?

Each session connects to ``/ws/audio`` on 127.0.0.1, sends a little audio and a typed turn, reads the reply
and ends (every tenth one vanishes without a close frame instead, to exercise the abrupt path). The server runs
in this process's event loop with scripted providers, so its asyncio tasks can be counted; the client is a
plain websocket client in the same loop. RSS and task count are taken after a warm-up and at the end.

Goal: RSS growth under 10 MiB, tasks back to baseline. Last line: a JSON object of the figures.
Usage: python benchmarks/soak.py [--sessions 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import time

import structlog
import uvicorn
import websockets

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


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def one_session(url: str, index: int, audio: bytes) -> None:
    async with websockets.connect(url, max_size=None, proxy=None, open_timeout=10) as ws:
        json.loads(await ws.recv())
        for i in range(0, len(audio), 640):
            await ws.send(audio[i : i + 640])
        await ws.send(json.dumps({"type": "text", "text": f"question {index}"}))
        async with asyncio.timeout(10):
            while True:
                message = await ws.recv()
                if isinstance(message, str) and json.loads(message)["type"] == "metrics":
                    break
        if index % 10 == 9:
            ws.transport.abort()  # vanish: no close frame
            return
        await ws.send(json.dumps({"type": "end"}))
        async with asyncio.timeout(5):
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed:
                pass


async def settle(engine: Engine) -> None:
    for _ in range(200):
        if not engine.sessions:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    gc.collect()


async def main(sessions: int, warmup: int) -> dict[str, float | int | bool]:
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures = asyncio.run(main(args.sessions, args.warmup))
    print(f"{args.sessions} sessions in {figures['seconds']} s; RSS {figures['rss_before_mib']} -> "
          f"{figures['rss_after_mib']} MiB ({figures['rss_growth_mib']:+} MiB); tasks {figures['tasks_before']} -> "
          f"{figures['tasks_after']}; sessions left open: {figures['sessions_left_open']}")
    print(json.dumps(figures))
