"""An aiortc client peer talks to the server over real UDP on 127.0.0.1 (in a loopback-only namespace)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets
from kit import ClientPeer, Events, post_offer, scripted_engine, served, ws_url

from vocable.testing.speech import espeak_available, espeak_pcm, silence

pytestmark = pytest.mark.netns


async def connect_http(base: str, client: ClientPeer) -> tuple[str, Events]:
    sdp, _ = await client.offer()
    response = await post_offer(base, sdp)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "answer" and body["session_id"]
    await client.accept(body["sdp"])
    events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{body['session_id']}")))
    return body["session_id"], events


async def connect_socket_only(base: str, client: ClientPeer) -> tuple[str, Events]:
    """The whole negotiation on ``WS /ws/webrtc``: offer without candidates, then each one trickled."""
    sdp, candidates = await client.offer(trickle=True)
    assert candidates and "a=candidate" not in sdp
    ws = await websockets.connect(ws_url(base, "/ws/webrtc"))
    await ws.send(_json({"type": "offer", "sdp": sdp}))
    events = Events(ws)
    answer = await events.wait_for("answer")
    await client.accept(answer["sdp"])
    for message in [*candidates, {"type": "candidate", "candidate": None}]:
        await ws.send(_json(message))
    return answer["session_id"], events


def _json(message: dict) -> str:
    import json

    return json.dumps(message)


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
async def test_spoken_turn_over_http_offer_gets_a_spoken_reply():
    engine = scripted_engine()
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        session_id, events = await connect_http(base, client)
        ready = await events.wait_for("ready")
        assert ready["session_id"] == session_id and ready["input_sample_rate"] == 48000
        await client.wait_connected()
        speech = espeak_pcm("what is the weather today", sample_rate=48000)
        loop = asyncio.get_running_loop()
        await client.mic.push(speech + silence(1200, 48000))
        speech_end = loop.time() + len(speech) / 96000
        final = await events.wait_for("transcript", final=True, timeout_s=15)
        assert final["text"] == "what is the weather today"
        metrics = await events.wait_for("metrics", timeout_s=15)
        await asyncio.sleep(0.6)  # the reply's tail through the jitter buffer
        reply = "".join(e["text"] for e in events.items if e["type"] == "reply")
        assert reply == "It is sunny. Take a hat with you today."
        heard = client.sound_after(speech_end)
        assert 0.3 <= heard <= 0.6, f"the 390 ms reply tone, got {heard:.2f} s of sound"
        first = client.first_sound_after(speech_end)
        assert first is not None and first - speech_end < 1.5, "reply audio within a second and a half"
        assert metrics["voice_to_voice_ms"] is not None
        states = [e["state"] for e in events.items if e["type"] == "state"]
        assert "thinking" in states and "speaking" in states
        await events.ws.send(_json({"type": "end"}))
        assert await events.closed() == 1000
        await client.close()
    assert not engine.sessions


async def test_whole_signalling_on_one_socket_with_trickled_candidates():
    engine = scripted_engine(llm={"provider": "scripted", "echo": True})
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        session_id, events = await connect_socket_only(base, client)
        await events.wait_for("candidate", candidate=None)  # the server's end-of-candidates
        types = [e["type"] for e in events.items]
        assert types[0] == "answer", "the answer comes before anything else"
        server_candidates = [e for e in events.items if e["type"] == "candidate" and e["candidate"]]
        assert any(" 127.0.0.1 " in c["candidate"] for c in server_candidates)
        await client.wait_connected()
        assert (await events.wait_for("ready"))["session_id"] == session_id
        start = asyncio.get_running_loop().time()
        await events.ws.send(_json({"type": "text", "text": "hello over webrtc"}))
        await events.wait_for("reply", final=True)
        reply = "".join(e["text"] for e in events.items if e["type"] == "reply")
        assert reply == "You said: hello over webrtc."
        await events.wait_for("metrics")
        await asyncio.sleep(0.6)
        assert client.sound_after(start) >= 0.2
        await events.ws.send("not json")
        error = await events.wait_for("error")
        assert error["code"] == "invalid_json" and not error.get("fatal")
        await events.ws.send(b"\x00\x01")
        assert (await events.wait_for("error", code="binary_unsupported"))["message"]
        await client.close()  # DTLS close_notify: the server sees the peer go
        assert await events.closed() == 1000
    assert not engine.sessions


async def test_interrupt_silences_the_outgoing_track_at_once():
    engine = scripted_engine(tts={"provider": "scripted", "ms_per_char": 60})  # a 2.3 s reply
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        _, events = await connect_http(base, client)
        await client.wait_connected()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await events.ws.send(_json({"type": "text", "text": "talk for a while"}))
        async with asyncio.timeout(5):
            while client.sound_after(start) < 0.3:
                await asyncio.sleep(0.02)
        interrupted_at = loop.time()
        await events.ws.send(_json({"type": "interrupt"}))
        event = await events.wait_for("interrupted")
        assert event["turn_id"]
        await asyncio.sleep(1.5)
        tail = client.sound_after(interrupted_at + 0.4)  # what was in flight and in the jitter buffer
        assert tail <= 0.06, f"{tail:.2f} s of reply audio after the interruption"
        assert client.sound_after(start) < 1.2, "far less than the 2.3 s reply was played"
        await events.aclose()
        await client.close()


async def test_events_on_a_data_channel_without_any_socket():
    engine = scripted_engine(llm={"provider": "scripted", "echo": True})
    async with served(engine.asgi_app()) as base:
        client = ClientPeer(data_channel=True)
        sdp, _ = await client.offer()
        response = await post_offer(base, sdp)
        await client.accept(response.json()["sdp"])
        await client.wait_connected()
        async with asyncio.timeout(5):
            while not any(e["type"] == "ready" for e in client.channel_events):
                await asyncio.sleep(0.02)
        assert client.channel_events[0]["type"] == "ready"
        client.channel.send(_json({"type": "text", "text": "by data channel"}))
        async with asyncio.timeout(5):
            while not any(e["type"] == "metrics" for e in client.channel_events):
                await asyncio.sleep(0.02)
        reply = "".join(e["text"] for e in client.channel_events if e["type"] == "reply")
        assert reply == "You said: by data channel."
        client.channel.send(_json({"type": "end"}))
        async with asyncio.timeout(5):
            while engine.sessions:
                await asyncio.sleep(0.02)
        await client.close()


async def test_stats_report_states_packets_jitter_and_round_trip_time():
    engine = scripted_engine()
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        session_id, events = await connect_http(base, client)
        await client.wait_connected()
        await client.mic.push(b"\x10\x00" * 48000)
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient() as http:
            while True:
                body = (await http.get(f"{base}/webrtc/stats")).json()
                peer = body["peers"][0]
                if peer["round_trip_time_ms"] is not None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
        assert body["peer_count"] == 1 and peer["session_id"] == session_id
        assert peer["connection_state"] == "connected" and peer["ice_connection_state"] == "completed"
        assert peer["inbound"]["packets"] > 20 and peer["inbound"]["bytes"] > 1000
        assert peer["outbound"]["packets"] > 20 and peer["outbound"]["bytes"] > 0  # Opus silence is 3 bytes a packet
        assert peer["inbound"]["jitter_ms"] is not None and peer["inbound"]["jitter_ms"] >= 0
        assert peer["round_trip_time_ms"] is not None and 0 <= peer["round_trip_time_ms"] < 200
        await events.aclose()
        await client.close()


async def test_ice_servers_reach_the_browser_and_secrets_stay_out_of_config():
    turn = {"urls": ["turn:127.0.0.1:3478"], "username": "user", "credential": "turn-secret"}
    engine = scripted_engine({"ice_servers": [{"urls": "stun:127.0.0.1:3478"}, turn]})
    async with served(engine.asgi_app()) as base, httpx.AsyncClient() as http:
        client_config = (await http.get(f"{base}/client-config")).json()
        webrtc = client_config["transports"]["webrtc"]
        assert webrtc["ice_servers"] == [{"urls": ["stun:127.0.0.1:3478"]}, turn]
        assert webrtc["offer_path"] == "/webrtc/offer" and webrtc["socket_path"] == "/ws/webrtc"
        assert "turn-secret" not in (await http.get(f"{base}/config")).text


async def test_without_host_addresses_a_loopback_only_server_offers_no_candidate():
    """Why the setting exists: aioice skips 127.0.0.1, so here the answer would carry no candidate at all."""
    with_setting = scripted_engine()
    without = scripted_engine({"host_addresses": []})
    for engine, expected in ((with_setting, True), (without, False)):
        async with served(engine.asgi_app()) as base:
            client = ClientPeer()
            sdp, _ = await client.offer()
            answer = (await post_offer(base, sdp)).json()
            assert ("a=candidate:" in answer["sdp"] and " 127.0.0.1 " in answer["sdp"]) is expected
            await client.close()


async def test_an_offer_with_video_gets_it_answered_inactive_and_audio_still_works():
    engine = scripted_engine(llm={"provider": "scripted", "echo": True})
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        client.pc.addTransceiver("video", direction="sendrecv")
        sdp, _ = await client.offer()
        response = await post_offer(base, sdp)
        assert response.status_code == 200, response.text
        answer = response.json()["sdp"]
        video = answer[answer.index("m=video"):]
        assert "a=inactive" in video and "a=sendrecv" in answer[: answer.index("m=video")]
        await client.accept(answer)
        events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{response.json()['session_id']}")))
        await client.wait_connected()
        start = asyncio.get_running_loop().time()
        await events.ws.send(_json({"type": "text", "text": "video is off"}))
        await events.wait_for("metrics")
        await asyncio.sleep(0.6)
        assert client.sound_after(start) >= 0.2
        await events.aclose()
        await client.close()
