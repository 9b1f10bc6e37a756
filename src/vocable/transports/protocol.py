"""The client side of the wire protocol (docs/protocol.md), shared by every transport that carries it.

``/ws/audio`` and WebRTC's event socket accept the same JSON messages, so their parsing lives here, once.
Pydantic validates at this edge; a mistake becomes ``BadInput`` with a stable error ``code`` that the
transport sends back as an ``error`` event.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

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


def load_message(text: str) -> dict[str, Any]:
    """One client text message as a JSON object with a string ``type``, all of its text valid Unicode."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput("invalid_json", "text messages must be JSON objects") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BadInput("invalid_message", 'a text message must be a JSON object with a string "type"')
    if (where := lone_surrogate_at(data)) is not None:
        raise BadInput("invalid_field", f"{where[:80]}: not valid Unicode (a lone UTF-16 surrogate such as \\ud800)")
    return data


def parse_message(text: str | dict[str, Any]) -> ClientMessage:
    """Validate one protocol message (text, or what ``load_message`` made of it); raise BadInput with the
    protocol's error code."""
    data = load_message(text) if isinstance(text, str) else text
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


def lone_surrogate_at(value: object, path: str = "") -> str | None:
    """Where in parsed JSON a string holds a lone surrogate (``"\\ud800"`` is valid JSON, but no UTF-8 can
    carry it: left in, it fails later when the text is logged, stored or echoed back), else None."""
    if isinstance(value, str):
        return (path or "value") if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"{path}.<key>".lstrip(".")
            if (found := lone_surrogate_at(item, f"{path}.{key}".lstrip("."))) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := lone_surrogate_at(item, f"{path}[{index}]")) is not None:
                return found
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def requested_rate(value: str | None) -> int | None:
    """The optional ``?sample_rate=`` of the connection URL (the session checks it is supported)."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadInput("invalid_field", "sample_rate must be an integer (Hz)") from None
