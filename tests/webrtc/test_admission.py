"""The engine's gate applies to WebRTC as to /ws/audio: tokens, origins, and resuming a dropped call."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from kit import ClientPeer, Events, post_offer, scripted_engine, served, ws_url

pytestmark = pytest.mark.netns

API_KEY = "an-api-key-of-some-length"


async def test_offers_need_a_token_when_auth_is_on_and_a_token_opens_one_session():
    engine = scripted_engine(server={"auth": {"api_key": API_KEY}})
    async with served(engine.asgi_app()) as base, httpx.AsyncClient(timeout=30) as http:
        client = ClientPeer()
        sdp, _ = await client.offer()
        refused = await http.post(f"{base}/webrtc/offer", json={"sdp": sdp, "type": "offer"})
        assert refused.status_code == 401 and refused.json()["error"] == "token_required"
        token = (await http.post(f"{base}/session", headers={"Authorization": f"Bearer {API_KEY}"})).json()["token"]
        accepted = await http.post(f"{base}/webrtc/offer?token={token}", json={"sdp": sdp, "type": "offer"})
        assert accepted.status_code == 200, accepted.text
        again = await http.post(f"{base}/webrtc/offer?token={token}", json={"sdp": sdp, "type": "offer"})
        assert again.status_code == 403 and again.json()["error"] == "token_used"
        session_id = accepted.json()["session_id"]
        other = (await http.post(f"{base}/session", headers={"Authorization": f"Bearer {API_KEY}"})).json()["token"]
        for query in ("", f"?token={other}"):  # the event socket wants the token that made this session
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}{query}"))
            assert denied.value.response.status_code in (401, 403)
        events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}?token={token}")))
        assert (await events.wait_for("ready"))["session_id"] == session_id
        await events.aclose()
        stats = await http.get(f"{base}/webrtc/stats")
        assert stats.status_code == 401, "operator data needs the API key"
        stats = await http.get(f"{base}/webrtc/stats", headers={"Authorization": f"Bearer {API_KEY}"})
        assert stats.json()["peers"][0]["session_id"] == session_id
        with pytest.raises(websockets.InvalidStatus) as denied:  # refused before the socket is accepted
            await websockets.connect(ws_url(base, "/ws/webrtc"))
        assert denied.value.response.status_code == 401
        await client.close()


async def test_origins_outside_the_allow_list_are_refused_on_every_route():
    engine = scripted_engine(server={"allowed_origins": ["https://app.example"]})
    async with served(engine.asgi_app()) as base, httpx.AsyncClient(timeout=30) as http:
        client = ClientPeer()
        sdp, _ = await client.offer()
        evil = {"Origin": "https://evil.example"}
        refused = await http.post(f"{base}/webrtc/offer", json={"sdp": sdp, "type": "offer"}, headers=evil)
        assert refused.status_code == 403 and refused.json()["error"] == "origin_not_allowed"
        response = await http.post(f"{base}/webrtc/offer", json={"sdp": sdp, "type": "offer"},
                                   headers={"Origin": "https://app.example"})
        assert response.status_code == 200
        session_id = response.json()["session_id"]
        for path in ("/ws/webrtc", f"/ws/webrtc/{session_id}"):
            with pytest.raises(websockets.InvalidStatus) as denied:
                await websockets.connect(ws_url(base, path), origin="https://evil.example")
            assert denied.value.response.status_code == 403
        events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}"),
                                                 origin="https://app.example"))
        assert (await events.wait_for("ready"))["session_id"] == session_id
        await events.aclose()
        await client.close()


async def test_a_call_that_drops_resumes_its_conversation():
    engine = scripted_engine({"disconnect_timeout_s": 0.5}, llm={"provider": "scripted", "echo": True})
    async with served(engine.asgi_app()) as base:
        first = ClientPeer()
        response = await post_offer(base, (await first.offer())[0])
        session_id = response.json()["session_id"]
        await first.accept(response.json()["sdp"])
        events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}")))
        await first.wait_connected()
        await events.ws.send(json.dumps({"type": "text", "text": "remember the word pelican"}))
        await events.wait_for("metrics")
        first.mic.stop()  # the network goes: no audio, and the socket is gone too
        await events.aclose()
        async with asyncio.timeout(5):
            while session_id in engine.sessions:
                await asyncio.sleep(0.05)
        second = ClientPeer()
        sdp, _ = await second.offer()
        async with httpx.AsyncClient(timeout=30) as http:
            resumed = await http.post(f"{base}/webrtc/offer?resume={session_id}", json={"sdp": sdp, "type": "offer"})
        assert resumed.status_code == 200 and resumed.json()["session_id"] == session_id
        memory = [m.content for m in engine.sessions[session_id].memory.messages]
        assert any("pelican" in text for text in memory), memory
        await first.close()
        await second.close()
