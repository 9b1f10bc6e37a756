"""The hook specifications: the whole contract between vocable and its plugins.

Hooks are synchronous (pluggy has no async). Registration hooks hand over classes through a ``register``
callback; observer hooks are broadcast to every plugin and may return an awaitable, which the engine awaits.
Audio frames and tokens never pass through hooks.

A plugin is a module with ``@hookimpl`` functions, declared in its pyproject as::

    [project.entry-points.vocable]
    foo = "vocable_foo"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from vocable.engine.metrics import TurnMetrics
    from vocable.engine.records import TurnRecord
    from vocable.engine.session import Session

hookspec = pluggy.HookspecMarker("vocable")
hookimpl = pluggy.HookimplMarker("vocable")


@hookspec
def register_providers(register: Callable[[type], None]) -> None:
    """Register provider classes: STT, LLM, TTS, VAD, end-of-turn detectors and metrics sinks.

    Call ``register(cls)`` once per class. The class's ``kind`` and ``name`` say where users select it
    (``pipeline.llm: {provider: <name>}``); its ``Settings`` model validates the rest of that YAML mapping.
    Import vendor SDKs inside the provider, not at module import, so a missing package is an install hint.
    """


@hookspec
def register_transports(register: Callable[[type], None]) -> None:
    """Register transport classes (``vocable.transports.base.Transport``).

    A transport contributes Starlette routes to the engine's ASGI app and turns a network connection into
    an engine session. Users enable it under ``transports: {<name>: {...settings}}``.
    """


@hookspec
def register_tools(register: Callable[..., None]) -> None:
    """Register tools the LLM may call, so a tool ships on PyPI like a provider.

    Call ``register(handler, name=..., description=..., parameters=..., timeout_s=..., cancel_on_interruption=...)``
    once per tool; ``handler`` is a plain or ``async`` function taking the JSON arguments as keywords. Users
    enable a plugin's tools by name: ``agent: {tools: [name, ...]}``. Tools made with ``@engine.tool`` are
    always on. See docs/plugins.md for how a call lives and ends.
    """


@hookspec
def session_started(session: Session) -> Any:
    """A session has started (any transport, or ``Engine.conversation``). May return an awaitable."""


@hookspec
def session_ended(session: Session, reason: str) -> Any:
    """A session has ended, however it ended; ``reason`` says how. May return an awaitable."""


@hookspec
def turn_completed(session: Session, turn: TurnRecord) -> Any:
    """A turn has finished (answered, interrupted or failed): the user's text and the reply as spoken.

    May return an awaitable; persistence plugins write the turn here.
    """


@hookspec
def turn_metrics(session: Session, metrics: TurnMetrics) -> Any:
    """The latency breakdown of one turn, broadcast to every plugin (configured metrics sinks also get it)."""
