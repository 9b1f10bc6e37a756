"""Transports carry sessions over a network. They are plugins like providers.

A transport class is registered with ``register_transports``; the engine creates one instance per Engine
with its validated ``Settings`` and mounts the routes it returns. Sessions come from
``engine.open_session(...)``; the transport pumps client input into the session and the session's events
out to the client, and closes the session however the connection ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from vocable.providers.base import ProviderSettings

if TYPE_CHECKING:
    from vocable.engine.engine import Engine

WIRE_SEND = "vocable.wire_send"  # scope key: the server's own ``send``, set by ``KeepWireSend``


class KeepWireSend:
    """Middleware that keeps the server's ``send`` in a WebSocket scope, for frames.

    Starlette's exception middleware wraps ``send`` to learn whether an HTTP response has started; on a
    WebSocket that wrapper decides nothing, yet costs a coroutine for every frame (tens a second for each
    session). A transport sends its frames with ``scope[WIRE_SEND]`` when present, and the handshake and
    close through Starlette as usual. Mounted inside another app, it keeps whatever ``send`` that app gave.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[WIRE_SEND] = send
        await self.app(scope, receive, send)


class Transport(ABC):
    name: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings

    def __init__(self, engine: Engine, settings: ProviderSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings if settings is not None else self.Settings()

    @abstractmethod
    def routes(self) -> list[BaseRoute]:
        """Starlette routes to mount on the engine's app."""

    async def start(self) -> None:
        """Called from the app's lifespan, after providers are loading."""

    async def aclose(self) -> None:
        """Close every connection this transport holds."""

    def stats(self) -> dict[str, Any]:
        return {}

    def client_config(self) -> dict[str, Any]:
        """What the dashboard needs to know about this transport (e.g. ICE servers)."""
        return {}
