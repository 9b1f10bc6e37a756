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

from vocable.engine.app import WIRE_SEND, KeepWireSend  # noqa: F401 - their home is the engine's app
from vocable.providers.base import ProviderSettings

if TYPE_CHECKING:
    from vocable.engine.engine import Engine


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
