"""How ``vocable serve`` runs uvicorn against a hostile client: a deadline for the request head, a bound on
connections, and proxy headers believed only from the proxies the operator names.

uvicorn has no timer before a connection's first request (its keep-alive timer starts only after a response,
and any byte received cancels it), so a client that opens connections and never finishes a request head
(slowloris) keeps each open for ever. ``HeadTimeoutProtocol`` is uvicorn's own HTTP protocol (httptools
when installed, else h11, as uvicorn's ``auto``) with one timer: armed when the connection opens and again
after each response, cancelled when a whole request head has been parsed or the connection becomes a
WebSocket; on expiry the connection is closed. It uses a few uvicorn internals, checked at start-up
(``transports/uvicorn_internals.py``, as for direct frames): without them ``vocable serve`` runs uvicorn's
plain protocol and says so once.

uvicorn also believes ``X-Forwarded-For`` from 127.0.0.1 by default, so a local client could choose the
address the rate limit counts; here proxy headers are read only from ``server.trusted_proxies``.

``vocable serve --workers N`` runs ``serve_workers``: the supervisor that starts the worker processes, each
running ``worker_app`` (what each worker shares and keeps to itself is in ``engine/workers.py``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from vocable.config.loader import load_config
from vocable.transports import direct_frames
from vocable.transports.uvicorn_internals import missing, unavailable

if TYPE_CHECKING:
    from vocable.config.model import ServerConfig

log = structlog.get_logger("vocable.serving")

HEAD_TIMEOUT_PROTOCOL = "vocable.serving:HeadTimeoutProtocol"
CONFIG_ENV = "VOCABLE_WORKER_CONFIG"  # how the supervisor tells each worker its config file
LEDGER_ENV = "VOCABLE_WORKER_LEDGER"  # ... and the shared ledger's
_HOOKS = ("on_response_complete", "handle_websocket_upgrade")  # uvicorn methods the timer hooks into


class HeadTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol that closes a connection whose request head is not complete in time."""

    timeout_s: ClassVar[float] = 10.0  # this process's ``server.header_timeout_s`` (``set_header_timeout``)
    _head_timer: asyncio.TimerHandle | None = None
    _socket: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._socket = transport
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request head was parsed: the request is the app's to time
            self._disarm()

    def handle_websocket_upgrade(self, *args: Any) -> None:
        self._disarm()  # a whole upgrade request: the connection now belongs to the WebSocket protocol
        super().handle_websocket_upgrade(*args)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._idle() and not self._socket.is_closing():  # keep-alive: the next head has the same deadline
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """Waiting for a request head (no request, or the last one answered and none pipelined after it)."""
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if self._idle() and not self._socket.is_closing():
            log.debug("header_timeout", client=self._socket.get_extra_info("peername"), timeout_s=self.timeout_s)
            self._socket.close()


def head_timeout_missing(base: type = AutoHTTPProtocol) -> list[str]:
    """The internals ``HeadTimeoutProtocol`` relies on that this uvicorn lacks (none: it can run): the two
    methods it hooks, the protocol's ``cycle`` and its request cycle's ``response_complete``."""
    return missing((base, (*_HOOKS, "cycle")), (f"{base.__module__}:RequestResponseCycle", ("response_complete",)))


def set_header_timeout(seconds: float) -> None:
    """The request-head deadline of every connection this process accepts (each worker sets its own)."""
    HeadTimeoutProtocol.timeout_s = seconds


def serve_options(server: ServerConfig) -> dict[str, Any]:
    """The uvicorn settings of ``vocable serve`` for ``server`` (and, in this process, its header timeout).

    ``limit_concurrency``: past it uvicorn answers new HTTP requests 503 (a WebSocket counts as one
    connection); by default twice the sessions a worker may hold, plus room for the dashboard and probes.
    """
    set_header_timeout(server.header_timeout_s)
    options: dict[str, Any] = {
        **direct_frames.SERVE_OPTIONS,  # WebSockets: direct frames, or uvicorn's own protocol (one warning)
        "limit_concurrency": server.limit_concurrency or server.max_sessions * 2 + 100,
        **proxy_options(server.trusted_proxies),
    }
    lacking = head_timeout_missing()
    if lacking:
        unavailable("header_timeout", lacking,
                    "uvicorn's own HTTP protocol: connections that never finish a request head are not closed")
    else:
        options["http"] = HEAD_TIMEOUT_PROTOCOL
    return options


def proxy_options(trusted: list[str]) -> dict[str, Any]:
    """Proxy headers only from ``trusted`` (none when empty). Networks are normalised (``10.0.0.1/8`` to
    ``10.0.0.0/8``): uvicorn would take a network with host bits set as a literal that never matches."""
    if not trusted:
        return {"proxy_headers": False}
    allowed = [str(ipaddress.ip_network(p, strict=False)) if "/" in p else p for p in trusted]
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(allowed)}


# ------------------------------------------------------------------------------- vocable serve --workers N


def serve_workers(config_path: str | None, *, host: str, port: int, workers: int, log_level: str) -> None:
    """Run ``workers`` worker processes until SIGINT or SIGTERM (the supervisor never serves a request)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from vocable.engine.cluster import SERVER_ENV, node_name
    from vocable.engine.ledger import create_shared_ledger

    os.environ[SERVER_ENV] = node_name()  # the workers' heartbeats say they are one server
    state = tempfile.mkdtemp(prefix="vocable-workers-")  # 0700: only this user can read the shared secret
    try:
        ledger = os.path.join(state, "ledger.sqlite3")
        create_shared_ledger(ledger)
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve()) if config_path else ""
        os.environ[LEDGER_ENV] = ledger
        options = serve_options(load_config(config_path).server)
        config = uvicorn.Config("vocable.serving:worker_app", factory=True, host=host, port=port,
                                workers=workers, log_level=log_level, **options)
        sock = config.bind_socket()
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def worker_app() -> Any:
    """The ASGI app of one worker process (uvicorn calls this in each child)."""
    from vocable.engine.cluster import node_name
    from vocable.engine.engine import Engine
    from vocable.engine.ledger import SQLiteLedger
    from vocable.logging import configure_logging

    path = os.environ.get(CONFIG_ENV) or None
    ledger_path = os.environ.get(LEDGER_ENV)
    if not ledger_path:
        sys.exit(f"vocable: {LEDGER_ENV} is not set; workers are started by `vocable serve --workers N`")
    config = load_config(path)
    shared = None if config.state.url else SQLiteLedger(ledger_path)  # state.url: the cluster's Redis instead
    worker = str(os.getpid()) if shared is not None else node_name()  # pids repeat across machines
    configure_logging(config.server.log_level, config.server.log_format, worker=worker)
    set_header_timeout(config.server.header_timeout_s)  # uvicorn's options came pickled; this is per process
    engine = Engine(config, ledger=shared, worker_id=worker, freeze_gc=True, drain_on_sigterm=True)
    return engine.asgi_app()
