"""The Engine: plugins, validated config, started providers, live sessions. The one object users embed.

    engine = Engine.from_yaml("vocable.yaml")     # loads plugins and validates; no network yet
    app = engine.asgi_app()                        # every HTTP and WebSocket route
    async with engine.conversation() as conv:      # or no network at all
        await conv.send_text("Hello")

Each Engine owns its own plugin host, so engines never share plugins or state.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, SecretStr

from vocable.config.loader import load_yaml, parse_config
from vocable.config.model import VocableConfig
from vocable.config.resolve import ResolvedConfig, redacted, resolve
from vocable.engine.conversation import Conversation
from vocable.engine.metrics import TurnMetrics
from vocable.engine.runtime import Runtime
from vocable.engine.session import Session
from vocable.engine.store import StoreObserver, open_store
from vocable.engine.cluster import DRAINING, ConversationKeeper, NodeLife, node_name, open_ledger, server_name
from vocable.engine.gate import Admission, Gate
from vocable.engine.ledger import Ledger, StateUnavailable
from vocable.engine.workers import Heartbeat
from vocable.logging import configure_logging, scrubber
from vocable.plugins.manager import PluginHost, autoload_enabled
from vocable.providers.tools import DEFAULT_TIMEOUT_S, ToolSpec, tool_spec

if TYPE_CHECKING:
    from vocable.transports.base import Transport  # transports sit above the engine

log = structlog.get_logger("vocable.engine")


class CapacityError(Exception):
    """The engine is at ``server.max_sessions``: refused at once, never queued."""


class NotReady(Exception):
    """Providers are still loading (or failed to load)."""


class Engine:
    def __init__(
        self,
        config: VocableConfig,
        *,
        plugins: Sequence[ModuleType | object | str] = (),
        autoload: bool | None = None,
        ledger: Ledger | None = None,
        worker_id: str | None = None,
        freeze_gc: bool = False,
        drain_on_sigterm: bool = False,
    ) -> None:
        """``ledger``: admission state shared with other processes (``vocable serve --workers``); ``worker_id``
        names this process among them. ``freeze_gc``: once started, move everything alive (modules, config,
        models) out of the garbage collector's sight, so its full collections traverse only what sessions
        made: ``vocable serve`` does; an embedding app owns its process and decides for itself.
        ``drain_on_sigterm``: SIGTERM drains the live sessions before the server stops (``vocable serve``).
        Without a ``ledger``, ``state.url`` names a shared one (Redis) for a cluster of nodes."""
        self.config = config
        if not structlog.is_configured():  # structlog's own default writes to stdout; logs belong on stderr
            configure_logging(config.server.log_level, config.server.log_format)
        if autoload is None:
            autoload = config.plugins.autoload and autoload_enabled()
        self.host = PluginHost(autoload=autoload, plugins=[*config.plugins.modules, *plugins])
        self.resolved: ResolvedConfig = resolve(config, self.host)
        self._register_secrets()
        self.runtime = Runtime.build(self.resolved)
        self.transports: list[Transport] = [cls(self, settings) for cls, settings in self.resolved.transports]
        self.sessions: dict[str, Session] = {}
        self.store = open_store(config.storage.url) if config.storage.url else None
        if self.store is not None:
            self.host.add(StoreObserver(self), name="vocable.store")
        if config.tracing is not None:  # OpenTelemetry spans, an observer like persistence (docs/tracing.md)
            from vocable.tracing import Tracing

            self.host.add(Tracing(self), name="vocable.tracing")
        if config.storage.record is not None:  # a file per session (docs/recording.md), an observer too
            from vocable.recording.recorder import Recorder

            self.host.add(Recorder(self), name="vocable.recording")
        self.gate = Gate(config.server, ledger if ledger is not None else open_ledger(config.state))
        self.ledger = self.gate.ledger
        self.worker_id = worker_id if worker_id is not None or not self.ledger.shared else node_name()
        self.server_id = server_name(self.worker_id)
        self.node = NodeLife(self)
        self.drain_on_sigterm = drain_on_sigterm
        self.gate.node, self.gate.shedding = self.worker_id, self.node.refusal
        if self.ledger.shared:  # every finished turn's memory goes to the shared state, for resuming elsewhere
            self.host.add(ConversationKeeper(self), name="vocable.keeper")
        self.heartbeat = Heartbeat(self)
        self.freeze_gc = freeze_gc
        self.tools: dict[str, ToolSpec] = dict(self.resolved.tools)  # plugin tools the config enabled, then @tool
        self.started_at = time.time()
        self.load_error: str | None = None
        self._ready = asyncio.Event() if _has_loop() else None
        self._loader: asyncio.Task[None] | None = None
        self._counters: dict[str, float] = {"sessions_total": 0, "sessions_refused_total": 0}

    # ------------------------------------------------------------------------------------ construction

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> Engine:
        return cls(load_yaml(path), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, **kwargs: Any) -> Engine:
        return cls(parse_config(dict(data), env=env), **kwargs)

    def _register_secrets(self) -> None:
        def walk(value: Any) -> None:
            if isinstance(value, SecretStr):
                scrubber.add(value.get_secret_value())
                scrubber.add_url(value.get_secret_value())
            elif isinstance(value, str):
                scrubber.add_url(value)  # a base_url with a password in it is as secret as an API key
            elif isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(getattr(value, name))
        for chain in self.resolved.chains.values():
            for choice in chain:
                walk(choice.settings)
        for _, settings in self.resolved.transports:
            walk(settings)
        auth = self.config.server.auth
        if auth is not None:
            scrubber.add(auth.api_key.get_secret_value())
        if self.config.server.metrics_token is not None:
            scrubber.add(self.config.server.metrics_token.get_secret_value())
        if self.config.storage.url:
            scrubber.add_url(self.config.storage.url)
        if self.config.state.url:
            scrubber.add_url(self.config.state.url)

    # ------------------------------------------------------------------------------------ life cycle

    @property
    def ready(self) -> bool:
        return self.runtime.started

    def _ready_event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def start(self) -> None:
        """Load every provider (models load once per process) and start the transports."""
        ready = self._ready_event()
        if self.runtime.started:
            return
        try:
            if self.store is not None:
                await self.store.open()
            await self.runtime.start()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("providers_failed_to_load", error=self.load_error)
            raise
        finally:
            ready.set()
        for transport in self.transports:
            await transport.start()
        if self.freeze_gc:
            gc.collect()
            gc.freeze()

    def start_in_background(self) -> asyncio.Task[None]:
        """Start loading without waiting, so the server answers ``/health`` (503) while models load."""
        if self._loader is None:
            self._ready_event()
            self._loader = asyncio.create_task(self._load_quietly(), name="vocable-load")
        return self._loader

    async def _load_quietly(self) -> None:
        try:
            await self.start()
        except Exception:
            pass  # recorded in load_error, reported by /health

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        if self.runtime.started:
            return
        if self._loader is None and not self._ready_event().is_set():
            self.start_in_background()
        async with asyncio.timeout(timeout_s):
            await self._ready_event().wait()
        if self.load_error:
            raise NotReady(self.load_error)

    async def stop(self) -> None:
        await self.node.stop()
        await self.heartbeat.stop()
        for session in list(self.sessions.values()):
            await session.close("server_shutdown")
        for transport in self.transports:
            await transport.aclose()
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        await self.runtime.aclose()
        if self.store is not None:
            await self.store.close()
            self.store = open_store(self.config.storage.url) if self.config.storage.url else None

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """A Starlette lifespan: begin loading at start-up, close every session at shutdown."""
        self.start_in_background()
        self.node.start(handle_signals=self.drain_on_sigterm)
        self.heartbeat.start()  # a worker that is still loading shows in the others' /health too
        try:
            yield
        finally:
            await self.stop()

    # ------------------------------------------------------------------------------------ sessions

    async def open_session(
        self, *, transport: str, input_sample_rate: int | None = None, pace: bool = True,
        session_id: str | None = None, admission: Admission | None = None,
    ) -> Session:
        """Create and start a session, or raise CapacityError/NotReady/ValueError at once.

        With an ``admission`` whose ``resume_session_id`` names a session that dropped less than
        ``server.resume_grace_s`` ago, the new session takes that id and its conversation memory.
        """
        try:
            if len(self.sessions) >= self.config.server.max_sessions:
                self._counters["sessions_refused_total"] += 1
                raise CapacityError(f"the server is at its limit of {self.config.server.max_sessions} sessions")
            await self.wait_ready(timeout_s=120)
        except BaseException:
            await self.gate.release(admission)
            raise
        resume_id = admission.resume_session_id if admission is not None else None
        memory = admission.memory if admission is not None else None
        if resume_id is not None and memory is None:  # an admission made by hand, not by the gate
            memory = await self.ledger.take(resume_id)
        if memory is not None:
            session_id = resume_id
        session = Session(self, transport=transport, input_sample_rate=input_sample_rate, pace=pace, session_id=session_id)
        if memory is not None:
            for message in memory:
                session.memory.add(message)
            session.resumed = True
        self.sessions[session.id] = session
        self._counters["sessions_total"] += 1
        try:
            if admission is not None:
                await self.gate.bind(admission, session.id)
            await session.start()
        except BaseException:
            await self.close_session(session, "start_failed")
            raise
        return session

    async def close_session(self, session: Session, reason: str = "closed", *, resumable: bool = False) -> None:
        """End a session. ``resumable``: the client vanished; keep its conversation for the grace window.

        Every task and provider stream ends now either way; only the memory is kept (in the ledger, so a
        client that comes back through another worker finds it), and a vanished client costs nothing while
        the server waits for it to come back.
        """
        was_drained = session.close_reason == DRAINING  # parked already, by the drain
        try:
            await session.close(reason)
        finally:
            self.sessions.pop(session.id, None)
        grace = self.config.server.resume_grace_s
        try:
            if resumable and grace > 0:
                await self.ledger.park(session.id, session.memory.messages, time.time() + grace)
            elif self.ledger.shared and session.turns and not was_drained:
                await self.ledger.drop(session.id)  # its checkpoint: an ended session is not resumed
        except StateUnavailable as exc:
            log.warning("park_failed", session_id=session.id, error=str(exc))

    @asynccontextmanager
    async def conversation(self, *, pace: bool = True, input_sample_rate: int | None = None) -> AsyncIterator[Conversation]:
        """A session driven from Python with no network: send audio or text, iterate the wire events."""
        session = await self.open_session(transport="python", input_sample_rate=input_sample_rate, pace=pace)
        try:
            yield Conversation(session)
        finally:
            await self.close_session(session, "closed")

    # ------------------------------------------------------------------------------------ tools & metrics

    def tool(
        self, name: str | None = None, *, description: str = "", parameters: dict[str, Any] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S, cancel_on_interruption: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: expose a Python function to the LLM as a tool (sync or async).

        A call runs once and ends once (ok, error, ``timeout_s``, or cancelled); by default it finishes even
        when the user interrupts the reply that made it, and its result is remembered but not spoken.
        """
        def decorate(fn: Callable[..., Any | Awaitable[Any]]) -> Callable[..., Any]:
            spec = tool_spec(fn, name=name, description=description, parameters=parameters, timeout_s=timeout_s,
                             cancel_on_interruption=cancel_on_interruption)
            self.tools[spec.name] = spec
            return fn
        return decorate

    def record_metrics(self, metrics: TurnMetrics) -> None:
        for live in self.runtime.metrics:
            try:
                live.provider.record(metrics)
            except Exception as exc:
                log.warning("metrics_sink_failed", sink=live.name, error=str(exc))

    def counters(self) -> dict[str, float]:
        return {**self._counters, "sessions_active": len(self.sessions)}

    def redacted_config(self) -> dict[str, Any]:
        return redacted(self.resolved)

    # ------------------------------------------------------------------------------------ ASGI

    def asgi_app(self) -> Any:
        """A Starlette app with the dashboard, the HTTP API and every enabled transport's routes."""
        from vocable.engine.app import build_app

        return build_app(self)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
