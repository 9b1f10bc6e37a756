"""A third-party tool plugin for the tool tests: ``book_table`` takes 1.5 s and has a side effect.

Each call appends its arguments to the file named by ``$BOOKINGS_FILE``, when it starts and when it ends, so
a test can see how many times the side effect ran, in another process (``vocable serve``).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from vocable import hookimpl

SECONDS = 1.5


def _note(event: str, **fields: Any) -> None:
    with open(os.environ["BOOKINGS_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"event": event, **fields}) + "\n")


async def book_table(time: str) -> dict[str, str]:
    """Book a table (a slow side effect)."""
    _note("start", time=time)
    await asyncio.sleep(SECONDS)
    _note("booked", time=time)
    return {"status": "booked", "time": time}


@hookimpl
def register_tools(register: Any) -> None:
    register(book_table, description="Book a table at the restaurant", timeout_s=5,
             parameters={"type": "object", "properties": {"time": {"type": "string"}}, "required": ["time"]})
