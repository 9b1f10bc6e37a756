"""Conversation persistence: every finished turn is written the moment it ends, to SQLite or PostgreSQL.

``storage.url`` picks the backend by its scheme:

- ``sqlite:///path/to/file.db`` (``vocable.engine.store.sqlite``), no dependency;
- ``postgresql://user:password@host:5432/db`` or ``postgres://...`` (``vocable.engine.store.postgres``),
  with ``pip install 'vocable[postgres]'``.

Both keep the same tables and answer the same ``TurnStore`` calls; a write returns once it is committed, so a
server killed with SIGKILL keeps every finished turn.
"""

from __future__ import annotations

from vocable.engine.store.base import TurnStore, scheme_of

__all__ = ["TurnStore", "open_store"]


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
