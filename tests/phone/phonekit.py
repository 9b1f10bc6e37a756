"""Engines with a phone transport on the scripted fakes, and the carrier stand-ins connected to them."""

from __future__ import annotations

import asyncio
import base64
import time
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import httpx

from phone_standins import CarrierCall, TwilioCarrier
from twilio.request_validator import RequestValidator

from vocable import Engine
from vocable.engine.session import TurnRecord
from vocable.plugins.hookspecs import hookimpl
from vocable.testing.fakes import tone
from vocable.testing.scripted import scripted_config
from vocable.testing.speech import silence

AUTH_TOKEN = "tw-auth-token-5f0c2a9d7e"
PUBLIC = "https://voice.example.com"
PLUGINS = ["vocable.plugins.core", "vocable.testing.plugin", "vocable.transports.phone"]
REPLY = ("One two three four five. Six seven eight nine ten. Eleven twelve thirteen fourteen. "
         "Fifteen sixteen seventeen eighteen.")


class Recorder:
    """A plugin that keeps every finished turn and every DTMF digit."""

    def __init__(self) -> None:
        self.turns: list[TurnRecord] = []
        self.digits: list[str] = []
        self.ended: list[str] = []

    @hookimpl
    def turn_completed(self, session: Any, turn: TurnRecord) -> None:
        self.turns.append(turn)

    @hookimpl
    def session_ended(self, session: Any, reason: str) -> None:
        self.ended.append(reason)

    @hookimpl
    def phone_dtmf(self, session: Any, call: Any, digit: str) -> None:
        self.digits.append(digit)


def phone_config(carrier: str = "twilio", transport: dict[str, Any] | None = None, **pipeline: Any) -> dict[str, Any]:
    data = scripted_config(**pipeline)
    data["server"] = {"max_sessions": 10}
    base: dict[str, Any] = {"public_url": PUBLIC}
    if carrier == "twilio":
        base["auth_token"] = AUTH_TOKEN
    data["transports"] = {carrier: {**base, **(transport or {})}}
    return data


def phone_engine(carrier: str = "twilio", transport: dict[str, Any] | None = None, *, plugins: tuple[Any, ...] = (),
                 **pipeline: Any) -> Engine:
    return Engine.from_dict(phone_config(carrier, transport, **pipeline), autoload=False,
                            plugins=[*PLUGINS, *plugins])


def twilio_signature(url: str, params: dict[str, str] | None = None, token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params or {})


def spoken(speech_ms: int = 600, pause_ms: int = 700, rate: int = 8000) -> bytes:
    """An utterance the energy VAD hears: a tone, then enough silence to end the turn."""
    return silence(100, rate) + tone(speech_ms, rate) + silence(pause_ms, rate)


@asynccontextmanager
async def twilio_call(server: Any, *, parameters: dict[str, str] | None = None, signature: str | None = "good",
                      path: str = "/twilio/stream"):
    stream_id, call_id = "MZ" + "a" * 32, "CA" + "b" * 32
    carrier = TwilioCarrier(stream_id, call_id, {"From": "+14155550123", "To": "+18005550199",
                                                 **(parameters or {})})
    headers = {}
    if signature == "good":
        headers["X-Twilio-Signature"] = twilio_signature(f"wss://voice.example.com{path}")
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    async with CarrierCall(carrier, f"ws://127.0.0.1:{server.port}{path}", headers) as call:
        yield call


async def wait_for(predicate: Any, timeout_s: float = 10.0, step_s: float = 0.01) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(step_s)


# ------------------------------------------------------------------------------------ Telnyx and Plivo

PLIVO_ID, PLIVO_TOKEN = "MAXXXXXXXXXXXXXXXXXX", "plivo-auth-token-93be1c"


class TelnyxKeys:
    """An Ed25519 key pair standing in for Telnyx's: the private half signs the stand-in's webhooks."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.private = Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public = base64.b64encode(raw).decode()

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private.sign(stamp.encode() + b"|" + body)
        return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(), "telnyx-timestamp": stamp}


TELNYX = TelnyxKeys()


def carrier_settings(carrier: str) -> dict[str, Any]:
    """Each carrier's credentials (Twilio's auth token is in every ``phone_config``)."""
    if carrier == "telnyx":
        return {"public_key": TELNYX.public, "api_key": "KEY-telnyx-0b7d"}
    if carrier == "plivo":
        return {"auth_id": PLIVO_ID, "auth_token": PLIVO_TOKEN}
    return {}


def carrier_engine(carrier: str, transport: dict[str, Any] | None = None, *, plugins: tuple[Any, ...] = (),
                   **pipeline: Any) -> Engine:
    return phone_engine(carrier, {**carrier_settings(carrier), **(transport or {})}, plugins=plugins, **pipeline)


def signed_webhook(carrier: str, form: dict[str, str], url: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The form body and headers the carrier would send to ``/<carrier>/voice``."""
    body = urlencode(form).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if carrier == "telnyx":
        headers.update(TELNYX.sign(body))
    elif carrier == "plivo":
        from vocable.transports.phone.plivo import plivo_signature

        nonce = "31497832928485273452"
        headers["X-Plivo-Signature-V3"] = plivo_signature(PLIVO_TOKEN, url or f"{PUBLIC}/plivo/voice", form, nonce)
        headers["X-Plivo-Signature-V3-Nonce"] = nonce
    return body, headers


def stream_url_of(xml: str) -> str:
    root = ElementTree.fromstring(xml)
    stream = root.find(".//Stream")
    assert stream is not None, xml
    return stream.get("url") or (stream.text or "").strip()


@asynccontextmanager
async def carrier_call(server: Any, carrier: str, *, encoding: str = "mulaw",
                       parameters: dict[str, str] | None = None):
    """Ring the server as ``carrier`` does: the signed webhook, then the stream its answer names."""
    from phone_standins import PlivoCarrier, TelnyxCarrier

    if carrier == "twilio":
        async with twilio_call(server, parameters=parameters) as call:
            yield call
        return

    numbers = {"From": "+14155550123", "To": "+18005550199", **(parameters or {})}
    body, headers = signed_webhook(carrier, {**numbers, "CallUUID": "c-1"})
    async with httpx.AsyncClient(base_url=server.http) as http:
        answer = await http.post(f"/{carrier}/voice", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    public = stream_url_of(answer.text)
    assert public.startswith(f"wss://voice.example.com/{carrier}/stream?token=")
    local = public.replace("wss://voice.example.com", f"ws://127.0.0.1:{server.port}")
    kind = TelnyxCarrier if carrier == "telnyx" else PlivoCarrier
    call_id = "v3:call-control-id-1" if carrier == "telnyx" else "c-1"
    async with CarrierCall(kind("stream-7f3a", call_id, numbers, encoding), local) as call:
        yield call
