"""A node among several behind a load balancer: its shared state, its conversations, its readiness, its drain.

- ``open_ledger``: the ``state.url`` ledger (Redis) when one is configured.
- ``ConversationKeeper``: after every finished turn, the session's memory (and the turn) go to the shared state,
  held by this node, so a client whose node dies resumes on any other one (``ledger.checkpoint``).
- ``NodeLife``: what a load balancer asks of a node. ``GET /health/live`` is 200 while the process serves;
  ``GET /health/ready`` is 503 while models load, while draining and while saturated (event-loop lag, or WebRTC
  media lateness, above ``server.max_loop_lag_ms``; or ``server.max_sessions`` reached). While draining or lagging, new sessions are
  refused before they are accepted (HTTP 503 with ``Retry-After``), so the sessions already admitted keep real
  time. On SIGTERM (under ``vocable serve``) the node drains: it stops admitting, lets every live session finish
  the reply it is speaking, sends it a ``reconnect`` event, parks its conversation for resuming elsewhere, and
  then lets the server stop, all within ``server.drain_timeout_s``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from vocable.engine.events import Reconnect
from vocable.engine.gate import Refused
from vocable.engine.ledger import Ledger, StateUnavailable
from vocable.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from vocable.config.model import StateConfig
    from vocable.engine.engine import Engine
    from vocable.engine.session import Session

log = structlog.get_logger("vocable.node")

DRAINING = "server_draining"  # the close reason of a session the drain parked
SERVER_ENV = "VOCABLE_SERVER_ID"  # set by ``vocable serve --workers``: the workers of one server share it
LAG_PERIOD_S = 0.05  # how often the event loop's lag is sampled
LAG_WINDOW = 40  # samples: the lag in force is the 90th percentile of the last 2 s (the 4th worst sample): a
# single stall (a garbage collection) sheds nothing, stalls that come back (what makes frames late) do
RETRY_AFTER_S = 1
KEEP_WITHOUT_LIMIT_S = 86400.0  # a live session's checkpoint expiry when sessions have no maximum length


def open_ledger(state: StateConfig) -> Ledger | None:
    """The shared ledger ``state.url`` names, or None (per server: one process, or ``--workers``' SQLite file)."""
    if not state.url:
        return None
    from vocable.engine.ledger_redis import RedisLedger

    return RedisLedger(state.url, prefix=state.prefix, max_connections=state.max_connections,
                       timeout_s=state.timeout_s, transcript_ttl_s=state.transcript_ttl_s)


async def cluster_status(state: StateConfig) -> list[dict[str, Any]]:
    """Every node heard from lately, from the shared state: its readiness, sessions and loop lag."""
    from vocable.engine.workers import STALE_AFTER_S

    ledger = open_ledger(state)
    assert ledger is not None
    try:
        snapshots = await ledger.workers(STALE_AFTER_S)
    finally:
        await ledger.aclose()
    return [{"node": node, "server": snap.get("server", node), "host": snap.get("host"), "pid": snap.get("pid"),
             "ready": snap.get("ready", False) and snap.get("accepting", True), "not_ready": snap.get("not_ready"),
             "draining": snap.get("draining", False), "sessions": len(snap.get("sessions", [])),
             "max_sessions": snap.get("max_sessions"), "lag_ms": snap.get("lag_ms")}
            for node, snap in sorted(snapshots.items())]


def format_status(nodes: list[dict[str, Any]]) -> str:
    """``vocable status``'s table: one line a node, then the totals."""
    lines = [f"{'node':<32} {'server':<32} {'state':<10} {'sessions':>9} {'lag ms':>7}"]
    for n in nodes:
        state = "ready" if n["ready"] else (n["not_ready"] or "not ready")
        lag = n["lag_ms"] if n["lag_ms"] is not None else "-"
        lines.append(f"{n['node']:<32} {n['server']:<32} {state:<10} "
                     f"{n['sessions']:>4}/{n['max_sessions'] or '?':<4} {lag:>7}")
    ready = sum(1 for n in nodes if n["ready"])
    lines.append(f"{len(nodes)} nodes, {ready} ready, {sum(n['sessions'] for n in nodes)} sessions")
    return "\n".join(lines)


def node_name() -> str:
    """This process's name among the nodes of a cluster: host and pid (unique while it lives)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def server_name(worker_id: str | None) -> str | None:
    """The server (one ``vocable serve``) this process belongs to: its ``--workers`` share one name."""
    return os.environ.get(SERVER_ENV) or worker_id


class ConversationKeeper:
    """Writes each session's memory and finished turn to the shared state after every turn (an observer)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @hookimpl
    async def turn_completed(self, session: Session, turn: Any) -> None:
        engine = self.engine
        server = engine.config.server
        record = {"transport": session.transport, "session_started_at": session.started_at,
                  "turn": {k: v for k, v in asdict(turn).items() if k != "session_id"}}
        try:
            await engine.ledger.checkpoint(
                session.id, engine.worker_id or "", session.memory.messages, grace_s=server.resume_grace_s,
                keep_s=(server.max_session_s or KEEP_WITHOUT_LIMIT_S) + server.resume_grace_s, record=record)
        except StateUnavailable as exc:  # the conversation goes on; only its copy elsewhere is behind
            session.log.warning("checkpoint_failed", error=str(exc))


class NodeLife:
    """Readiness, load shedding and draining of one node (one server process)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.draining = False
        self.lag_ms = 0.0  # the worse of the event loop's lag and the media's lateness, as shedding reads them
        self.shed_total = 0
        self._lags: list[float] = []
        self._media_lags: list[float] = []
        self._media_worst = 0.0  # how late the latest media frame of this sample period went, in ms (WebRTC)
        self._monitor: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None
        self._previous_handler: Any = None

    # ------------------------------------------------------------------------------ readiness

    @property
    def lagging(self) -> bool:
        """The loop is late past ``server.max_loop_lag_ms`` because of its sessions (with none, refusing new
        ones would relieve nothing: a slow start-up or a neighbour's load is not saturation)."""
        limit = self.engine.config.server.max_loop_lag_ms
        return limit > 0 and self.lag_ms > limit and bool(self.engine.sessions)

    def not_ready_reason(self) -> str | None:
        engine = self.engine
        if engine.load_error:
            return "error"
        if not engine.ready:
            return "loading"
        if self.draining:
            return "draining"
        if self.lagging or len(engine.sessions) >= engine.config.server.max_sessions:
            return "saturated"
        return None

    def refusal(self) -> Refused | None:
        """Why a new session is refused at once, before it is accepted (the gate asks first), or None."""
        if self.draining:
            self.shed_total += 1
            return Refused(503, 1013, "draining", "this node is shutting down; connect again (another node)",
                           retry_after=RETRY_AFTER_S)
        if self.lagging:
            self.shed_total += 1
            return Refused(503, 1013, "overloaded", "this node is at its capacity; try again shortly",
                           retry_after=RETRY_AFTER_S)
        return None

    def status(self) -> dict[str, Any]:
        """What a heartbeat tells the other nodes and ``vocable status`` about this one."""
        reason = self.not_ready_reason()
        return {"server": self.engine.server_id, "host": socket.gethostname(), "accepting": reason is None,
                "not_ready": reason, "draining": self.draining, "lag_ms": round(self.lag_ms, 1),
                "max_sessions": self.engine.config.server.max_sessions, "shed_total": self.shed_total}

    def routes(self) -> list[BaseRoute]:
        async def live(request: Request) -> Response:
            return JSONResponse({"status": "live", "lag_ms": round(self.lag_ms, 1)})

        async def ready(request: Request) -> Response:
            reason = self.not_ready_reason()
            body = {"ready": reason is None, "sessions": len(self.engine.sessions), "lag_ms": round(self.lag_ms, 1)}
            if reason is not None:
                body["reason"] = reason
                return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
            return JSONResponse(body)

        return [Route("/health/live", live), Route("/health/ready", ready)]

    # ------------------------------------------------------------------------------ life cycle

    def start(self, *, handle_signals: bool = False) -> None:
        if self._monitor is None and self.engine.config.server.max_loop_lag_ms > 0:
            self._monitor = asyncio.create_task(self._watch_lag(), name="vocable-loop-lag")
        if handle_signals and self._previous_handler is None and threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            self._previous_handler = signal.signal(
                signal.SIGTERM, lambda sig, frame: loop.call_soon_threadsafe(self._on_sigterm))

    async def stop(self) -> None:
        for task in (self._monitor, self._drain):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._monitor = None

    async def _watch_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_PERIOD_S
            await asyncio.sleep(LAG_PERIOD_S)
            self._lags.append(max(0.0, loop.time() - expected) * 1000)
            self._media_lags.append(self._media_worst)
            self._media_worst = 0.0
            del self._lags[:-LAG_WINDOW], self._media_lags[:-LAG_WINDOW]
            at = len(self._lags) * 9 // 10
            self.lag_ms = max(sorted(self._lags)[at], sorted(self._media_lags)[at])

    def media_late(self, ms: float) -> None:
        """A transport sent a media frame ``ms`` behind its real-time schedule (WebRTC's track): for WebRTC
        sessions this is what lateness means, and shedding reads it with the loop's lag."""
        if ms > self._media_worst:
            self._media_worst = ms

    def _on_sigterm(self) -> None:
        if self._drain is None:
            log.info("draining", sessions=len(self.engine.sessions),
                     drain_timeout_s=self.engine.config.server.drain_timeout_s)
            self._drain = asyncio.create_task(self._drain_then_exit(), name="vocable-drain")
        else:  # a second SIGTERM: stop now, as without a drain
            self._drain.cancel()

    async def _drain_then_exit(self) -> None:
        try:
            await self.drain()
        finally:  # hand the signal to the server (uvicorn), which now stops as it would have at once
            previous, self._previous_handler = self._previous_handler, None
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            if callable(previous):
                previous(signal.SIGTERM, None)
            else:
                signal.raise_signal(signal.SIGTERM)

    async def drain(self, reason: str = DRAINING) -> None:
        """Stop admitting; let each live session finish its reply, tell it to reconnect, park its conversation."""
        self.draining = True
        timeout = self.engine.config.server.drain_timeout_s
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout - 1.0)  # a second left to close sockets
        sessions = list(self.engine.sessions.values())
        await asyncio.gather(*(self._drain_one(s, deadline, reason) for s in sessions), return_exceptions=True)
        log.info("drained", sessions=len(sessions))

    async def _drain_one(self, session: Session, deadline: float, reason: str) -> None:
        loop = asyncio.get_running_loop()
        while session.state != "listening" and not session.closed and loop.time() < deadline:
            await asyncio.sleep(0.05)  # the reply being spoken plays to its end
        if session.closed:
            return
        session.events.put_nowait(Reconnect(reason))  # never waits: a client that stops reading is closed anyway
        await self.engine.close_session(session, reason, resumable=True)
