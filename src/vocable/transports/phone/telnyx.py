"""Telnyx: a TeXML webhook, media streaming with ``sequence_number`` reordering and PCMU or PCMA, and Call
Control REST for hang-ups and outbound calls.

```yaml
transports:
  telnyx: {api_key: "${TELNYX_API_KEY}", public_key: "<the portal's public key>",
           public_url: "https://voice.example.com", connection_id: "<for outbound calls>"}
```

The webhook is signed with Ed25519 (``telnyx-signature-ed25519`` over ``<telnyx-timestamp>|<body>``), checked
against ``public_key``; a timestamp older than five minutes is refused. Telnyx does not sign the stream's
WebSocket upgrade, so the answer's stream URL carries a one-time token that only a signed webhook gets.
Media frames may arrive out of order: they are put back by ``sequence_number`` (``reorder_window``).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from xml.etree import ElementTree

from pydantic import Field, SecretStr
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from vocable.providers.base import ProviderSettings
from vocable.transports.phone.base import PhoneSettings, PhoneTransport, rest_request
from vocable.transports.phone.call import PhoneCall
from vocable.transports.phone.dialect import (
    Dialect,
    Inbound,
    StreamStart,
    need,
    need_str,
    parameters_of,
    payload_of,
    seq_of,
)
from vocable.transports.protocol import BadInput

ENCODINGS = {"PCMU": "mulaw", "PCMA": "alaw"}
MAX_SKEW_S = 300


class TelnyxSettings(PhoneSettings):
    public_key: str = Field(description="the account's public key (base64, Mission Control portal): checks webhooks")
    api_key: SecretStr | None = Field(default=None, description="Call Control REST: hang-ups and outbound calls")
    connection_id: str | None = Field(default=None, description="the Call Control connection of outbound calls")
    codec: Literal["PCMU", "PCMA"] = "PCMU"
    webhook_path: str = Field(default="/telnyx/voice", pattern=r"^/")
    stream_path: str = Field(default="/telnyx/stream", pattern=r"^/")
    call_path: str = Field(default="/telnyx/call", pattern=r"^/")


class TelnyxDialect(Dialect):
    name = "telnyx"
    reorder = True
    stream_key = "stream_id"

    def parse(self, data: dict[str, Any]) -> Inbound:
        event = data.get("event")
        seq = seq_of(data.get("sequence_number"))
        if event == "media":
            self.check_stream(data)
            media = need(data, "media")
            if isinstance(media, dict) and media.get("track", "inbound") != "inbound":
                return Inbound("ignored", seq)
            return Inbound("media", seq, payload=payload_of(data, "media", "payload"))
        if event == "mark":
            return Inbound("mark", seq, mark=need_str(data, "mark", "name"))
        if event == "dtmf":
            return Inbound("dtmf", seq, digit=need_str(data, "dtmf", "digit"))
        if event == "start":
            start = need(data, "start")
            media_format = need(data, "start", "media_format")
            encoding = media_format.get("encoding") if isinstance(media_format, dict) else None
            if encoding not in ENCODINGS or media_format.get("sample_rate", 8000) != 8000:
                raise BadInput("unsupported_media_format", f"start: media_format {media_format!r}; "
                               "expected PCMU or PCMA at 8000 Hz")
            parameters = parameters_of(start.get("custom_parameters"))
            caller = start.get("from") if isinstance(start.get("from"), str) else parameters.get("From")
            callee = start.get("to") if isinstance(start.get("to"), str) else parameters.get("To")
            return Inbound("start", seq, start=StreamStart(
                need_str(data, "stream_id"), need_str(data, "start", "call_control_id"), ENCODINGS[encoding],
                8000, parameters, caller, callee))
        if event == "error":
            raise BadInput("carrier_error", f"telnyx reported: {str(data.get('payload'))[:200]}")
        return self.other(event, seq)


    def media(self, payload: bytes) -> str:
        return '{"event":"media","media":{"payload":"' + base64.b64encode(payload).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        return '{"event":"mark","mark":{"name":' + json.dumps(name) + "}}"

    def clear(self) -> str:
        return '{"event":"clear"}'


class TelnyxTransport(PhoneTransport):
    name: ClassVar[str] = "telnyx"
    Settings: ClassVar[type[ProviderSettings]] = TelnyxSettings
    dialect_class = TelnyxDialect
    requires = ("aiohttp", "cryptography")
    settings: TelnyxSettings

    def secret(self) -> str:
        return self.settings.public_key + (self.settings.api_key.get_secret_value() if self.settings.api_key else "")

    def verify_webhook(self, request: Request, body: bytes, form: FormData) -> bool:
        signature = request.headers.get("telnyx-signature-ed25519")
        timestamp = request.headers.get("telnyx-timestamp", "")
        if not signature or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_S:
            return False
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(self.settings.public_key))
            key.verify(base64.b64decode(signature), timestamp.encode() + b"|" + body)
        except (InvalidSignature, ValueError):
            return False
        return True

    def verify_stream(self, ws: WebSocket) -> bool:
        return self.check_stream_token(ws.query_params.get("token"))

    def answer(self, form: Mapping[str, str]) -> Response:
        response = ElementTree.Element("Response")
        connect = ElementTree.SubElement(response, "Connect")
        stream = ElementTree.SubElement(connect, "Stream", {
            "url": self.stream_url(f"token={self.issue_stream_token()}"),
            "bidirectionalMode": "rtp", "bidirectionalCodec": self.settings.codec})
        for name in ("From", "To", "CallSid"):
            if form.get(name):
                ElementTree.SubElement(stream, "Parameter", {"name": name, "value": form[name]})
        xml = '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(response, encoding="unicode")
        return Response(xml, media_type="application/xml")

    def _api(self, path: str) -> tuple[str, dict[str, str]]:
        if self.settings.api_key is None:
            raise RuntimeError("set transports.telnyx.api_key to use the REST API")
        base = (self.settings.api_base_url or "https://api.telnyx.com").rstrip("/")
        return base + path, {"Authorization": f"Bearer {self.settings.api_key.get_secret_value()}"}

    async def hangup(self, call: PhoneCall) -> None:
        url, headers = self._api(f"/v2/calls/{call.call_id}/actions/hangup")
        await rest_request("POST", url, headers=headers, json_body={})

    async def place_call(self, to: str, from_: str, parameters: dict[str, str]) -> dict[str, Any]:
        if not self.settings.connection_id:
            raise RuntimeError("set transports.telnyx.connection_id to place calls")
        url, headers = self._api("/v2/calls")
        answer = await rest_request("POST", url, headers=headers, json_body={
            "connection_id": self.settings.connection_id, "to": to, "from": from_,
            "stream_url": self.stream_url(f"token={self.issue_stream_token()}"), "stream_track": "inbound_track",
            "stream_bidirectional_mode": "rtp", "stream_bidirectional_codec": self.settings.codec,
            "custom_headers": [{"name": k, "value": v} for k, v in parameters.items()]})
        data = answer.get("data", {}) if isinstance(answer, dict) else {}
        return {"call_control_id": data.get("call_control_id"), "status": "queued"}
