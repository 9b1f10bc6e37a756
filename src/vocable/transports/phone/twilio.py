"""Twilio: the incoming-call webhook (TwiML), Media Streams both ways, hang-ups and outbound calls (REST).

```yaml
transports:
  twilio: {auth_token: "${TWILIO_AUTH_TOKEN}", public_url: "https://voice.example.com"}
```

Both the webhook and the stream's WebSocket upgrade carry ``X-Twilio-Signature``, checked with the SDK's
``RequestValidator`` against ``public_url`` (the webhook: plus the path and the form parameters; the
stream: its ``wss://`` URL). The TwiML answer and the REST calls are the SDK's too.
"""

from __future__ import annotations

import json
from binascii import Error as BinasciiError
from binascii import a2b_base64
from collections.abc import Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from pydantic import Field, SecretStr
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from vocable.providers.base import ProviderSettings
from vocable.transports.phone.base import PhoneSettings, PhoneTransport
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

SDK_HINT = "the twilio transport needs the twilio SDK: pip install 'vocable[phone]'"
STREAM_PARAMETERS = ("CallSid", "AccountSid", "From", "To", "Direction")  # passed on to the stream


class TwilioSettings(PhoneSettings):
    auth_token: SecretStr = Field(description="the account's Auth Token: signs webhooks, authenticates REST calls")
    account_sid: str | None = Field(default=None, description="needed for outbound calls; hang-ups use the call's")
    webhook_path: str = Field(default="/twilio/voice", pattern=r"^/")
    stream_path: str = Field(default="/twilio/stream", pattern=r"^/")
    call_path: str = Field(default="/twilio/call", pattern=r"^/")


class TwilioDialect(Dialect):
    """Media Streams' JSON: https://www.twilio.com/docs/voice/media-streams/websocket-messages"""

    name = "twilio"
    _own = b"\x00"  # b'"streamSid":"<sid>"' once bound: before that no message holds it, and nothing is fast

    def bind(self, stream_id: str) -> None:
        super().bind(stream_id)
        sid = json.dumps(stream_id)
        self._media = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"
        self._own = b'"streamSid":' + sid.encode()

    def fast_media(self, data: bytes) -> bytes | None:
        # Twilio writes compact JSON: {"event":"media","sequenceNumber":"3","media":{"track":"inbound",...
        # "payload":"..."},"streamSid":"MZ..."}; anything else (spaces, another track, another stream) is parsed
        if not data.startswith(b'{"event":"media"') or self._own not in data or b'"track":"outbound' in data:
            return None
        start = data.find(b'"payload":"')
        if start < 0:
            return None
        start += 11
        try:
            return a2b_base64(data[start : data.index(b'"', start)], strict_mode=True)
        except (BinasciiError, ValueError):
            return None

    def parse(self, data: dict[str, Any]) -> Inbound:
        event = data.get("event")
        seq = seq_of(data.get("sequenceNumber"))
        if event == "media":
            self.check_stream(data)
            media = need(data, "media")
            if isinstance(media, dict) and media.get("track", "inbound") not in ("inbound", "inbound_track"):
                return Inbound("ignored", seq)
            return Inbound("media", seq, payload=payload_of(data, "media", "payload"))
        if event == "mark":
            self.check_stream(data)
            return Inbound("mark", seq, mark=need_str(data, "mark", "name"))
        if event == "dtmf":
            self.check_stream(data)
            return Inbound("dtmf", seq, digit=need_str(data, "dtmf", "digit"))
        if event == "start":
            start = need(data, "start")
            media_format = need(data, "start", "mediaFormat")
            if not isinstance(media_format, dict) or (
                    media_format.get("encoding"), media_format.get("sampleRate"), media_format.get("channels", 1)
            ) != ("audio/x-mulaw", 8000, 1):
                raise BadInput("unsupported_media_format", f"start: mediaFormat {media_format!r}; "
                               "expected audio/x-mulaw, 8000 Hz, mono")
            parameters = parameters_of(start.get("customParameters"))
            return Inbound("start", seq, start=StreamStart(
                need_str(data, "start", "streamSid"), need_str(data, "start", "callSid"), "mulaw", 8000,
                parameters, parameters.get("From"), parameters.get("To")))
        return self.other(event, seq)


    def media(self, payload: bytes) -> str:
        from base64 import b64encode

        return self._media + b64encode(payload).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        return self._mark + json.dumps(name) + "}}"

    def clear(self) -> str:
        return self._clear


class TwilioTransport(PhoneTransport):
    name: ClassVar[str] = "twilio"
    Settings: ClassVar[type[ProviderSettings]] = TwilioSettings
    dialect_class = TwilioDialect
    requires = ("twilio", "aiohttp")
    settings: TwilioSettings

    # ------------------------------------------------------------------------------- signatures

    def _validator(self) -> Any:
        try:
            from twilio.request_validator import RequestValidator
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise RuntimeError(SDK_HINT) from exc
        return RequestValidator(self.settings.auth_token.get_secret_value())

    def _algorithm(self, headers: Mapping[str, str]) -> str:
        from twilio.request_validator import get_signature_algorithm

        return str(get_signature_algorithm(headers.get("x-twilio-webhooks-signature-settings")))

    def verify_webhook(self, request: Request, body: bytes, form: FormData) -> bool:
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            return False
        url = self.public_url(request.url.path, request.url.query)
        return bool(self._validator().validate(url, form, signature, self._algorithm(request.headers)))

    def verify_stream(self, ws: WebSocket) -> bool:
        signature = ws.headers.get("x-twilio-signature")
        if not signature:
            return False
        return bool(self._validator().validate(self.stream_url(ws.url.query), {}, signature,
                                               self._algorithm(ws.headers)))

    # ------------------------------------------------------------------------------- TwiML

    def twiml(self, parameters: Mapping[str, str]) -> str:
        from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

        response = VoiceResponse()
        connect = Connect()
        stream = Stream(url=self.stream_url())
        for name, value in parameters.items():
            stream.parameter(name=name, value=value)
        connect.append(stream)
        response.append(connect)
        return str(response)

    def answer(self, form: Mapping[str, str]) -> Response:
        parameters = {k: form[k] for k in STREAM_PARAMETERS if form.get(k)}
        return Response(self.twiml(parameters), media_type="application/xml")

    # ------------------------------------------------------------------------------- REST

    @asynccontextmanager
    async def rest(self, account_sid: str | None = None) -> Any:
        """The SDK's client on its asyncio HTTP client, against ``api_base_url`` when it is set."""
        try:
            from twilio.http.async_http_client import AsyncTwilioHttpClient
            from twilio.rest import Client
        except ImportError as exc:  # pragma: no cover
            raise RuntimeError(SDK_HINT) from exc
        sid = self.settings.account_sid or account_sid
        if not sid:
            raise RuntimeError("set transports.twilio.account_sid to place calls")
        http = AsyncTwilioHttpClient(timeout=10)
        try:
            client = Client(sid, self.settings.auth_token.get_secret_value(), http_client=http)
            if self.settings.api_base_url:
                client.api.base_url = self.settings.api_base_url.rstrip("/")
            yield client
        finally:
            await http.close()

    async def hangup(self, call: PhoneCall) -> None:
        async with self.rest(call.parameters.get("AccountSid")) as client:
            await client.calls(call.call_id).update_async(status="completed")

    async def place_call(self, to: str, from_: str, parameters: dict[str, str]) -> dict[str, Any]:
        async with self.rest() as client:
            twiml = self.twiml({"From": from_, "To": to, "Direction": "outbound-api", **parameters})
            placed = await client.calls.create_async(to=to, from_=from_, twiml=twiml)
        return {"call_sid": placed.sid, "status": placed.status}
