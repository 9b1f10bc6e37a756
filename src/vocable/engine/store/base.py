"""What every store answers, and the one transcript shape they all return."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vocable.engine.records import TurnRecord


class TurnStore(Protocol):
    """Sessions and their finished turns. Each call returns once its write is committed."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def session_started(self, session_id: str, transport: str, started_at: float) -> None: ...

    async def session_ended(self, session_id: str, ended_at: float, reason: str) -> None: ...

    async def write_turn(self, turn: TurnRecord) -> None: ...

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        """The session and its turns in order (see ``transcript_of``), or None for an unknown session."""
        ...


def scheme_of(url: str) -> str:
    """``postgresql://u:p@h/db`` -> ``postgresql``; a string without ``://`` has none (and is not echoed)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def transcript_of(session: Sequence[Any], turns: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Rows ``(id, transport, started_at, ended_at, end_reason)`` and ``(turn_id, user_text, reply_text,
    full_reply_text, interrupted, error, metrics, started_at)`` to the JSON ``GET /sessions/{id}/transcript`` sends."""
    return {
        "session_id": session[0], "transport": session[1], "started_at": session[2], "ended_at": session[3],
        "end_reason": session[4],
        "turns": [
            {"turn_id": t[0], "user_text": t[1], "reply_text": t[2], "full_reply_text": t[3],
             "interrupted": bool(t[4]), "error": t[5], "metrics": t[6], "started_at": t[7]}
            for t in turns
        ],
    }
