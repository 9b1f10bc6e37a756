"""What a finished turn leaves behind for observers and persistence, and the ids sessions and turns get."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass(slots=True)
class TurnRecord:
    """A finished turn as observers and persistence see it."""

    session_id: str
    turn_id: str
    user_text: str | None
    reply_text: str  # as spoken: cut at the barge-in point when interrupted
    full_reply_text: str
    interrupted: bool
    error: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
