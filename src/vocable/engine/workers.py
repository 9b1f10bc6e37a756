"""``vocable serve --workers N``: N processes on one listening socket, one shared ledger.

One Python process runs its event loop on one core, and a voice session's work (framing, VAD, pacing,
the socket) is CPU work, so a server past one core's worth of sessions needs more processes. The supervisor
binds the socket, creates the shared ledger (``engine/ledger.py``) in a private directory, and starts the
workers with uvicorn's process supervisor, which restarts a worker that dies and replaces all of them, one
by one, on SIGHUP. The kernel spreads new connections over the workers.

What the workers share: the token-signing secret, single-use tokens, dropped conversations waiting to resume,
the per-address rate limit, and a heartbeat each second with their sessions and metrics, so that ``/health``,
``/sessions`` and ``/metrics`` on any worker describe the whole server. What stays per worker: the models
(each worker loads its own), ``server.max_sessions``, and the WebRTC peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from vocable.engine.engine import Engine

log = structlog.get_logger("vocable.workers")

CONFIG_ENV = "VOCABLE_WORKER_CONFIG"
LEDGER_ENV = "VOCABLE_WORKER_LEDGER"
HEARTBEAT_S = 1.0
STALE_AFTER_S = 5.0  # a worker not heard from for this long is gone (killed, or restarting)


# ------------------------------------------------------------------------------------------ the supervisor


def serve_workers(config_path: str | None, *, host: str, port: int, workers: int, log_level: str) -> None:
    """Run ``workers`` worker processes until SIGINT or SIGTERM (the supervisor never serves a request)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from vocable.engine.ledger import create_shared_ledger

    state = tempfile.mkdtemp(prefix="vocable-workers-")  # 0700: only this user can read the shared secret
    try:
        ledger = os.path.join(state, "ledger.sqlite3")
        create_shared_ledger(ledger)
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve()) if config_path else ""
        os.environ[LEDGER_ENV] = ledger
        config = uvicorn.Config("vocable.engine.workers:worker_app", factory=True, host=host, port=port,
                                workers=workers, log_level=log_level, ws_max_size=1 << 20, lifespan="on")
        sock = config.bind_socket()
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def worker_app() -> Any:
    """The ASGI app of one worker process (uvicorn calls this in each child)."""
    from vocable.cli import _load
    from vocable.engine.engine import Engine
    from vocable.engine.ledger import SQLiteLedger
    from vocable.logging import configure_logging

    path = os.environ.get(CONFIG_ENV) or None
    ledger_path = os.environ.get(LEDGER_ENV)
    if not ledger_path:
        sys.exit(f"vocable: {LEDGER_ENV} is not set; workers are started by `vocable serve --workers N`")
    config = _load(path)
    worker = str(os.getpid())
    configure_logging(config.server.log_level, config.server.log_format, worker=worker)
    engine = Engine(config, ledger=SQLiteLedger(ledger_path), worker_id=worker, freeze_gc=True)
    return engine.asgi_app()


# ------------------------------------------------------------------------------------------ in each worker


class Heartbeat:
    """Publishes this worker's sessions and metrics to the shared ledger once a second."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.engine.ledger.shared and self.engine.worker_id is not None:
            self._task = asyncio.create_task(self._run(), name="vocable-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                await self.engine.ledger.publish(self.engine.worker_id or "", snapshot(self.engine))
            except Exception as exc:  # noqa: BLE001 - a missed beat is not worth a dead worker
                log.warning("heartbeat_failed", error=str(exc))
            await asyncio.sleep(HEARTBEAT_S)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):
            await self.engine.ledger.forget_worker(self.engine.worker_id or "")


def snapshot(engine: Engine) -> dict[str, Any]:
    from vocable.engine.app import metrics_text

    return {
        "pid": os.getpid(),
        "ready": engine.ready,
        "sessions": [s.summary() for s in list(engine.sessions.values())],
        "metrics": metrics_text(engine),
    }


async def others(engine: Engine) -> dict[str, dict[str, Any]]:
    """The latest snapshots of the *other* live workers (empty when this is the only process)."""
    if not engine.ledger.shared:
        return {}
    every = await engine.ledger.workers(STALE_AFTER_S)
    every.pop(engine.worker_id or "", None)
    return every


def merge_expositions(texts: Iterable[str]) -> str:
    """Prometheus text from several workers as one: samples with the same name and labels are summed.

    Right for counters and histograms (what a scrape of the whole server should show) and for the gauges
    vocable exports (sessions and connections: the server's total). Help and type lines appear once.
    """
    order: list[str] = []
    comments: dict[str, str] = {}
    values: dict[str, float] = {}
    for text in texts:
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                key = " ".join(line.split()[:3])
                if key not in comments:
                    comments[key] = line
                    order.append(key)
                continue
            name, _, value = line.rpartition(" ")
            try:
                number = float(value)
            except ValueError:
                continue
            if name not in values:
                values[name] = 0.0
                order.append(name)
            values[name] += number
    return "".join((comments[key] if key in comments else f"{key} {_fmt(values[key])}") + "\n" for key in order)


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
