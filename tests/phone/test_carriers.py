"""Telnyx and Plivo: the same calls as Twilio's tests (test_twilio*.py), against stand-ins that speak their
protocols exactly; and what all three must share: a caller vanishing mid-reply leaves nothing behind."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from urllib.parse import urlencode

import httpx
import pytest
import structlog
import structlog.testing
import websockets
from phonekit import (
    PLUGINS,
    PLIVO_ID,
    PLIVO_TOKEN,
    REPLY,
    TELNYX,
    Recorder,
    carrier_call,
    carrier_engine,
    carrier_settings,
    phone_config,
    signed_webhook,
    spoken,
    stream_url_of,
    wait_for,
)
from phone_standins import CarrierCall, RestStandIn
from wskit import live_server

from vocable import Engine
from vocable.testing.speech import rms
from vocable.transports.phone import current_call

CARRIERS = ["telnyx", "plivo"]
SENTENCES = ["One two three four five.", "Six seven eight nine ten."]
SLOW_TTS = {"provider": "scripted", "ms_per_char": 40}
FORM = {"From": "+14155550123", "To": "+18005550199", "CallUUID": "c-1"}


def stamp(logger: object, method: str, event: dict) -> dict:
    event["at"] = time.monotonic()
    return event


# ------------------------------------------------------------------------------------ signatures


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_webhook_checks_the_signature(carrier: str) -> None:
    body, headers = signed_webhook(carrier, FORM)
    tampered = urlencode({**FORM, "From": "+19995550000"}).encode()
    unsigned = {"content-type": headers["content-type"]}
    async with live_server(carrier_engine(carrier)) as server, httpx.AsyncClient(base_url=server.http) as http:
        good = await http.post(f"/{carrier}/voice", content=body, headers=headers)
        bad = await http.post(f"/{carrier}/voice", content=tampered, headers=headers)
        missing = await http.post(f"/{carrier}/voice", content=body, headers=unsigned)
        if carrier == "telnyx":
            stale = await http.post(f"/{carrier}/voice", content=body,
                                    headers={**unsigned, **TELNYX.sign(body, int(time.time()) - 600)})
            assert stale.status_code == 403
    assert good.status_code == 200 and "<Stream" in good.text
    url = stream_url_of(good.text)
    assert url.startswith(f"wss://voice.example.com/{carrier}/stream?token=")
    assert bad.status_code == 403 and missing.status_code == 403


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_stream_needs_a_fresh_token_from_a_signed_answer(carrier: str) -> None:
    engine = carrier_engine(carrier)
    body, headers = signed_webhook(carrier, FORM)
    async with live_server(engine) as server, httpx.AsyncClient(base_url=server.http) as http:
        answer = await http.post(f"/{carrier}/voice", content=body, headers=headers)
        local = stream_url_of(answer.text).replace("wss://voice.example.com", f"ws://127.0.0.1:{server.port}")
        forged = local.rsplit(".", 1)[0] + ".0123456789abcdef0123456789abcdef"
        for url in (local.split("?")[0], forged):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(url, proxy=None):
                    pass
            assert refused.value.response.status_code == 403
        async with websockets.connect(local, proxy=None):
            pass
        with pytest.raises(websockets.InvalidStatus):  # one token, one stream
            async with websockets.connect(local, proxy=None):
                pass
    assert not engine.sessions


# ------------------------------------------------------------------------------------ calls


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_a_whole_turn_with_marks_acknowledged(carrier: str) -> None:
    recorder = Recorder()
    engine = carrier_engine(carrier, llm={"provider": "scripted", "reply": REPLY}, plugins=(recorder,))
    async with live_server(engine) as server, carrier_call(server, carrier) as call:
        await call.begin()
        await call.speak(spoken())
        await wait_for(lambda: recorder.turns, timeout_s=15)
        await call.wait_idle()
        marks = call.sent_marks()
        await wait_for(lambda: len(call.echoed) == len(marks))
        listing = (await asyncio.to_thread(httpx.get, f"{server.http}/sessions")).json()
        await call.hang_up()
        await wait_for(lambda: not engine.sessions)
    turn = recorder.turns[0]
    assert turn.user_text == "what is the weather today" and turn.reply_text == REPLY
    frames = call.media_frames()
    assert frames and all(len(f) == 160 for f in frames)
    assert rms(call.heard_pcm()) > 1000 and len(marks) >= 4
    (entry,) = listing["sessions"]
    assert entry["transport"] == carrier and entry["caller"] == "********0123"
    assert recorder.ended == ["call_ended"]


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_barge_in_clears_within_100_ms_and_memory_keeps_what_was_acknowledged(carrier: str) -> None:
    recorder = Recorder()
    engine = carrier_engine(carrier, {"mark_interval_ms": 0}, llm={"provider": "scripted", "reply": REPLY},
                            tts=SLOW_TTS, plugins=(recorder,))
    with structlog.testing.capture_logs(processors=[stamp]) as logs:
        async with live_server(engine) as server, carrier_call(server, carrier) as call:
            await call.begin()
            await call.speak(spoken())
            await wait_for(lambda: len(call.played) >= 65, timeout_s=15)
            await call.speak(spoken(speech_ms=800, pause_ms=800))
            await wait_for(lambda: recorder.turns and recorder.turns[0].interrupted, timeout_s=15)
            await call.hang_up()
    interrupted = [e for e in logs if e["event"] == "interrupted"][0]
    assert interrupted["reason"] == "barge_in"
    assert any(0 <= at - interrupted["at"] < 0.1 for at in call.clears)
    assert recorder.turns[0].reply_text == SENTENCES[0]


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_dtmf_reaches_a_tool(carrier: str) -> None:
    recorder = Recorder()
    engine = carrier_engine(carrier, plugins=(recorder,),
                            llm={"provider": "scripted", "echo": True, "tool_call": "read_pin"})

    @engine.tool(description="Read the PIN the caller types")
    async def read_pin() -> str:
        call = current_call()
        assert call is not None and call.carrier == carrier
        return await call.wait_digits(3, timeout_s=10)

    async with live_server(engine) as server, carrier_call(server, carrier) as call:
        await call.begin()
        await call.speak(spoken())
        await asyncio.sleep(0.8)
        for digit in "907":
            await call.press(digit)
        await wait_for(lambda: recorder.turns, timeout_s=15)
        await call.hang_up()
    assert recorder.digits == list("907")
    assert "Tool says 907" in recorder.turns[0].reply_text


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_end_call_hangs_up_through_rest(carrier: str) -> None:
    recorder = Recorder()
    async with RestStandIn(lambda request: (200, {})) as rest:
        engine = carrier_engine(carrier, {"api_base_url": rest.url}, plugins=(recorder,),
                                llm={"provider": "scripted", "tool_call": "end_call", "reply": "Goodbye."})
        async with live_server(engine) as server, carrier_call(server, carrier) as call:
            await call.begin()
            await call.speak(spoken())
            await asyncio.wait_for(call.closed.wait(), 15)
        (request,) = rest.requests
    if carrier == "telnyx":
        assert (request.method, request.path) == ("POST", "/v2/calls/v3:call-control-id-1/actions/hangup")
        assert request.headers["authorization"] == "Bearer KEY-telnyx-0b7d"
    else:
        assert (request.method, request.path) == ("DELETE", f"/v1/Account/{PLIVO_ID}/Call/c-1/")
        login = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        assert login == f"{PLIVO_ID}:{PLIVO_TOKEN}"
    assert recorder.turns[0].reply_text == "Goodbye." and recorder.ended == ["end_call"]
    assert call.echoed and call.echoed[-1][1] == call.sent_marks()[-1]


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_outbound_call(carrier: str) -> None:
    async with RestStandIn(lambda r: (201, {"data": {"call_control_id": "v3:new"}, "request_uuid": "r-1"})) as rest:
        settings = {"api_base_url": rest.url, "from_number": "+18005550199",
                    **({"connection_id": "conn-1"} if carrier == "telnyx" else {})}
        config = phone_config(carrier, {**carrier_settings(carrier), **settings})
        open_engine = Engine.from_dict(config, autoload=False, plugins=PLUGINS)
        config["server"]["auth"] = {"api_key": "operator-key-7e1d"}
        engine = Engine.from_dict(config, autoload=False, plugins=PLUGINS)
        async with live_server(open_engine) as server, httpx.AsyncClient(base_url=server.http) as http:
            refused = await http.post(f"/{carrier}/call", json={"to": "+14155550123"})
        assert refused.status_code == 403 and not rest.requests  # no auth configured: no dialling out
        async with live_server(engine) as server, httpx.AsyncClient(base_url=server.http) as http:
            placed = await http.post(f"/{carrier}/call", json={"to": "+14155550123"},
                                     headers={"Authorization": "Bearer operator-key-7e1d"})
        (request,) = rest.requests
    assert placed.status_code == 200, placed.text
    body = json.loads(request.body)
    assert body["to"] == "+14155550123" and body["from"] == "+18005550199"
    if carrier == "telnyx":
        assert request.path == "/v2/calls" and body["connection_id"] == "conn-1"
        assert body["stream_url"].startswith("wss://voice.example.com/telnyx/stream?token=")
    else:
        assert request.path == f"/v1/Account/{PLIVO_ID}/Call/"
        assert body["answer_url"] == "https://voice.example.com/plivo/voice"


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_malformed_messages_are_logged_and_the_call_goes_on(carrier: str) -> None:
    recorder = Recorder()
    engine = carrier_engine(carrier, plugins=(recorder,))
    with structlog.testing.capture_logs() as logs:
        async with live_server(engine) as server, carrier_call(server, carrier) as call:
            await call.send(call.carrier.media(b"\xff" * 160, 1, 20))  # before start
            await call.begin()
            await wait_for(lambda: engine.sessions)
            for bad in ("{oops", json.dumps({"event": "nope"}), json.dumps({"event": "media"}),
                        json.dumps({"event": "dtmf", "dtmf": {"digit": "Z"}}), json.dumps(call.carrier.start())):
                await call.send(bad)
            await call.speak(spoken())
            await wait_for(lambda: recorder.turns, timeout_s=15)
            await call.hang_up()
    codes = [e["code"] for e in logs if e["event"] == "phone_bad_message"]
    for code in ("out_of_order", "invalid_json", "unknown_event", "invalid_field"):
        assert code in codes, (code, codes)
    assert recorder.ended == ["call_ended"]


@pytest.mark.parametrize("carrier", ["twilio", *CARRIERS])
async def test_the_caller_vanishing_mid_reply_leaves_nothing_running(carrier: str) -> None:
    engine = carrier_engine(carrier, llm={"provider": "scripted", "reply": REPLY}, tts=SLOW_TTS)
    async with live_server(engine) as server:
        async with carrier_call(server, carrier) as call:
            await call.begin()
            await call.speak(spoken())
            await wait_for(lambda: call.played, timeout_s=15)
            call.vanish()
            await wait_for(lambda: not engine.sessions, timeout_s=5)
        transport = engine.transports[0]
        await wait_for(lambda: not transport.live, timeout_s=5)
        await asyncio.sleep(0.1)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ses_")]
        for kind in ("stt", "llm", "tts"):
            counters = getattr(engine.runtime, kind)[0].provider.counters
            assert counters.opened == counters.closed, kind


# ------------------------------------------------------------------------------------ Telnyx only


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_telnyx_reorders_frames_and_speaks_pcmu_or_pcma(encoding: str) -> None:
    recorder = Recorder()
    engine = carrier_engine("telnyx", llm={"provider": "scripted", "reply": REPLY}, plugins=(recorder,))
    async with live_server(engine) as server, carrier_call(server, "telnyx", encoding=encoding) as call:
        await call.begin()
        await call.speak(spoken(), swap_every=3)  # every third frame overtaken by the next one
        await wait_for(lambda: recorder.turns, timeout_s=15)
        await call.wait_idle()
        (stream,) = engine.transports[0].streams
        reorder = stream.reorder
        await call.hang_up()
    assert reorder.reordered > 10 and reorder.lost == 0 and reorder.dropped == 0
    assert recorder.turns[0].reply_text == REPLY
    assert rms(call.heard_pcm()) > 1000  # decoded with the call's own codec: speech-level audio, not noise
    assert isinstance(call, CarrierCall)
