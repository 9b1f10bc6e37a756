"""One sqlite3 connection on a thread of its own, used by the turn store and by the workers' ledger.

A sqlite3 connection belongs to the thread that opened it, and a query waits on the disk and on other
processes' locks, so neither may run on the event loop: every use goes through ``run``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class SQLiteThread:
    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._db: sqlite3.Connection | None = None

    def conn(self) -> sqlite3.Connection:
        """The connection, opened on first use; only from inside ``run`` (on the thread)."""
        if self._db is None:
            self._db = self._connect()
        return self._db

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``run`` for start-up code that has no event loop yet."""
        return self._pool.submit(fn, *args).result()

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await self.run(close)
        self._pool.shutdown(wait=True)
