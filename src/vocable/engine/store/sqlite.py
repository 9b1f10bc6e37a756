"""SQLite persistence (``storage.url: sqlite:///path/to/file.db``): every finished turn written the moment it ends.

Writes go through one worker thread that owns the connection (sqlite3 connections are not shared across
threads), so the event loop never waits on disk. The database runs in WAL mode: a committed turn survives
the server being killed with SIGKILL, and readers (``GET /sessions/{id}/transcript``) never block writers.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocable.engine.sqlite_thread import SQLiteThread
from vocable.engine.store.base import transcript_of

if TYPE_CHECKING:
    from vocable.engine.records import TurnRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    transport TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    turn_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    user_text TEXT,
    reply_text TEXT NOT NULL,
    full_reply_text TEXT NOT NULL,
    interrupted INTEGER NOT NULL,
    error TEXT,
    metrics TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_by_session ON turns(session_id, seq);
"""


def sqlite_path(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:`` to a sqlite3 path."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"unsupported storage URL {url!r}: use sqlite:///path/to/file.db")
    rest = url[len("sqlite://"):]
    if rest in ("", "/:memory:", ":memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


class SQLiteTurnStore:
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._sql = SQLiteThread(self._connect, "vocable-store")
        self._run = self._sql.run
        self._conn = self._sql.conn

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        return db

    async def open(self) -> None:
        await self._run(self._conn)

    async def close(self) -> None:
        await self._sql.close()

    async def session_started(self, session_id: str, transport: str, started_at: float) -> None:
        await self._run(lambda: self._conn().execute(
            "INSERT OR IGNORE INTO sessions(id, transport, started_at) VALUES (?, ?, ?)",
            (session_id, transport, started_at),
        ))

    async def session_ended(self, session_id: str, ended_at: float, reason: str) -> None:
        await self._run(lambda: self._conn().execute(
            "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?", (ended_at, reason, session_id)
        ))

    async def write_turn(self, turn: TurnRecord) -> None:
        def write() -> None:
            db = self._conn()
            (seq,) = db.execute("SELECT COUNT(*) FROM turns WHERE session_id = ?", (turn.session_id,)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (turn.turn_id, turn.session_id, seq, turn.user_text, turn.reply_text, turn.full_reply_text,
                 int(turn.interrupted), turn.error, json.dumps(turn.metrics), turn.started_at),
            )
        await self._run(write)

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            db = self._conn()
            row = db.execute(
                "SELECT id, transport, started_at, ended_at, end_reason FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            turns = db.execute(
                "SELECT turn_id, user_text, reply_text, full_reply_text, interrupted, error, metrics, started_at "
                "FROM turns WHERE session_id = ? ORDER BY seq", (session_id,),
            ).fetchall()
            return transcript_of(row, [(*t[:6], json.loads(t[6]), t[7]) for t in turns])
        result: dict[str, Any] | None = await self._run(read)
        return result
