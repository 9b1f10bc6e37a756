"""Engines with a phone transport on the scripted fakes, and the carrier stand-ins connected to them."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from standins import CarrierCall, TwilioCarrier
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
