"""Recording through the real `vocable serve`: a spoken turn over the WebSocket (auth on) is recorded, `GET
/sessions/{id}/recording` returns it with the API key only, and it replays to the same events."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import websockets
import yaml

from vocable.recording.format import read
from vocable.recording.replay import replay
from vocable.testing.scripted import scripted_config, utterance
from vocable.testing.server import ServerProcess

API_KEY = "recording-test-key-0123456789"


async def spoken_turn(ws_url: str, token: str) -> str:
    async with websockets.connect(f"{ws_url}/ws/audio?token={token}", open_timeout=10, proxy=None) as ws:
        ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
        pcm = utterance()
        for i in range(0, len(pcm), 640):
            await ws.send(pcm[i : i + 640])
            await asyncio.sleep(0.02)  # at real time, as a microphone sends it
        async with asyncio.timeout(20):
            while not (isinstance(m := await ws.recv(), str) and json.loads(m)["type"] == "metrics"):
                pass
        await asyncio.sleep(0.6)  # the reply's last audio plays out before the client leaves
        await ws.send(json.dumps({"type": "end"}))
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
        return str(ready["session_id"])


def fetch_when_complete(url: str, headers: dict[str, str], timeout_s: float = 20.0) -> httpx.Response:
    """The recording once its session has ended (its last line is ``end``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(url, headers=headers, timeout=10)
        if response.status_code == 200 and '"end"' in response.text.strip().splitlines()[-1]:
            return response
        assert time.monotonic() < deadline, f"{response.status_code}: {response.text[-300:]}"
        time.sleep(0.1)


def test_a_served_session_is_recorded_fetched_with_the_api_key_and_replayed(tmp_path: Path) -> None:
    """Not a coroutine: the replay runs its own event loop on a virtual clock."""
    config = {**scripted_config(), "transports": {"websocket": {}}, "metrics": [{"provider": "log"}],
              "server": {"auth": {"api_key": API_KEY}},
              "storage": {"record": "audio", "recordings": str(tmp_path / "recordings")}}
    (tmp_path / "vocable.yaml").write_text(yaml.safe_dump(config))
    key = {"Authorization": f"Bearer {API_KEY}"}
    with ServerProcess(tmp_path / "vocable.yaml") as server:
        token = httpx.post(f"{server.url}/session", headers=key, timeout=10).json()["token"]
        session_id = asyncio.run(spoken_turn(server.ws_url, token))
        url = f"{server.url}/sessions/{session_id}/recording"
        response = fetch_when_complete(url, key)
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert httpx.get(url, timeout=10).status_code == 401  # behind the API key
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 401
        missing = httpx.get(f"{server.url}/sessions/ses_000000000000/recording", headers=key, timeout=10)
        assert missing.status_code == 404
    path = tmp_path / "fetched.jsonl"
    path.write_bytes(response.content)
    recording = read(path)
    assert recording.header["transport"] == "websocket" and recording.end_reason == "client_end"
    assert recording.outputs("stt", 0) and recording.outputs("llm", 0) and recording.outputs("tts", 0)
    comparison = replay(recording)
    assert not comparison.differs, "\n".join(comparison.lines)
    assert [t.user for t in comparison.turns[1]] == ["what is the weather today"]
