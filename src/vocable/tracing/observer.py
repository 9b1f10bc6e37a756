"""The tracing plugin: observer hooks that keep one ``ConversationTrace`` per live session.

OpenTelemetry is imported only once a session starts with it installed (``vocable.tracing.spans`` and
``vocable.tracing.otel`` import it at module level), and the tracer provider, with its export thread, is made
then too: an engine that never serves a session (``vocable check``) starts nothing.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import structlog

from vocable.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from vocable.engine.engine import Engine
    from vocable.engine.metrics import TurnMetrics
    from vocable.engine.session import Session, TurnRecord
    from vocable.tracing.spans import ConversationTrace

log = structlog.get_logger("vocable.tracing")

INSTALL_HINT = "pip install 'vocable[otel]'"
REQUIRED = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


def otel_missing() -> list[str]:
    """The OpenTelemetry packages tracing needs that cannot be imported."""
    missing = []
    for module in REQUIRED:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package that is absent (or blocked) raises instead
            found = False
        if not found:
            missing.append(module)
    return missing


class Tracing:
    """Registered on the engine's plugin host when ``tracing:`` is configured."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config.tracing
        missing = otel_missing()
        self.enabled = self.config is not None and not missing
        self._provider: Any = None
        self._tracer: Any = None
        self._traces: dict[str, ConversationTrace] = {}
        if self.config is not None and missing:
            log.warning("tracing_unavailable", missing=missing,
                        hint=f"tracing is configured but OpenTelemetry is not installed: {INSTALL_HINT}")

    def tracer(self) -> Any:
        if self._tracer is None:
            from vocable.tracing.otel import make_provider

            assert self.config is not None
            self._provider = make_provider(self.config)
            self._tracer = self._provider.get_tracer("vocable")
        return self._tracer

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export every finished span now (blocking; tests and shutdown)."""
        return bool(self._provider.force_flush(int(timeout_s * 1000))) if self._provider is not None else True

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = self._tracer = None

    # ------------------------------------------------------------------------------------------ hooks

    @hookimpl
    def session_started(self, session: Session) -> None:
        if not self.enabled:
            return
        from vocable.engine.app import REQUEST_SCOPE
        from vocable.tracing.spans import ConversationTrace, incoming_context

        assert self.config is not None
        trace = ConversationTrace(self.tracer(), session, incoming_context(REQUEST_SCOPE.get()),
                                  include_text=self.config.include_text, runtime=self.engine.runtime)
        self._traces[session.id] = trace
        # every event the session emits, as it is emitted (ends of replies, tool calls, the last audio)
        session.add_tap(trace.on_event)

    @hookimpl
    def turn_completed(self, session: Session, turn: TurnRecord) -> None:
        if (trace := self._traces.get(session.id)) is not None:
            trace.turn_completed(turn)

    @hookimpl
    def turn_metrics(self, session: Session, metrics: TurnMetrics) -> None:
        if (trace := self._traces.get(session.id)) is not None:
            trace.turn_metrics(metrics)

    @hookimpl
    def session_ended(self, session: Session, reason: str) -> None:
        if (trace := self._traces.pop(session.id, None)) is not None:
            trace.end(reason, turns=session.turns)
