"""Twilio: bad input never crashes a call; DTMF reaches plugins, tools and the conversation; end_call and
outbound calls through a REST stand-in."""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import parse_qs

import httpx
import structlog
import structlog.testing
from phonekit import AUTH_TOKEN, PLUGINS, Recorder, phone_config, phone_engine, spoken, twilio_call, wait_for
from phone_standins import RestStandIn
from wskit import live_server

from vocable import Engine
from vocable.transports.phone import current_call

SID = "MZ" + "a" * 32


async def test_malformed_missing_and_out_of_order_messages_are_logged_and_the_call_goes_on() -> None:
    recorder = Recorder()
    engine = phone_engine(plugins=(recorder,))
    good_media = {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
    with structlog.testing.capture_logs() as logs:
        async with live_server(engine) as server, twilio_call(server) as call:
            await call.send(good_media)  # before start
            await call.send({"event": "mark", "streamSid": SID, "mark": {"name": "m1"}})  # before start
            await call.send("{not json")
            await call.send({"event": "start", "start": {"streamSid": SID, "callSid": "CA1",
                                                         "mediaFormat": {"encoding": "audio/L16", "sampleRate": 16000}}})
            await call.begin()
            await wait_for(lambda: engine.sessions)
            for bad in (
                "[1, 2]", '"media"', json.dumps({"no": "event"}), json.dumps({"event": 42}),
                json.dumps({"event": "unheard-of"}),
                json.dumps({"event": "media", "streamSid": SID}),
                json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "not base64!"}}),
                json.dumps({"event": "media", "streamSid": "MZother", "media": {"payload": "/w=="}}),
                json.dumps({"event": "mark", "streamSid": SID, "mark": {}}),
                json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "never-sent"}}),
                json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "x"}}),
                json.dumps({"event": "dtmf", "streamSid": SID}),
                json.dumps(call.carrier.start()),  # start again
                json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "A" * 70000}}),  # too large
            ):
                await call.send(bad)
            await call.ws.send(b"\x00\x01binary")
            await call.speak(spoken())  # the call still works
            await wait_for(lambda: recorder.turns, timeout_s=15)
            assert engine.sessions
            await call.hang_up()
            await wait_for(lambda: not engine.sessions)
    bad = [e for e in logs if e["event"] == "phone_bad_message"]
    codes = [e["code"] for e in bad]
    assert codes.count("out_of_order") == 3  # media and mark before start, start again
    for code in ("invalid_json", "invalid_message", "unknown_event", "invalid_field", "unsupported_media_format",
                 "wrong_stream", "message_too_large", "binary_message"):
        assert code in codes, code
    assert all(e["error"] for e in bad)
    assert recorder.turns[0].user_text == "what is the weather today"
    assert recorder.ended == ["call_ended"]


async def test_a_stream_that_never_starts_is_closed() -> None:
    engine = phone_engine(transport={"start_timeout_s": 0.3})
    async with live_server(engine) as server, twilio_call(server) as call:
        await asyncio.wait_for(call.closed.wait(), 3)
        assert call.ws.close_code == 1008
        assert not engine.sessions


# ------------------------------------------------------------------------------------ DTMF


async def test_dtmf_reaches_plugins_and_a_tool() -> None:
    recorder = Recorder()
    engine = phone_engine(plugins=(recorder,), llm={"provider": "scripted", "echo": True, "tool_call": "read_pin"})
    seen: list[object] = []

    @engine.tool(description="Ask the caller to type their PIN on the keypad and read it")
    async def read_pin() -> str:
        call = current_call()
        seen.append(call)
        assert call is not None
        return await call.wait_digits(4, timeout_s=10)

    async with live_server(engine) as server, twilio_call(server) as call:
        await call.begin()
        await call.speak(spoken())
        await wait_for(lambda: seen, timeout_s=15)
        for digit in "1234":
            await call.press(digit)
        await wait_for(lambda: recorder.turns, timeout_s=15)
        await call.hang_up()
    assert recorder.digits == list("1234")
    assert seen[0].carrier == "twilio" and seen[0].digits == list("1234")
    assert "Tool says 1234" in recorder.turns[0].reply_text


async def test_dtmf_as_text_becomes_a_turn() -> None:
    recorder = Recorder()
    engine = phone_engine(transport={"dtmf": {"as_text": True, "collect_ms": 300}}, plugins=(recorder,),
                          llm={"provider": "scripted", "echo": True})
    async with live_server(engine) as server, twilio_call(server) as call:
        await call.begin()
        await wait_for(lambda: engine.sessions)
        for digit in "42#":
            await call.press(digit)
        await call.press("7")
        await wait_for(lambda: len(recorder.turns) >= 2, timeout_s=15)
        await call.hang_up()
    assert [t.user_text for t in recorder.turns] == ["The caller pressed 4 2 # on the keypad.",
                                                     "The caller pressed 7 on the keypad."]


# ------------------------------------------------------------------------------------ REST


def twilio_rest(rest: RestStandIn) -> dict[str, object]:
    return {"api_base_url": rest.url, "account_sid": "AC" + "0" * 32}


async def test_end_call_says_goodbye_waits_for_its_mark_then_hangs_up_through_rest() -> None:
    recorder = Recorder()
    async with RestStandIn() as rest:
        engine = phone_engine(transport=twilio_rest(rest), plugins=(recorder,),
                              llm={"provider": "scripted", "tool_call": "end_call", "reply": "Goodbye, take care."})
        async with live_server(engine) as server, twilio_call(server) as call:
            await call.begin()
            await call.speak(spoken())
            await asyncio.wait_for(call.closed.wait(), 15)
            echoed = list(call.echoed)
        (request,) = rest.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/AC{'0' * 32}/Calls/CA{'b' * 32}.json"
    assert parse_qs(request.body.decode()) == {"Status": ["completed"]}
    user, _, password = base64.b64decode(request.headers["authorization"].split()[1]).decode().partition(":")
    assert (user, password) == ("AC" + "0" * 32, AUTH_TOKEN)
    turn = recorder.turns[0]
    assert turn.reply_text == "Goodbye, take care." and not turn.interrupted
    assert echoed and echoed[-1][1] == call.sent_marks()[-1]  # the goodbye's last mark came back first
    assert recorder.ended == ["end_call"]


async def test_outbound_call_needs_the_api_key_and_uses_the_same_twiml() -> None:
    async with RestStandIn(lambda r: (201, {"sid": "CA" + "9" * 32, "status": "queued"})) as rest:
        config = phone_config(transport={**twilio_rest(rest), "from_number": "+18005550199"})
        config["server"]["auth"] = {"api_key": "operator-key-7e1d"}
        engine = Engine.from_dict(config, autoload=False, plugins=PLUGINS)
        async with live_server(engine) as server, httpx.AsyncClient(base_url=server.http) as http:
            refused = await http.post("/twilio/call", json={"to": "+14155550123"})
            placed = await http.post("/twilio/call", json={"to": "+14155550123"},
                                     headers={"Authorization": "Bearer operator-key-7e1d"})
            bad = await http.post("/twilio/call", json={"too": 1},
                                  headers={"Authorization": "Bearer operator-key-7e1d"})
    assert refused.status_code == 401
    assert bad.status_code == 400
    assert placed.status_code == 200 and placed.json() == {"call_sid": "CA" + "9" * 32, "status": "queued"}
    (request,) = rest.requests
    assert request.path == f"/2010-04-01/Accounts/AC{'0' * 32}/Calls.json"
    form = parse_qs(request.body.decode())
    assert form["To"] == ["+14155550123"] and form["From"] == ["+18005550199"]
    assert 'url="wss://voice.example.com/twilio/stream"' in form["Twiml"][0]
    assert '<Parameter name="To" value="+14155550123"' in form["Twiml"][0]


async def test_a_carrier_that_stops_reading_ends_the_call() -> None:
    """Its socket takes no more (direct frames refused, ASGI send stuck): after send_timeout_s the call ends."""
    from vocable.transports.phone import base

    recorder = Recorder()
    engine = phone_engine(transport={"send_timeout_s": 0.3}, plugins=(recorder,))
    stuck = asyncio.Event()

    async def never(message: dict) -> None:
        await stuck.wait()

    original = base.MediaStream.__init__

    def wedged(self, transport, ws, receive, send, direct=None):  # type: ignore[no-untyped-def]
        original(self, transport, ws, receive, never, None)

    base.MediaStream.__init__ = wedged  # type: ignore[method-assign]
    try:
        async with live_server(engine) as server, twilio_call(server) as call:
            await call.begin()
            await call.speak(spoken())
            await wait_for(lambda: recorder.ended, timeout_s=15)
            await wait_for(lambda: not engine.sessions and not engine.transports[0].live, timeout_s=5)
    finally:
        base.MediaStream.__init__ = original  # type: ignore[method-assign]
    assert recorder.ended == ["slow_client"]
