"""Admission state: which tokens opened which session, which dropped conversations may resume, who is rate-limited.

One process keeps it in dicts (``LocalLedger``). With ``vocable serve --workers N`` every worker must see the
same state, or a token could open one session per worker, a dropped client that reconnects to another worker
would lose its conversation, and the rate limit would be N times looser. ``SQLiteLedger`` keeps it in one
SQLite file that the supervisor creates in a private directory; each operation is one short transaction, run on
a thread of its own so the event loop never waits on the file lock.

Workers also publish a heartbeat here (their live sessions and their ``/metrics`` text), so that ``/health``,
``/sessions`` and ``/metrics`` on any worker describe the whole server.

Several machines share a ``RedisLedger`` (``state.url``, ``engine/ledger_redis.py``) behind the same interface.
A shared ledger also keeps each live session's conversation after every finished turn (``checkpoint``), held by
the node serving it: once that node stops heartbeating (it died) the conversation may be taken by a reconnect to
any other node, for ``resume_grace_s`` after its last heartbeat, as a parked one is.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections import OrderedDict
from dataclasses import asdict
from typing import Any, Protocol

from vocable.engine.rate import WINDOW_S as RATE_WINDOW_S
from vocable.engine.rate import SlidingWindow
from vocable.engine.sqlite_thread import SQLiteThread
from vocable.providers.base import Message, ToolCall

MAX_TRACKED_CLIENTS = 10000
UNBOUND = ""  # a token claimed by a connection whose session does not exist yet
ORPHAN_AFTER_S = 3.0  # a node whose last heartbeat is older has died: its sessions' conversations may be taken


class StateUnavailable(RuntimeError):
    """The shared state cannot be reached: admissions fail closed (the gate answers 503 ``state_unavailable``)."""


class Ledger(Protocol):
    """What admission needs to remember. Every method is atomic: two workers never both win a claim."""

    shared: bool

    def secret(self) -> bytes | None:
        """The key every worker signs session tokens with when no API key is set (None: pick one per process)."""

    async def claim_token(self, token_id: str, expires_at: float) -> str | None:
        """Claim a token for a new connection. None: it was unused and is now claimed; else the session it
        already belongs to (``UNBOUND`` while that first connection is still opening its session)."""

    async def bind_token(self, token_id: str, session_id: str, expires_at: float) -> None: ...

    async def token_owner(self, token_id: str) -> str | None:
        """The session a live token opened (``UNBOUND`` while it opens), without claiming it; None if unused."""

    async def release_token(self, token_id: str) -> None:
        """Give back a claim whose session never opened (capacity, bad request), so the token still works."""

    async def park(self, session_id: str, messages: list[Message], deadline: float) -> None:
        """Keep a dropped session's conversation until ``deadline`` (``time.time()``)."""

    async def take(self, session_id: str) -> list[Message] | None:
        """The parked conversation of ``session_id``, or the checkpoint of one whose node died less than its
        grace ago, removed; None if none, expired, or still held by a live node (see ``holder``)."""

    async def checkpoint(self, session_id: str, node: str, messages: list[Message], *, grace_s: float,
                         keep_s: float, record: dict[str, Any] | None = None) -> None:
        """A live session's conversation after a finished turn, held by ``node`` (kept at most ``keep_s``);
        ``record``: that turn, for ``transcript`` on every node (a ledger without shared state ignores both)."""

    async def holder(self, session_id: str) -> str | None:
        """The live node whose checkpoint of ``session_id`` is not takeable yet; None if there is none."""

    async def drop(self, session_id: str) -> None:
        """The session ended for good (not resumable): forget its checkpoint."""

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        """The finished turns the shared state holds for ``session_id`` (``GET /sessions/{id}/transcript``)."""

    async def hit(self, client: str, per_minute: int) -> bool:
        """Count a new session from ``client``; False if it already had ``per_minute`` in the last minute."""

    async def publish(self, worker: str, snapshot: dict[str, Any]) -> None:
        """A worker's heartbeat: its sessions and metrics, for the other workers' ``/health`` and ``/metrics``."""

    async def workers(self, max_age_s: float) -> dict[str, dict[str, Any]]:
        """The latest snapshot of every worker heard from within ``max_age_s``."""

    async def forget_worker(self, worker: str) -> None:
        """A worker that stops cleanly leaves at once rather than after its heartbeat goes stale."""

    async def aclose(self) -> None: ...


class LocalLedger:
    """The ledger of a single process: plain dicts, bounded."""

    shared = False

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}  # token id -> (session id or UNBOUND, expiry)
        self._parked: dict[str, tuple[float, list[Message]]] = {}
        self._hits: OrderedDict[str, SlidingWindow] = OrderedDict()

    def secret(self) -> bytes | None:
        return None

    async def claim_token(self, token_id: str, expires_at: float) -> str | None:
        now = time.time()
        for expired in [t for t, (_, expiry) in self._tokens.items() if expiry < now]:
            del self._tokens[expired]
        owner = self._tokens.get(token_id)
        if owner is not None:
            return owner[0]
        self._tokens[token_id] = (UNBOUND, expires_at)
        return None

    async def bind_token(self, token_id: str, session_id: str, expires_at: float) -> None:
        self._tokens[token_id] = (session_id, expires_at)

    async def token_owner(self, token_id: str) -> str | None:
        owner = self._tokens.get(token_id)
        return owner[0] if owner is not None and owner[1] >= time.time() else None

    async def release_token(self, token_id: str) -> None:
        if self._tokens.get(token_id, (None,))[0] == UNBOUND:
            del self._tokens[token_id]

    async def park(self, session_id: str, messages: list[Message], deadline: float) -> None:
        self._forget_parked()
        self._parked[session_id] = (deadline, messages)

    async def take(self, session_id: str) -> list[Message] | None:
        self._forget_parked()
        entry = self._parked.pop(session_id, None)
        return entry[1] if entry is not None else None

    def _forget_parked(self) -> None:
        now = time.time()
        for sid in [sid for sid, (deadline, _) in self._parked.items() if deadline < now]:
            del self._parked[sid]

    async def hit(self, client: str, per_minute: int) -> bool:
        window = self._hits.pop(client, None) or SlidingWindow(per_minute, RATE_WINDOW_S)
        window.limit = per_minute
        self._hits[client] = window  # most recent last, so the oldest client is forgotten first
        while len(self._hits) > MAX_TRACKED_CLIENTS:
            self._hits.popitem(last=False)
        return window.allow()

    async def checkpoint(self, session_id: str, node: str, messages: list[Message], *, grace_s: float,
                         keep_s: float, record: dict[str, Any] | None = None) -> None:
        return None  # one process: if it dies, its sessions die with it

    async def holder(self, session_id: str) -> str | None:
        return None

    async def drop(self, session_id: str) -> None:
        return None

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        return None

    async def publish(self, worker: str, snapshot: dict[str, Any]) -> None:
        return None  # one process: nobody else to tell

    async def workers(self, max_age_s: float) -> dict[str, dict[str, Any]]:
        return {}

    async def forget_worker(self, worker: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_by_expiry ON tokens(expires_at);
CREATE TABLE IF NOT EXISTS parked (session_id TEXT PRIMARY KEY, messages TEXT NOT NULL, deadline REAL NOT NULL,
                                   node TEXT NOT NULL DEFAULT '', grace REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS hits (client TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS hits_by_client ON hits(client, at);
CREATE INDEX IF NOT EXISTS hits_by_time ON hits(at);
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, snapshot TEXT NOT NULL, at REAL NOT NULL);
"""


def create_shared_ledger(path: str) -> None:
    """Create the file every worker opens, with the token-signing secret they share. Called once, by the supervisor."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_bytes(32),))
    finally:
        db.close()
    os.chmod(path, 0o600)


class SQLiteLedger:
    """The ledger of ``--workers N``: one SQLite file, one connection per worker, on its own thread."""

    shared = True

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no shared ledger at {path}: the supervisor creates it before the workers start")
        self.path = path
        self.orphan_after_s = ORPHAN_AFTER_S
        self._sql = SQLiteThread(self._connect, "vocable-ledger")
        self._run = self._sql.run
        self._conn = self._sql.conn
        self._secret = self._sql.run_blocking(self._read_secret)

    # ------------------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        db.execute("PRAGMA synchronous=OFF")  # the state dies with the server anyway
        return db

    def _transaction(self, fn: Any, *args: Any) -> Any:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db, *args)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _read_secret(self) -> bytes:
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
        if row is None:
            raise RuntimeError(f"{self.path} is not a vocable ledger (no secret)")
        return bytes(row[0])

    def secret(self) -> bytes | None:
        return self._secret

    # ------------------------------------------------------------------------------ tokens

    async def claim_token(self, token_id: str, expires_at: float) -> str | None:
        def claim(db: sqlite3.Connection) -> str | None:
            db.execute("DELETE FROM tokens WHERE expires_at < ?", (time.time(),))
            row = db.execute("SELECT session_id FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if row is not None:
                return str(row[0])
            db.execute("INSERT INTO tokens VALUES (?, ?, ?)", (token_id, UNBOUND, expires_at))
            return None
        return await self._run(self._transaction, claim)

    async def bind_token(self, token_id: str, session_id: str, expires_at: float) -> None:
        def bind(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)", (token_id, session_id, expires_at))
        await self._run(self._transaction, bind)

    async def token_owner(self, token_id: str) -> str | None:
        def read() -> str | None:
            row = self._conn().execute("SELECT session_id FROM tokens WHERE id = ? AND expires_at >= ?",
                                       (token_id, time.time())).fetchone()
            return None if row is None else str(row[0])
        return await self._run(read)

    async def release_token(self, token_id: str) -> None:
        def release(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM tokens WHERE id = ? AND session_id = ?", (token_id, UNBOUND))
        await self._run(self._transaction, release)

    # ------------------------------------------------------------------------------ parked conversations

    async def park(self, session_id: str, messages: list[Message], deadline: float) -> None:
        await self._keep(session_id, messages, deadline, "", 0.0)

    async def checkpoint(self, session_id: str, node: str, messages: list[Message], *, grace_s: float,
                         keep_s: float, record: dict[str, Any] | None = None) -> None:
        await self._keep(session_id, messages, time.time() + keep_s, node, grace_s)

    async def _keep(self, session_id: str, messages: list[Message], deadline: float, node: str, grace: float) -> None:
        """Park (``node`` empty) or checkpoint; a checkpoint arriving late never replaces a parked conversation
        (its session has closed since)."""
        text = dump_messages(messages)

        def keep(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM parked WHERE deadline < ?", (time.time(),))
            db.execute("INSERT INTO parked VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
                       "messages = excluded.messages, deadline = excluded.deadline, node = excluded.node, "
                       "grace = excluded.grace WHERE excluded.node = '' OR parked.node != ''",
                       (session_id, text, deadline, node, grace))
        await self._run(self._transaction, keep)

    def _status(self, db: sqlite3.Connection, session_id: str) -> tuple[str, str | None]:
        """("parked" | "orphaned", messages), ("live", node), or ("none", None) for expired or unknown."""
        row = db.execute("SELECT messages, deadline, node, grace FROM parked WHERE session_id = ?",
                         (session_id,)).fetchone()
        now = time.time()
        if row is None or row[1] < now:
            return "none", None
        if not row[2]:
            return "parked", str(row[0])
        beat = db.execute("SELECT at FROM workers WHERE id = ?", (row[2],)).fetchone()
        if beat is not None and now - beat[0] < self.orphan_after_s:
            return "live", str(row[2])
        if beat is None or now - beat[0] > row[3] + self.orphan_after_s:
            return "none", None  # its node died longer ago than the grace window (or never beat at all)
        return "orphaned", str(row[0])

    async def take(self, session_id: str) -> list[Message] | None:
        def take(db: sqlite3.Connection) -> str | None:
            status, value = self._status(db, session_id)
            if status == "live":
                return None
            db.execute("DELETE FROM parked WHERE session_id = ?", (session_id,))
            return value if status != "none" else None
        text = await self._run(self._transaction, take)
        return None if text is None else load_messages(text)

    async def holder(self, session_id: str) -> str | None:
        def read() -> str | None:
            status, value = self._status(self._conn(), session_id)
            return value if status == "live" else None
        return await self._run(read)

    async def drop(self, session_id: str) -> None:
        def drop(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM parked WHERE session_id = ?", (session_id,))
        await self._run(self._transaction, drop)

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        return None  # one machine: storage.url is where transcripts are read

    # ------------------------------------------------------------------------------ rate limit

    async def hit(self, client: str, per_minute: int) -> bool:
        def hit(db: sqlite3.Connection) -> bool:
            now = time.time()
            db.execute("DELETE FROM hits WHERE at < ?", (now - RATE_WINDOW_S,))
            (count,) = db.execute("SELECT COUNT(*) FROM hits WHERE client = ?", (client,)).fetchone()
            if count >= per_minute:
                return False
            db.execute("INSERT INTO hits VALUES (?, ?)", (client, now))
            return True
        return bool(await self._run(self._transaction, hit))

    # ------------------------------------------------------------------------------ heartbeats

    async def publish(self, worker: str, snapshot: dict[str, Any]) -> None:
        text = json.dumps(snapshot)

        def publish(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?)", (worker, text, time.time()))
        await self._run(self._transaction, publish)

    async def workers(self, max_age_s: float) -> dict[str, dict[str, Any]]:
        def read() -> list[tuple[str, str]]:
            return self._conn().execute("SELECT id, snapshot FROM workers WHERE at >= ? ORDER BY id",
                                        (time.time() - max_age_s,)).fetchall()
        return {worker: json.loads(text) for worker, text in await self._run(read)}

    async def forget_worker(self, worker: str) -> None:
        def forget(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM workers WHERE id = ?", (worker,))
        await self._run(self._transaction, forget)

    async def aclose(self) -> None:
        await self._sql.close()


def dump_messages(messages: list[Message]) -> str:
    return json.dumps([asdict(m) for m in messages])


def load_messages(text: str | bytes) -> list[Message]:
    return [_message(item) for item in json.loads(text)]


def _message(item: dict[str, Any]) -> Message:
    calls = tuple(ToolCall(**call) for call in item.get("tool_calls") or ())
    return Message(item["role"], item["content"], item.get("tool_call_id"), calls, item.get("name"))

