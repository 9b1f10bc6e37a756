"""Refusals: malformed offers are 400s that say why (never 500), the peer cap answers 503 at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time

import httpx
import pytest
import websockets
from kit import ClientPeer, Events, post_offer, scripted_engine, served, ws_url

pytestmark = pytest.mark.netns


def _mutations(sdp: str) -> dict[str, str]:
    lines = sdp.split("\r\n")
    return {
        "truncated": sdp[: len(sdp) // 3],
        "no_fingerprint": "\r\n".join(l for l in lines if not l.startswith("a=fingerprint")),
        "no_ice_credentials": "\r\n".join(l for l in lines if not l.startswith(("a=ice-ufrag", "a=ice-pwd"))),
        "bad_port": re.sub(r"m=audio \d+", "m=audio port", sdp),
        "unknown_codec_only": re.sub(r"(m=audio \d+ [A-Z/]+)( \d+)+", r"\1 120", "\r\n".join(
            l for l in lines if not l.startswith(("a=rtpmap", "a=fmtp", "a=rtcp-fb")))).replace(
            "a=mid:0", "a=mid:0\r\na=rtpmap:120 nonsense/8000"),
        "garbage_lines": sdp.replace("a=mid:0", "a=mid:0\r\n\x00\x01 garbage\r\nb="),
        "bad_setup": sdp.replace("a=setup:actpass", "a=setup:sideways"),
    }


async def test_malformed_offers_are_400_with_a_reason_never_500():
    engine = scripted_engine()
    async with served(engine.asgi_app()) as base, httpx.AsyncClient(timeout=30) as http:
        url = f"{base}/webrtc/offer"
        for body in (b"", b"{", b"null", b'{"sdp": 1, "type": "offer"}', b'{"sdp": "v=0", "type": "pranswer"}',
                     b'{"type": "offer", "sdp": "' + b"a" * 70000 + b'"}'):
            response = await http.post(url, content=body)
            assert response.status_code == 400, (body[:40], response.text)
            assert response.json()["error"] == "bad_offer" and response.json()["message"]
        client = ClientPeer()
        sdp, _ = await client.offer()
        await client.close()
        statuses = {}
        for name, mutated in _mutations(sdp).items():
            response = await http.post(url, json={"sdp": mutated, "type": "offer"})
            statuses[name] = response.status_code
            assert response.status_code in (200, 400), (name, response.status_code, response.text)
            if response.status_code == 400:
                assert response.json()["message"], name
        assert all(statuses[name] == 400 for name in ("truncated", "no_fingerprint", "no_ice_credentials",
                                                      "bad_port", "unknown_codec_only")), statuses
    assert not engine.sessions, "every refused offer closed what it had opened"


async def test_bad_first_message_on_the_signalling_socket_closes_1008():
    engine = scripted_engine()
    async with served(engine.asgi_app()) as base:
        for first in ("hello", json.dumps({"type": "text", "text": "hi"}), json.dumps({"type": "offer", "sdp": "x"})):
            events = Events(await websockets.connect(ws_url(base, "/ws/webrtc")))
            await events.ws.send(first)
            error = await events.wait_for("error")
            assert error["code"] == "bad_offer" and error["fatal"]
            assert await events.closed() == 1008
        events = Events(await websockets.connect(ws_url(base, "/ws/webrtc/ses_nope")))
        assert (await events.wait_for("error"))["code"] == "unknown_session"
        assert await events.closed() == 4404


async def test_peer_cap_is_refused_quickly_and_frees_up_again():
    engine = scripted_engine({"max_peers": 2})
    async with served(engine.asgi_app()) as base:
        clients, sockets = [], []
        for _ in range(2):
            client = ClientPeer()
            sdp, _ = await client.offer()
            response = await post_offer(base, sdp)
            assert response.status_code == 200
            await client.accept(response.json()["sdp"])
            clients.append(client)
            sockets.append(response.json()["session_id"])
        extra = ClientPeer()
        sdp, _ = await extra.offer()
        started = time.perf_counter()
        refused = await post_offer(base, sdp)
        elapsed = time.perf_counter() - started
        assert refused.status_code == 503 and refused.json()["error"] == "capacity"
        assert refused.headers["retry-after"] and elapsed < 0.5, f"refused in {elapsed:.3f} s"
        events = Events(await websockets.connect(ws_url(base, "/ws/webrtc")))
        with contextlib.suppress(websockets.ConnectionClosed):  # refused before the offer is read
            await events.ws.send(json.dumps({"type": "offer", "sdp": sdp}))
        assert (await events.wait_for("error"))["code"] == "capacity"
        assert await events.closed() == 1013
        async with httpx.AsyncClient() as http:
            stats = (await http.get(f"{base}/webrtc/stats")).json()
        assert stats["peer_count"] == 2 and stats["refused_total"] >= 2
        await clients[0].close()  # its peer closes; a new offer fits again
        async with asyncio.timeout(5):
            while len(engine.sessions) > 1:
                await asyncio.sleep(0.02)
        accepted = await post_offer(base, sdp)
        assert accepted.status_code == 200
        for client in (*clients[1:], extra):
            await client.close()


async def test_engine_session_cap_is_also_a_503():
    engine = scripted_engine(server={"max_sessions": 1})
    async with served(engine.asgi_app()) as base:
        first, second = ClientPeer(), ClientPeer()
        assert (await post_offer(base, (await first.offer())[0])).status_code == 200
        refused = await post_offer(base, (await second.offer())[0])
        assert refused.status_code == 503 and refused.json()["error"] == "capacity"
        await first.close()
        await second.close()


async def test_a_second_socket_for_the_same_session_is_refused():
    engine = scripted_engine()
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        response = await post_offer(base, (await client.offer())[0])
        session_id = response.json()["session_id"]
        first = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}")))
        await first.wait_for("ready")
        second = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}")))
        assert (await second.wait_for("error"))["code"] == "already_attached"
        assert await second.closed() == 4409
        await first.aclose()
        await client.close()
