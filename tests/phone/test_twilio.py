"""Twilio against a stand-in that speaks Media Streams exactly (standins.py), on the scripted fakes."""

from __future__ import annotations

import asyncio
import time
from xml.etree import ElementTree

import httpx
import pytest
import structlog
import structlog.testing
import websockets
from phonekit import AUTH_TOKEN, REPLY, Recorder, phone_engine, spoken, twilio_call, twilio_signature, wait_for
from wskit import live_server

from vocable.testing.speech import rms

WEBHOOK = "https://voice.example.com/twilio/voice"
FORM = {"CallSid": "CA" + "b" * 32, "AccountSid": "AC" + "0" * 32, "From": "+14155550123",
        "To": "+18005550199", "Direction": "inbound", "CallStatus": "ringing"}


# ------------------------------------------------------------------------------------ the webhook


async def test_webhook_answers_twiml_that_streams_to_the_public_host() -> None:
    async with live_server(phone_engine()) as server, httpx.AsyncClient(base_url=server.http) as http:
        response = await http.post("/twilio/voice", data=FORM,
                                   headers={"X-Twilio-Signature": twilio_signature(WEBHOOK, FORM)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ElementTree.fromstring(response.text)
    stream = root.find("./Connect/Stream")
    assert root.tag == "Response" and stream is not None
    assert stream.get("url") == "wss://voice.example.com/twilio/stream"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters == {"CallSid": FORM["CallSid"], "AccountSid": FORM["AccountSid"], "From": FORM["From"],
                          "To": FORM["To"], "Direction": "inbound"}


@pytest.mark.parametrize("signature", [None, "", "bm90IGEgc2lnbmF0dXJl", "tampered"])
async def test_webhook_refuses_a_bad_or_missing_signature(signature: str | None) -> None:
    headers = {}
    if signature == "tampered":  # signed for other parameters
        headers["X-Twilio-Signature"] = twilio_signature(WEBHOOK, {**FORM, "From": "+19995550000"})
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    async with live_server(phone_engine()) as server, httpx.AsyncClient(base_url=server.http) as http:
        response = await http.post("/twilio/voice", data=FORM, headers=headers)
        wrong_token = await http.post("/twilio/voice", data=FORM, headers={
            "X-Twilio-Signature": twilio_signature(WEBHOOK, FORM, token="another-token")})
    assert response.status_code == 403
    assert wrong_token.status_code == 403
    assert "<Response" not in response.text


# ------------------------------------------------------------------------------------ the stream


@pytest.mark.parametrize("signature", [None, "bm9wZQ==", "for-another-url"])
async def test_stream_with_a_bad_signature_is_refused_before_accept(signature: str | None) -> None:
    engine = phone_engine()
    if signature == "for-another-url":
        signature = twilio_signature("wss://voice.example.com/elsewhere")
    async with live_server(engine) as server:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with twilio_call(server, signature=signature):
                pass
        assert refused.value.response.status_code == 403
        assert not engine.sessions
        assert engine.transports[0].stats()["refused_total"] == 1


async def test_a_whole_turn_with_marks_acknowledged() -> None:
    recorder = Recorder()
    engine = phone_engine(llm={"provider": "scripted", "reply": REPLY}, plugins=(recorder,))
    async with live_server(engine) as server, twilio_call(server) as call:
        await call.begin()
        await wait_for(lambda: engine.sessions)
        session = next(iter(engine.sessions.values()))
        assert session.transport == "twilio" and session.input_sample_rate == 16000  # doubled by the transport
        await call.speak(spoken())
        await wait_for(lambda: recorder.turns, timeout_s=15)
        await call.wait_idle()
        turn = recorder.turns[0]
        assert turn.user_text == "what is the weather today"
        assert turn.reply_text == REPLY and not turn.interrupted
        frames = call.media_frames()
        assert frames and all(len(f) == 160 for f in frames)  # 20 ms of 8 kHz mu-law each
        # the scripted TTS speaks ~10 ms a character; all of it came back, and it is not silence
        assert len(frames) * 20 == pytest.approx(len(REPLY) * 10, rel=0.15)
        assert rms(call.heard_pcm()) > 1000
        marks = call.sent_marks()
        assert len(marks) >= 4  # one after each of the four sentences at least
        await wait_for(lambda: len(call.echoed) == len(marks))
        assert [name for _, name in call.echoed] == marks and not call.clears
        assert session.memory.messages[-1].content == REPLY
        listing = await asyncio.to_thread(lambda: httpx.get(f"{server.http}/sessions").json())
        # under vocable serve's protocol (as here) media messages are heard as they are parsed
        assert engine.transports[0].stats()["heard_direct_total"] > 50
        await call.hang_up()
        await wait_for(lambda: not engine.sessions)
    (entry,) = listing["sessions"]
    assert entry["transport"] == "twilio" and entry["carrier"] == "twilio"
    assert entry["caller"] == "********0123" and "4155550123" not in str(listing)
    assert recorder.ended == ["call_ended"]


async def test_media_is_paced_at_real_time_with_a_small_lead() -> None:
    engine = phone_engine(llm={"provider": "scripted", "reply": REPLY})
    async with live_server(engine) as server, twilio_call(server) as call:
        await call.begin()
        await wait_for(lambda: engine.sessions)
        session = next(iter(engine.sessions.values()))
        await session.say(REPLY)
        await call.wait_idle()
        media = [at for at, kind, _ in call.received if kind == "media"]
    audio_s = len(media) * 0.02
    first = media[0]
    ahead = max((i + 1) * 0.02 - (at - first) for i, at in enumerate(media))
    assert media[-1] - first == pytest.approx(audio_s, abs=0.35)  # not a burst: about real time
    assert ahead < 0.4  # never more than the lead (120 ms) plus scheduling ahead of the caller's clock


async def test_auth_token_never_in_logs_or_config() -> None:
    engine = phone_engine()
    with structlog.testing.capture_logs() as logs:
        async with live_server(engine) as server, httpx.AsyncClient(base_url=server.http) as http:
            config = (await http.get("/config")).text
            await http.post("/twilio/voice", data=FORM, headers={"X-Twilio-Signature": "bad"})
            async with twilio_call(server) as call:
                await call.begin()
                await call.send("{not json")
                await call.hang_up()
                await asyncio.wait_for(call.closed.wait(), 5)
    assert AUTH_TOKEN not in config and "**********" in config
    assert AUTH_TOKEN not in repr(logs)
    assert any(e["event"] == "phone_bad_message" and e["code"] == "invalid_json" for e in logs)
    assert any(e["event"] == "phone_webhook_refused" for e in logs)


# ------------------------------------------------------------------------------------ barge-in


SENTENCES = ["One two three four five.", "Six seven eight nine ten.", "Eleven twelve thirteen fourteen.",
             "Fifteen sixteen seventeen eighteen."]
SLOW_TTS = {"provider": "scripted", "ms_per_char": 40}  # ~1 s a sentence


def stamp(logger: object, method: str, event: dict) -> dict:
    event["at"] = time.monotonic()
    return event


async def barge_in(transport: dict) -> tuple[Recorder, "object", list[dict]]:
    """A reply of four ~1 s sentences; the caller talks over the second one, 300 ms after the first mark."""
    recorder = Recorder()
    engine = phone_engine(transport=transport, llm={"provider": "scripted", "reply": REPLY}, tts=SLOW_TTS,
                          plugins=(recorder,))
    with structlog.testing.capture_logs(processors=[stamp]) as logs:
        async with live_server(engine) as server, twilio_call(server) as call:
            await call.begin()
            await call.speak(spoken())
            await wait_for(lambda: len(call.played) >= 65, timeout_s=15)  # 1.3 s: into the second sentence
            await call.speak(spoken(speech_ms=800, pause_ms=800))
            await wait_for(lambda: len(recorder.turns) >= 1 and recorder.turns[0].interrupted, timeout_s=15)
            await asyncio.sleep(0.3)
            await call.hang_up()
            await asyncio.wait_for(call.closed.wait(), 5)
    return recorder, call, logs


async def test_barge_in_clears_at_once_and_memory_keeps_what_was_acknowledged() -> None:
    recorder, call, logs = await barge_in({"mark_interval_ms": 0})
    (paused,) = [e for e in logs if e["event"] == "paused"]
    interrupted = [e for e in logs if e["event"] == "interrupted"][0]
    assert interrupted["reason"] == "barge_in"
    assert len(call.clears) >= 2
    assert any(0 <= at - paused["at"] < 0.1 for at in call.clears)  # the output paused: cleared at once
    assert any(0 <= at - interrupted["at"] < 0.1 for at in call.clears)  # committed: cleared within 100 ms
    # nothing of the reply came or played after the interruption was committed (until the caller's own
    # turn, still being spoken then, is answered)
    commit = interrupted["at"]
    assert not [at for at, kind, _ in call.received if kind == "media" and commit + 0.005 < at < commit + 0.5]
    assert not [p for p in call.played if commit + 0.05 < p.at < commit + 0.5]
    # memory holds the first sentence: the last acknowledged mark is at its end
    turn = recorder.turns[0]
    assert turn.interrupted and turn.reply_text == SENTENCES[0]


async def test_barge_in_with_interval_marks_keeps_the_words_heard() -> None:
    recorder, call, logs = await barge_in({"mark_interval_ms": 50})  # marks within sentences too
    turn = recorder.turns[0]
    assert turn.interrupted
    assert call.echoed_on_clear  # marks pending at the clear came back, and were not taken as heard
    assert REPLY.startswith(turn.reply_text)
    assert SENTENCES[0] in turn.reply_text and len(turn.reply_text) < len(" ".join(SENTENCES[:2]))


async def test_a_false_interruption_clears_then_plays_on_with_nothing_lost() -> None:
    recorder = Recorder()
    engine = phone_engine(llm={"provider": "scripted", "reply": REPLY}, tts=SLOW_TTS, plugins=(recorder,),
                          stt={"provider": "scripted", "transcripts": ["what is the weather today", ""],
                               "interim_every_ms": 0})
    async with live_server(engine) as server, twilio_call(server) as call:
        await call.begin()
        await call.speak(spoken())
        await wait_for(lambda: call.echoed, timeout_s=15)
        await asyncio.sleep(0.3)
        await call.speak(spoken(speech_ms=300, pause_ms=500))  # a cough: no words
        await wait_for(lambda: recorder.turns, timeout_s=20)
        await call.wait_idle()
        await call.hang_up()
    turn = recorder.turns[0]
    assert not turn.interrupted and turn.reply_text == REPLY
    assert call.clears and call.echoed_on_clear is not None
    reply_s = len(REPLY) * 0.04
    heard_s = sum(1 for p in call.played if p.audio) * 0.02
    assert reply_s - 0.1 <= heard_s <= reply_s + 0.6  # all of it; at most what followed the last mark again


async def test_a_turn_over_plain_asgi_without_direct_frames() -> None:
    """Under another server (uvicorn's own protocol: no direct frames) every message goes through ASGI."""
    recorder = Recorder()
    engine = phone_engine(llm={"provider": "scripted", "reply": REPLY}, plugins=(recorder,))
    async with live_server(engine, ws="websockets-sansio") as server, twilio_call(server) as call:
        await call.begin()
        await call.speak(spoken())
        await wait_for(lambda: recorder.turns, timeout_s=15)
        await call.wait_idle()
        await wait_for(lambda: len(call.echoed) == len(call.sent_marks()))
        await call.hang_up()
        assert engine.transports[0].stats()["heard_direct_total"] == 0
    assert recorder.turns[0].reply_text == REPLY and call.media_frames()
