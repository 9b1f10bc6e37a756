"""Session events: what a client sees, over the wire or from ``Conversation.events()``.

They are frozen, slotted dataclasses because they sit on the hot path. ``to_wire`` gives the JSON object of
the wire protocol (docs/protocol.md); ``AudioOut`` goes out as a binary message instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

State = Literal["listening", "thinking", "speaking"]

_WIRE_FIELDS: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class Event:
    type: str = field(init=False, default="")

    def to_wire(self) -> dict[str, Any]:
        # Event fields are flat values, so no deep copy (dataclasses.asdict) is needed: ~10x cheaper.
        names = _WIRE_FIELDS.get(type(self))
        if names is None:
            names = _WIRE_FIELDS[type(self)] = tuple(f.name for f in fields(self))
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True, slots=True)
class Ready(Event):
    session_id: str
    input_sample_rate: int
    output_sample_rate: int
    resumed: bool = False  # the session continues an earlier connection's conversation
    type: str = field(init=False, default="ready")


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    state: State
    type: str = field(init=False, default="state")


@dataclass(frozen=True, slots=True)
class Transcript(Event):
    """The user's words so far in this turn. ``continues``: the id of an earlier turn whose words this one
    carries on (the person paused, then went on): the client updates that turn's bubble instead of a new one."""

    text: str
    final: bool
    turn_id: str
    continues: str | None = None
    type: str = field(init=False, default="transcript")

    def to_wire(self) -> dict[str, Any]:
        wire = {"type": "transcript", "text": self.text, "final": self.final, "turn_id": self.turn_id}
        if self.continues is not None:
            wire["continues"] = self.continues
        return wire


@dataclass(frozen=True, slots=True)
class Reply(Event):
    text: str
    final: bool
    turn_id: str
    type: str = field(init=False, default="reply")


@dataclass(frozen=True, slots=True)
class AudioOut(Event):
    """Reply audio at the session's output rate (a binary message on the wire)."""

    pcm: bytes
    sample_rate: int
    turn_id: str
    type: str = field(init=False, default="audio")

    def to_wire(self) -> dict[str, Any]:
        return {"type": "audio", "bytes": len(self.pcm), "sample_rate": self.sample_rate, "turn_id": self.turn_id}


@dataclass(frozen=True, slots=True)
class Interrupted(Event):
    """The reply stopped for good; the client drops the audio it still holds. ``reason``: ``barge_in`` (the
    user spoke over it), ``user_continued`` (it never spoke: the user went on), ``client`` or ``new_turn``."""

    turn_id: str
    reason: str = "barge_in"
    type: str = field(init=False, default="interrupted")


@dataclass(frozen=True, slots=True)
class Paused(Event):
    """The user's voice started during the reply: its output stopped where it was, to be resumed (a false
    interruption) or interrupted (words followed)."""

    turn_id: str
    type: str = field(init=False, default="paused")


@dataclass(frozen=True, slots=True)
class Resumed(Event):
    """A paused reply goes on from the sample where it stopped: nothing repeated, nothing skipped."""

    turn_id: str
    type: str = field(init=False, default="resumed")


@dataclass(frozen=True, slots=True)
class MetricsEvent(Event):
    turn_id: str
    figures: dict[str, Any]
    type: str = field(init=False, default="metrics")

    def to_wire(self) -> dict[str, Any]:
        return {"type": "metrics", "turn_id": self.turn_id, **self.figures}


@dataclass(frozen=True, slots=True)
class ToolCallEvent(Event):
    """The LLM asked for a tool, and the engine runs it (``vocable.engine.tools``); ``tool_result`` follows."""

    turn_id: str
    id: str
    name: str
    arguments: str
    type: str = field(init=False, default="tool_call")


@dataclass(frozen=True, slots=True)
class ToolResultEvent(Event):
    """A tool call ended, exactly once: ``status`` is ``ok``, ``error``, ``timeout`` or ``cancelled``."""

    turn_id: str
    id: str
    name: str
    status: str
    type: str = field(init=False, default="tool_result")


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    code: str
    message: str
    fatal: bool = False
    type: str = field(init=False, default="error")


@dataclass(frozen=True, slots=True)
class Reconnect(Event):
    """This node is going away (draining): the conversation is parked; connect again with ``?resume=<id>``
    (through the load balancer, to another node) within ``server.resume_grace_s``. ``closed`` follows."""

    reason: str
    type: str = field(init=False, default="reconnect")


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The session has ended (the last event of every session)."""

    reason: str
    type: str = field(init=False, default="closed")
