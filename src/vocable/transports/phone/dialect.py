"""A carrier's media-stream messages, both ways, and the checks every inbound message gets.

Each carrier (Twilio, Telnyx, Plivo) speaks JSON over a WebSocket with its own names for the same things.
A ``Dialect`` turns an inbound message into an ``Inbound`` (what happened, in vocable's words) or raises
``BadInput`` naming what is wrong, and writes the outbound messages (``media``, ``mark``, ``clear``) as
text, with the per-call parts (the stream id) formatted once.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from vocable.transports.protocol import BadInput

Kind = Literal["connected", "start", "media", "dtmf", "mark", "stop", "ignored"]


@dataclass(frozen=True, slots=True)
class StreamStart:
    stream_id: str
    call_id: str
    encoding: str  # "mulaw" or "alaw"
    sample_rate: int
    parameters: dict[str, str] = field(default_factory=dict)
    caller: str | None = None
    callee: str | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    kind: Kind
    seq: int | None = None
    payload: bytes | None = None  # media: G.711 bytes
    digit: str | None = None
    mark: str | None = None
    start: StreamStart | None = None


def load_json(text: str | None) -> dict[str, Any]:
    if text is None:
        raise BadInput("binary_message", "media streams carry JSON text messages, not binary ones")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput("invalid_json", "not a JSON message") from None
    if not isinstance(data, dict):
        raise BadInput("invalid_message", "a message must be a JSON object")
    return data


def need(data: dict[str, Any], *path: str) -> Any:
    """``data[path[0]][path[1]]...``, or BadInput naming the missing field."""
    value: Any = data
    for i, key in enumerate(path):
        if not isinstance(value, dict) or key not in value:
            raise BadInput("invalid_field", f"{data.get('event', '?')}: missing {'.'.join(path[: i + 1])}")
        value = value[key]
    return value


def need_str(data: dict[str, Any], *path: str) -> str:
    value = need(data, *path)
    if not isinstance(value, str) or not value:
        raise BadInput("invalid_field", f"{data.get('event', '?')}: {'.'.join(path)} must be a non-empty string")
    return value


def payload_of(data: dict[str, Any], *path: str) -> bytes:
    try:
        return base64.b64decode(need_str(data, *path), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("invalid_field", f"{data.get('event', '?')}: {'.'.join(path)} is not base64") from None


def seq_of(value: Any) -> int | None:
    """A sequence number (carriers send them as strings or integers), or None if absent or not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def parameters_of(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, (str, int, float))}


class Dialect(ABC):
    """One carrier's media-stream JSON. ``bind`` fixes the stream id once the call has started."""

    name: ClassVar[str]
    reorder: ClassVar[bool] = False  # inbound messages may arrive out of order (put them back by ``seq``)
    stream_key: ClassVar[str] = "streamSid"  # the field naming the stream in inbound messages

    def __init__(self) -> None:
        self.stream_id = ""

    def bind(self, stream_id: str) -> None:
        self.stream_id = stream_id

    @abstractmethod
    def parse(self, data: dict[str, Any]) -> Inbound:
        """One inbound message, or BadInput."""

    def fast_media(self, data: bytes) -> bytes | None:
        """The payload of text message ``data`` (UTF-8) if it is plainly a media message of this stream, found
        without parsing the JSON (50 a second per call); None sends it through ``parse``, which judges it."""
        return None

    def check_stream(self, data: dict[str, Any]) -> None:
        """A message naming another stream than this one's is refused."""
        sid = data.get(self.stream_key)
        if self.stream_id and sid is not None and sid != self.stream_id:
            raise BadInput("wrong_stream", f"{data.get('event')}: {self.stream_key} is not this stream's")

    def other(self, event: Any, seq: int | None) -> Inbound:
        """The events every carrier shares (``stop``, ``connected``), or BadInput naming an unknown one."""
        if event == "stop":
            return Inbound("stop", seq)
        if event == "connected":
            return Inbound("connected", seq)
        if not isinstance(event, str):
            raise BadInput("invalid_message", "a message needs a string 'event'")
        raise BadInput("unknown_event", f"unknown event {event[:40]!r}")

    @abstractmethod
    def media(self, payload: bytes) -> str: ...

    @abstractmethod
    def mark(self, name: str) -> str: ...

    @abstractmethod
    def clear(self) -> str: ...


class Reorder:
    """Puts messages back in ``seq`` order, holding at most ``window`` of them while one is missing.

    A message that is late by more than the window is counted lost and skipped (the call goes on); one
    older than what was already released is a duplicate or hopelessly late, and dropped.
    """

    def __init__(self, window: int = 8) -> None:
        self.window = window
        self.expected: int | None = None
        self._held: list[tuple[int, int, Inbound]] = []
        self._tiebreak = 0
        self.reordered = self.lost = self.dropped = 0

    def push(self, message: Inbound) -> list[Inbound]:
        seq = message.seq
        if seq is None:
            return [message]
        if self.expected is None:
            self.expected = seq
        if seq < self.expected:
            self.dropped += 1
            return []
        if seq > self.expected:
            self.reordered += 1
        self._tiebreak += 1
        heapq.heappush(self._held, (seq, self._tiebreak, message))
        out: list[Inbound] = []
        while self._held:
            first = self._held[0][0]
            if first == self.expected:
                out.append(heapq.heappop(self._held)[2])
                self.expected += 1
            elif first < self.expected:  # a duplicate held beside its twin
                heapq.heappop(self._held)
                self.dropped += 1
            elif len(self._held) > self.window:  # the missing one is too late: skip the gap
                self.lost += first - self.expected
                self.expected = first
            else:
                break
        return out

    def flush(self) -> list[Inbound]:
        out = [item[2] for item in sorted(self._held)]
        self._held.clear()
        return out
