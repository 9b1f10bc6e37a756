"""WebRTC under ``vocable serve --workers 2``: the event socket of ``POST /webrtc/offer`` works on every worker.

The offer makes the peer in one worker; the event socket is a second connection that the kernel may hand to
the other one, which relays it to the owner over the owner's private unix socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from kit import LOOPBACK, ClientPeer, Events, ws_url

pytestmark = pytest.mark.netns

VOCABLE = Path(sys.executable).with_name("vocable")
KEY = "webrtc-workers-api-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_event_socket_reaches_the_peer_whichever_worker_takes_it(tmp_path: Path) -> None:
    config = {
        "server": {"auth": {"api_key": KEY}, "log_format": "json", "rate_limit_per_minute": 1000},
        "transports": {"webrtc": {"host_addresses": LOOPBACK}},
        "pipeline": {"vad": {"provider": "energy"}, "turn": {"provider": "silence", "hangover_ms": 300},
                     "stt": {"provider": "scripted"}, "llm": {"provider": "scripted"}, "tts": {"provider": "scripted"}},
        "metrics": [],
        "plugins": {"modules": ["vocable.testing.plugin"]},
    }
    path = tmp_path / "vocable.yaml"
    path.write_text(json.dumps(config))
    port = _free_port()
    log_path = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(VOCABLE), "serve", "-c", str(path), "--port", str(port), "--workers", "2"],
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
        client = ClientPeer()
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                deadline = time.monotonic() + 120
                while True:
                    assert process.poll() is None, log_path.read_text()[-3000:]
                    try:
                        health = (await http.get(f"{base}/health")).json()
                        if len(health.get("workers", {})) == 2 and all(w["ready"] for w in health["workers"].values()):
                            break
                    except (httpx.TransportError, ValueError):
                        pass
                    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                    await asyncio.sleep(0.2)
                token = (await http.post(f"{base}/session", headers={"Authorization": f"Bearer {KEY}"})).json()["token"]
                sdp, _ = await client.offer()
                answer = await http.post(f"{base}/webrtc/offer?token={token}", json={"sdp": sdp, "type": "offer"})
                assert answer.status_code == 200, answer.text
                session_id = answer.json()["session_id"]  # at once: a worker not told yet waits a heartbeat
            relayed = 0
            for attempt in range(30):  # the kernel picks the worker; go on until some sockets were relayed
                events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}?token={token}"),
                                                         proxy=None))
                assert (await events.wait_for("ready"))["session_id"] == session_id, attempt
                await events.ws.send(json.dumps({"type": "text", "text": "hello"}))
                await events.wait_for("transcript", final=True)  # the client's message reached the peer
                await events.aclose()
                await asyncio.sleep(0.1)
                relayed = log_path.read_text().count('"event": "webrtc_relayed"')
                if relayed >= 2 and attempt >= 3:
                    break
            assert relayed >= 1, "30 event sockets all reached the worker that holds the peer"
            with pytest.raises(websockets.InvalidStatus):  # the relay does not skip the token check
                await websockets.connect(ws_url(base, f"/ws/webrtc/{session_id}"), proxy=None)
        finally:
            await client.close()
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
