"""Issue 22 over WebRTC, against the real ``vocable serve`` process: client text that is valid JSON but not
valid Unicode (a lone surrogate) is an input error on the event socket and on the data channel, never a
dead session."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets
from kit import LOOPBACK, ClientPeer, Events, post_offer, ws_url

from vocable.testing.server import ServerProcess

pytestmark = pytest.mark.netns

HOSTILE = ('{"type":"text","text":"\\ud800"}', '{"type":"candidate","candidate":"candidate:\\udc00 1 udp 1 127.0.0.1 9 typ host"}',
           '{"type":"\\udfff"}')


def _server(tmp_path: Path) -> ServerProcess:
    config = {
        "server": {"rate_limit_per_minute": 1000},
        "transports": {"webrtc": {"host_addresses": LOOPBACK}},
        "pipeline": {"vad": {"provider": "energy"}, "turn": {"provider": "silence", "hangover_ms": 300},
                     "stt": {"provider": "scripted"}, "llm": {"provider": "scripted", "echo": True},
                     "tts": {"provider": "scripted"}},
        "metrics": [],
        "plugins": {"modules": ["vocable.testing.plugin"]},
    }
    path = tmp_path / "vocable.yaml"
    path.write_text(json.dumps(config))
    return ServerProcess(path, env={"NO_COLOR": "1"})


async def _until(check, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)


async def test_lone_surrogates_on_the_event_socket_and_the_data_channel(tmp_path: Path) -> None:
    with _server(tmp_path) as server:
        # the event socket of POST /webrtc/offer
        client = ClientPeer()
        sdp, _ = await client.offer()
        response = await post_offer(server.url, sdp)
        assert response.status_code == 200, response.text
        await client.accept(response.json()["sdp"])
        events = Events(await websockets.connect(ws_url(server.url, f"/ws/webrtc/{response.json()['session_id']}"),
                                                 proxy=None))
        await client.wait_connected()
        await events.wait_for("ready")
        for raw in HOSTILE:
            await events.ws.send(raw)
            error = await events.wait_for("error")
            events.items.remove(error)
            assert error["code"] == "invalid_field" and not error.get("fatal"), error
        await events.ws.send(json.dumps({"type": "text", "text": "still alive"}))
        await events.wait_for("reply", final=True)
        assert "still alive" in "".join(e["text"] for e in events.items if e["type"] == "reply")
        await events.aclose()
        await client.close()

        # the data channel, with no socket at all
        client = ClientPeer(data_channel=True)
        sdp, _ = await client.offer()
        response = await post_offer(server.url, sdp)
        await client.accept(response.json()["sdp"])
        await client.wait_connected()
        await _until(lambda: any(e["type"] == "ready" for e in client.channel_events))
        for raw in HOSTILE:
            client.channel.send(raw)
        await _until(lambda: sum(e["type"] == "error" for e in client.channel_events) == len(HOSTILE))
        errors = [e for e in client.channel_events if e["type"] == "error"]
        assert all(e["code"] == "invalid_field" and not e.get("fatal") for e in errors), errors
        client.channel.send(json.dumps({"type": "text", "text": "by data channel"}))
        await _until(lambda: any(e["type"] == "metrics" for e in client.channel_events))
        assert "by data channel" in "".join(e["text"] for e in client.channel_events if e["type"] == "reply")
        await client.close()
        assert server.health_status() == 200
