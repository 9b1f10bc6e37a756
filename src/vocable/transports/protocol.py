"""The client side of the wire protocol (docs/protocol.md), shared by every transport that carries it.

``/ws/audio`` and WebRTC's event socket accept the same JSON messages, so their parsing lives here, once.
Pydantic validates at this edge; a mistake becomes ``BadInput`` with a stable error ``code`` that the
transport sends back as an ``error`` event.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # unknown fields: room for newer clients


class StartMessage(_Message):
    type: Literal["start"]
    sample_rate: StrictInt


class TextMessage(_Message):
    type: Literal["text"]
    text: StrictStr


class InterruptMessage(_Message):
    type: Literal["interrupt"]


class EndMessage(_Message):
    type: Literal["end"]


ClientMessage = StartMessage | TextMessage | InterruptMessage | EndMessage
MESSAGES: dict[str, type[ClientMessage]] = {
    "start": StartMessage, "text": TextMessage, "interrupt": InterruptMessage, "end": EndMessage,
}


class BadInput(Exception):
    """A client mistake: answered with an ``error`` event carrying a stable ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_message(text: str) -> ClientMessage:
    """Validate one JSON text message; raise BadInput with the protocol's error code."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput("invalid_json", "text messages must be JSON objects") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BadInput("invalid_message", 'a text message must be a JSON object with a string "type"')
    kind = data["type"]
    model = MESSAGES.get(kind)
    if model is None:
        raise BadInput("unknown_type", f"unknown message type {kind[:40]!r}; expected one of: {', '.join(MESSAGES)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadInput("invalid_field", f"{kind}.{where}: {first['msg']}") from None


def requested_rate(value: str | None) -> int | None:
    """The optional ``?sample_rate=`` of the connection URL (the session checks it is supported)."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadInput("invalid_field", "sample_rate must be an integer (Hz)") from None
