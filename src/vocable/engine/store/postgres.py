"""PostgreSQL persistence (``storage.url: postgresql://user:password@host:5432/db``, or ``postgres://``).

The same two tables as the SQLite store, named ``vocable_sessions`` and ``vocable_turns`` so that they sit
well in a shared database, over psycopg 3's asyncio driver and a small connection pool (one to four
connections). Every write is one autocommitted statement: when a call returns, its row is committed (with
PostgreSQL's default ``synchronous_commit``, flushed to the server's WAL), so a vocable server killed with
SIGKILL keeps every finished turn. The driver is optional: ``pip install 'vocable[postgres]'``.

The password never leaves this module: it is registered with the log scrubber, and errors name the database
as ``postgresql://host:port/db``, without credentials or query parameters.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from vocable.config.loader import ConfigError
from vocable.engine.store.base import transcript_of
from vocable.logging import REDACTED, scrubber

if TYPE_CHECKING:
    from vocable.engine.records import TurnRecord

INSTALL_HINT = "pip install 'vocable[postgres]'"
_SCHEMA_LOCK = 0x766F6361626C65  # "vocable": servers starting together create the tables one at a time

SCHEMA = """
CREATE TABLE IF NOT EXISTS vocable_sessions (
    id TEXT PRIMARY KEY,
    transport TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    end_reason TEXT
);
CREATE TABLE IF NOT EXISTS vocable_turns (
    turn_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    user_text TEXT,
    reply_text TEXT NOT NULL,
    full_reply_text TEXT NOT NULL,
    interrupted BOOLEAN NOT NULL,
    error TEXT,
    metrics JSONB NOT NULL,
    started_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS vocable_turns_by_session ON vocable_turns (session_id, seq);
"""
# No foreign key from turns to sessions: as with SQLite (which does not enforce one), a finished turn is never
# refused for want of its session row.

_WRITE_TURN = """
INSERT INTO vocable_turns
    (turn_id, session_id, seq, user_text, reply_text, full_reply_text, interrupted, error, metrics, started_at)
VALUES (%(turn_id)s, %(session_id)s, (SELECT COUNT(*) FROM vocable_turns WHERE session_id = %(session_id)s),
        %(user_text)s, %(reply_text)s, %(full_reply_text)s, %(interrupted)s, %(error)s, %(metrics)s, %(started_at)s)
ON CONFLICT (turn_id) DO UPDATE SET
    user_text = EXCLUDED.user_text, reply_text = EXCLUDED.reply_text, full_reply_text = EXCLUDED.full_reply_text,
    interrupted = EXCLUDED.interrupted, error = EXCLUDED.error, metrics = EXCLUDED.metrics,
    started_at = EXCLUDED.started_at
"""


class StoreError(RuntimeError):
    """The database cannot be reached or used. The message names the database without its credentials."""


def _driver() -> tuple[Any, Any, Any]:
    try:
        import psycopg
        from psycopg.types.json import Jsonb
        from psycopg_pool import AsyncConnectionPool
    except ImportError:
        raise ConfigError([("storage.url", f"a PostgreSQL URL needs the psycopg driver: {INSTALL_HINT}")]) from None
    return psycopg, AsyncConnectionPool, Jsonb


def public_url(url: str) -> str:
    """The URL without user, password and query string: what errors may show."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def url_secrets(url: str) -> set[str]:
    """The password of ``url``, from ``user:password@`` or ``?password=``, as written and percent-decoded."""
    parts = urlsplit(url)
    found = []
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if unquote(key) == "password":
            found.append(value)
    return {form for value in found for form in (value, unquote(value)) if form}


def _json_safe(value: Any) -> Any:
    """JSONB refuses NaN and infinities: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class PostgresTurnStore:
    def __init__(self, url: str, *, max_connections: int = 4, timeout_s: float = 5.0) -> None:
        self._psycopg, self._pool_cls, self._jsonb = _driver()  # at config time: a missing driver is a config error
        self._url = url
        self.where = public_url(url)
        self._secrets = url_secrets(url)
        for secret in self._secrets:
            scrubber.add(secret)
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self._pool: Any = None
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresTurnStore({self.where!r})"

    def _failure(self, exc: BaseException) -> StoreError:
        message = str(exc).strip() or type(exc).__name__
        for secret in sorted(self._secrets, key=len, reverse=True):
            message = message.replace(secret, REDACTED)
        return StoreError(f"PostgreSQL {self.where}: {message}")

    async def open(self) -> None:
        async with self._opening:
            if self._pool is not None:
                return
            psycopg = self._psycopg
            pool = None
            try:
                async with asyncio.timeout(self.timeout_s * 2):
                    conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                    async with conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                        await conn.execute(SCHEMA)
                check = getattr(self._pool_cls, "check_connection", None)  # psycopg-pool >= 3.2
                pool = self._pool_cls(
                    self._url, min_size=1, max_size=self.max_connections, open=False, name="vocable-store",
                    kwargs={"autocommit": True}, timeout=self.timeout_s, **({"check": check} if check else {}),
                )
                await pool.open(wait=True, timeout=self.timeout_s)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if pool is not None:
                    await pool.close()
                raise self._failure(exc) from None
            self._pool = pool

    async def close(self) -> None:
        async with self._opening:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._pool is None:
            await self.open()
        try:
            async with self._pool.connection() as conn:
                yield conn
        except self._psycopg.Error as exc:
            raise self._failure(exc) from None

    async def session_started(self, session_id: str, transport: str, started_at: float) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO vocable_sessions (id, transport, started_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (session_id, transport, started_at),
            )

    async def session_ended(self, session_id: str, ended_at: float, reason: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE vocable_sessions SET ended_at = %s, end_reason = %s WHERE id = %s",
                (ended_at, reason, session_id),
            )

    async def write_turn(self, turn: TurnRecord) -> None:
        async with self._connection() as conn:
            await conn.execute(_WRITE_TURN, {
                "turn_id": turn.turn_id, "session_id": turn.session_id, "user_text": turn.user_text,
                "reply_text": turn.reply_text, "full_reply_text": turn.full_reply_text,
                "interrupted": bool(turn.interrupted), "error": turn.error,
                "metrics": self._jsonb(_json_safe(turn.metrics)), "started_at": turn.started_at,
            })

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT id, transport, started_at, ended_at, end_reason FROM vocable_sessions WHERE id = %s",
                (session_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await conn.execute(
                "SELECT turn_id, user_text, reply_text, full_reply_text, interrupted, error, metrics, started_at "
                "FROM vocable_turns WHERE session_id = %s ORDER BY seq",
                (session_id,),
            )
            return transcript_of(row, await cur.fetchall())
