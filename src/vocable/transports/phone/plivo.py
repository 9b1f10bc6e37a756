"""Plivo: an answer-URL webhook (Plivo XML), bidirectional Audio Streams (``playAudio``, ``checkpoint``,
``clearAudio``), and REST for hang-ups and outbound calls.

```yaml
transports:
  plivo: {auth_id: "${PLIVO_AUTH_ID}", auth_token: "${PLIVO_AUTH_TOKEN}", public_url: "https://voice.example.com"}
```

The answer URL's request is signed (``X-Plivo-Signature-V3`` with ``X-Plivo-Signature-V3-Nonce``: HMAC-SHA256
with the auth token over ``<url>?<sorted key+value pairs>.<nonce>``, base64; the header may list several).
Plivo does not sign the stream's WebSocket upgrade, so the answer's stream URL carries a one-time token that
only a signed request gets. A ``checkpoint`` is Plivo's mark: it comes back as ``playedStream`` once the audio
before it has played.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, ClassVar
from xml.etree import ElementTree

from pydantic import Field, SecretStr
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from vocable.providers.base import ProviderSettings
from vocable.transports.phone.base import PhoneSettings, PhoneTransport, rest_request
from vocable.transports.phone.call import PhoneCall
from vocable.transports.phone.dialect import Dialect, Inbound, StreamStart, need, need_str, payload_of, seq_of
from vocable.transports.protocol import BadInput


class PlivoSettings(PhoneSettings):
    auth_id: str = Field(description="the account's Auth ID")
    auth_token: SecretStr = Field(description="the account's Auth Token: signs requests, authenticates REST calls")
    webhook_path: str = Field(default="/plivo/voice", pattern=r"^/")
    stream_path: str = Field(default="/plivo/stream", pattern=r"^/")
    call_path: str = Field(default="/plivo/call", pattern=r"^/")


def plivo_signature(auth_token: str, url: str, params: Mapping[str, str], nonce: str) -> str:
    """Plivo's V3 signature of a POST to ``url`` with form ``params``."""
    pairs = "".join(f"{k}{v}" for k, v in sorted(params.items()))
    signed = f"{url}?{pairs}.{nonce}" if pairs else f"{url}.{nonce}"
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha256).digest()).decode()


def extra_headers(value: Any) -> dict[str, str]:
    """Plivo's ``extra_headers``: a JSON object, or ``key=value`` pairs separated by commas or semicolons."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str) or not value:
        return {}
    try:
        parsed = json.loads(value)
        if isinstance(parsed, dict):
            return {str(k): str(v) for k, v in parsed.items()}
    except ValueError:
        pass
    pairs = (p.split("=", 1) for p in value.replace(";", ",").split(",") if "=" in p)
    return {k.strip(): v.strip() for k, v in pairs}


class PlivoDialect(Dialect):
    name = "plivo"
    stream_key = "streamId"

    def bind(self, stream_id: str) -> None:
        super().bind(stream_id)
        sid = json.dumps(stream_id)
        self._checkpoint = '{"event":"checkpoint","streamId":' + sid + ',"name":'
        self._clear = '{"event":"clearAudio","streamId":' + sid + "}"

    def parse(self, data: dict[str, Any]) -> Inbound:
        event = data.get("event")
        seq = seq_of(data.get("sequenceNumber"))
        if event == "media":
            self.check_stream(data)
            return Inbound("media", seq, payload=payload_of(data, "media", "payload"))
        if event == "playedStream":
            return Inbound("mark", seq, mark=need_str(data, "name"))
        if event == "dtmf":
            return Inbound("dtmf", seq, digit=need_str(data, "dtmf", "digit"))
        if event == "start":
            media_format = need(data, "start", "mediaFormat")
            if not isinstance(media_format, dict) or (
                    media_format.get("encoding"), media_format.get("sampleRate")) != ("audio/x-mulaw", 8000):
                raise BadInput("unsupported_media_format", f"start: mediaFormat {media_format!r}; "
                               "expected audio/x-mulaw at 8000 Hz")
            headers = extra_headers(data.get("extra_headers"))
            return Inbound("start", seq, start=StreamStart(
                need_str(data, "start", "streamId"), need_str(data, "start", "callId"), "mulaw", 8000,
                headers, headers.get("From"), headers.get("To")))
        if event == "clearedAudio":
            return Inbound("ignored", seq)
        return self.other(event, seq)


    def media(self, payload: bytes) -> str:
        return ('{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"'
                + base64.b64encode(payload).decode("ascii") + '"}}')

    def mark(self, name: str) -> str:
        return self._checkpoint + json.dumps(name) + "}"

    def clear(self) -> str:
        return self._clear


class PlivoTransport(PhoneTransport):
    name: ClassVar[str] = "plivo"
    Settings: ClassVar[type[ProviderSettings]] = PlivoSettings
    dialect_class = PlivoDialect
    settings: PlivoSettings

    def secret(self) -> str:
        return self.settings.auth_token.get_secret_value()

    def verify_webhook(self, request: Request, body: bytes, form: FormData) -> bool:
        given = request.headers.get("x-plivo-signature-v3")
        nonce = request.headers.get("x-plivo-signature-v3-nonce")
        if not given or not nonce:
            return False
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        good = plivo_signature(self.secret(), self.public_url(request.url.path), params, nonce)
        return any(hmac.compare_digest(good, candidate.strip()) for candidate in given.split(","))

    def verify_stream(self, ws: WebSocket) -> bool:
        return self.check_stream_token(ws.query_params.get("token"))

    def answer(self, form: Mapping[str, str]) -> Response:
        response = ElementTree.Element("Response")
        headers = ",".join(f"{k}={form[k]}" for k in ("From", "To", "CallUUID") if form.get(k))
        stream = ElementTree.SubElement(response, "Stream", {
            "bidirectional": "true", "keepCallAlive": "true", "contentType": "audio/x-mulaw;rate=8000",
            **({"extraHeaders": headers} if headers else {})})
        stream.text = self.stream_url(f"token={self.issue_stream_token()}")
        xml = '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(response, encoding="unicode")
        return Response(xml, media_type="application/xml")

    def _api(self, path: str) -> str:
        base = (self.settings.api_base_url or "https://api.plivo.com").rstrip("/")
        return f"{base}/v1/Account/{self.settings.auth_id}{path}"

    async def hangup(self, call: PhoneCall) -> None:
        await rest_request("DELETE", self._api(f"/Call/{call.call_id}/"), auth=(self.settings.auth_id, self.secret()))

    async def place_call(self, to: str, from_: str, parameters: dict[str, str]) -> dict[str, Any]:
        answer = await rest_request("POST", self._api("/Call/"), auth=(self.settings.auth_id, self.secret()),
                                    json_body={"from": from_, "to": to, "answer_method": "POST",
                                               "answer_url": self.public_url(self.settings.webhook_path)})
        uuid = answer.get("request_uuid") if isinstance(answer, dict) else None
        return {"request_uuid": uuid, "status": "queued"}
