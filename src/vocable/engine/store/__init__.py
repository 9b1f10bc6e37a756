"""Conversation persistence: every finished turn is written the moment it ends, to SQLite or PostgreSQL.

``storage.url`` picks the backend by its scheme:

- ``sqlite:///path/to/file.db`` (``vocable.engine.store.sqlite``), no dependency;
- ``postgresql://user:password@host:5432/db`` or ``postgres://...`` (``vocable.engine.store.postgres``),
  with ``pip install 'vocable[postgres]'``.

Both keep the same tables and answer the same ``TurnStore`` calls; a write returns once it is committed, so a
server killed with SIGKILL keeps every finished turn.
"""

from __future__ import annotations

import time
from typing import Any

from vocable.engine.store.base import TurnStore, scheme_of
from vocable.plugins.hookspecs import hookimpl

__all__ = ["StoreObserver", "TurnStore", "open_store"]


def open_store(url: str) -> TurnStore:
    """The store for ``url``, chosen by its scheme. Nothing is connected yet: ``await store.open()`` does that."""
    scheme = scheme_of(url)
    if scheme == "sqlite":
        from vocable.engine.store.sqlite import SQLiteTurnStore

        return SQLiteTurnStore(url)
    if scheme in ("postgresql", "postgres"):
        from vocable.engine.store.postgres import PostgresTurnStore

        return PostgresTurnStore(url)
    raise ValueError(
        f"storage.url: unsupported scheme {scheme!r}: use sqlite:///path/to/file.db or "
        "postgresql://user:password@host:5432/dbname"
    )


class StoreObserver:
    """Persistence as an observer of the session hooks, registered like any plugin.

    It reads ``engine.store`` at each call, because the engine opens a fresh store on every start.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @hookimpl
    async def session_started(self, session: Any) -> None:
        if self.engine.store is not None:
            await self.engine.store.session_started(session.id, session.transport, session.started_at)

    @hookimpl
    async def session_ended(self, session: Any, reason: str) -> None:
        if self.engine.store is not None:
            await self.engine.store.session_ended(session.id, time.time(), reason)

    @hookimpl
    async def turn_completed(self, session: Any, turn: Any) -> None:
        if self.engine.store is not None:
            await self.engine.store.write_turn(turn)
