"""``vocable serve --workers N``, inside each worker: N processes on one listening socket, one shared ledger.

One Python process runs its event loop on one core, and a voice session's work (framing, VAD, pacing,
the socket) is CPU work, so a server past one core's worth of sessions needs more processes. The supervisor
(``vocable.serving.serve_workers``) binds the socket, creates the shared ledger (``engine/ledger.py``) in a
private directory, and starts the workers with uvicorn's process supervisor, which restarts a worker that dies
and replaces all of them, one by one, on SIGHUP. The kernel spreads new connections over the workers.

What the workers share: the token-signing secret, single-use tokens, dropped conversations waiting to resume,
the per-address rate limit, and a heartbeat each second with their sessions and metrics, so that ``/health``,
``/sessions`` and ``/metrics`` on any worker describe the whole server. What stays per worker: the models
(each worker loads its own), ``server.max_sessions``, and the WebRTC peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from vocable.engine.engine import Engine

log = structlog.get_logger("vocable.workers")

HEARTBEAT_S = 1.0
STALE_AFTER_S = 5.0  # a worker not heard from for this long is gone (killed, or restarting)


# ------------------------------------------------------------------------------------------ in each worker


class Heartbeat:
    """Publishes this worker's sessions and metrics to the shared ledger once a second, and listens on a
    private unix socket for the sockets other workers relay to sessions that live here (``Relay``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.relay_path: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._relay: Any = None

    def start(self) -> None:
        if self._task is None and self.engine.ledger.shared and self.engine.worker_id is not None:
            self._task = asyncio.create_task(self._run(), name="vocable-heartbeat")

    async def _run(self) -> None:
        path = getattr(self.engine.ledger, "path", None)
        if path is not None:
            try:
                await self._listen(os.path.join(os.path.dirname(path), f"relay-{self.engine.worker_id}.sock"))
            except OSError as exc:
                log.warning("relay_listen_failed", error=str(exc))
        while True:
            try:
                await self.engine.ledger.publish(self.engine.worker_id or "", snapshot(self.engine))
            except Exception as exc:  # noqa: BLE001 - a missed beat is not worth a dead worker
                log.warning("heartbeat_failed", error=str(exc))
            await asyncio.sleep(HEARTBEAT_S)

    async def _listen(self, path: str) -> None:
        from websockets.asyncio.server import unix_serve

        async def handle(connection: Any) -> None:
            for transport in self.engine.transports:
                serve = getattr(transport, "serve_relayed", None)
                if serve is not None and connection.request.path.startswith(transport.relay_prefix):
                    return await serve(connection.request.path, RelayedSocket(connection))
            await connection.close(4404, "nothing here takes relayed sockets at this path")

        self._relay = await unix_serve(handle, path, max_size=1 << 20)
        self.relay_path = path

    async def stop(self) -> None:
        if self._relay is not None:
            self._relay.close()
            with contextlib.suppress(Exception):
                await self._relay.wait_closed()
            self._relay = None
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):
            await self.engine.ledger.forget_worker(self.engine.worker_id or "")


def snapshot(engine: Engine) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "ready": engine.ready,
        "relay": engine.heartbeat.relay_path,
        "sessions": [s.summary() for s in list(engine.sessions.values())],
        "metrics": metrics_text(engine),
        **engine.node.status(),  # its server, readiness, drain and loop lag (``vocable status``)
    }


async def others(engine: Engine) -> dict[str, dict[str, Any]]:
    """The latest snapshots of the *other* live workers of this server (empty when this is the only process).

    Nodes of a cluster (``state.url``) share the ledger but are separate servers: each one's ``/health``,
    ``/sessions`` and ``/metrics`` describe itself and its own workers; ``vocable status`` lists them all.
    """
    if not engine.ledger.shared:
        return {}
    every = await engine.ledger.workers(STALE_AFTER_S)
    every.pop(engine.worker_id or "", None)
    return {w: snap for w, snap in every.items() if snap.get("server", engine.server_id) == engine.server_id}


async def owner_of(engine: Engine, session_id: str) -> tuple[str, str | None] | None:
    """(worker, its relay socket) of a session that lives in another worker; None if none has it.

    A session opened less than a heartbeat ago is not listed yet, so an unknown id is looked up again until
    a heartbeat and a half has passed.
    """
    if not engine.ledger.shared:
        return None
    deadline = asyncio.get_running_loop().time() + HEARTBEAT_S * 1.5
    while True:
        for worker, snap in (await others(engine)).items():
            if any(s["id"] == session_id for s in snap["sessions"]):
                return worker, snap.get("relay")
        if asyncio.get_running_loop().time() >= deadline:
            return None
        await asyncio.sleep(HEARTBEAT_S / 4)


class RelayedSocket:
    """A relayed ``websockets`` connection with the few Starlette ``WebSocket`` methods a peer uses."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def send_text(self, text: str) -> None:
        await self.connection.send(text)

    async def send_json(self, data: Any) -> None:
        import json

        await self.connection.send(json.dumps(data))

    async def receive(self) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        try:
            message = await self.connection.recv()
        except ConnectionClosed as closed:
            return {"type": "websocket.disconnect", "code": closed.rcvd.code if closed.rcvd else 1006}
        if isinstance(message, bytes):
            return {"type": "websocket.receive", "bytes": message}
        return {"type": "websocket.receive", "text": message}

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.connection.close(code, reason)


async def relay(websocket: Any, relay_path: str, path: str) -> None:
    """Carry an accepted Starlette ``websocket`` to the worker listening on ``relay_path``, both ways, until
    either side closes; the owner's close code and reason reach the client."""
    from starlette.websockets import WebSocketDisconnect
    from websockets.asyncio.client import unix_connect
    from websockets.exceptions import ConnectionClosed

    async with unix_connect(relay_path, uri=f"ws://vocable-worker{path}", max_size=1 << 20) as upstream:
        async def outward() -> None:  # the owner's events to the client
            async for message in upstream:
                await (websocket.send_bytes(message) if isinstance(message, bytes) else websocket.send_text(message))

        async def inward() -> None:  # the client's messages to the owner
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("text")
                await upstream.send(data if data is not None else message.get("bytes") or b"")

        tasks = [asyncio.create_task(outward()), asyncio.create_task(inward())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        closed = upstream.close_rcvd
        if closed is not None:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, ConnectionClosed):
                await websocket.close(closed.code, closed.reason)


def metrics_text(engine: Engine) -> str:
    """This process's metrics in the Prometheus text format: the sinks' exposition plus the engine counters."""
    counters = engine.counters()
    parts: list[str] = []
    for live in engine.runtime.metrics:
        exposition = getattr(live.provider, "exposition", None)
        if exposition is not None:
            parts.append(exposition(counters))
            counters = {}
    for transport in engine.transports:
        for key, value in transport.stats().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                counters[f"{transport.name}_{key}"] = value
    if counters:  # no prometheus sink configured: still expose the session counters
        parts.append("".join(f"# TYPE vocable_{k} {'counter' if k.endswith('_total') else 'gauge'}\n"
                             f"vocable_{k} {v:g}\n" for k, v in counters.items()))
    return "".join(parts)


def merge_expositions(texts: Iterable[str]) -> str:
    """Prometheus text from several workers as one: samples with the same name and labels are summed.

    Right for counters and histograms (what a scrape of the whole server should show) and for the gauges
    vocable exports (sessions and connections: the server's total). Help and type lines appear once.
    """
    from vocable.providers.prometheus import format_value

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
    return "".join((comments[key] if key in comments else f"{key} {format_value(values[key])}") + "\n" for key in order)

