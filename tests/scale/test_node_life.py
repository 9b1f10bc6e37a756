"""A node's life cycle as a load balancer sees it, in one process: ``/health/live`` and ``/health/ready``, load
shedding on event-loop lag (refused at once with 503 and ``Retry-After``, before accepting), a drain that lets the
reply finish and sends ``reconnect``, and a transcript read on another node from the shared state."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from cluster_kit import in_loop, until

from vocable import Engine
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

pytest_plugins = ["redis_server"]
PLUGINS = [*SCRIPTED_PLUGINS, "vocable.transports.websocket"]


def node(server: dict[str, Any] | None = None, state: dict[str, Any] | None = None, **pipeline: Any) -> Engine:
    data = scripted_config(**pipeline)
    data["transports"] = {"websocket": {}}
    data["server"] = {"max_sessions": 5, **(server or {})}
    if state:
        data["state"] = state
    return Engine.from_dict(data, autoload=False, plugins=PLUGINS)


async def _get(base: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=10) as http:
        return await http.get(path)


async def _events_until(ws: Any, kind: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            raw = await ws.recv()
            if isinstance(raw, str):
                seen.append(json.loads(raw))
                if seen[-1]["type"] == kind:
                    return seen


async def test_live_and_ready_answer_for_a_load_balancer() -> None:
    engine = node({"max_sessions": 1})
    async with in_loop(engine) as base:
        assert (await _get(base, "/health/live")).json()["status"] == "live"
        ready = await _get(base, "/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "sessions": 0, "lag_ms": 0.0}
        async with websockets.connect(f"ws://{base}/ws/audio", proxy=None) as ws:
            await _events_until(ws, "ready")
            full = await _get(base, "/health/ready")  # at max_sessions: saturated, send the next one elsewhere
            assert full.status_code == 503 and full.json()["reason"] == "saturated"
            assert full.headers["retry-after"] == "1"
        await until(lambda: not engine.sessions, "the session ended")
        assert (await _get(base, "/health/ready")).status_code == 200


async def test_a_lagging_node_refuses_new_sessions_at_once_and_keeps_the_admitted_one() -> None:
    engine = node({"max_loop_lag_ms": 30})
    async with in_loop(engine) as base:
        async with websockets.connect(f"ws://{base}/ws/audio", proxy=None) as admitted:
            await _events_until(admitted, "ready")
            hogging = True

            def hog() -> None:  # the loop is late: 60 ms blocked out of every 70
                if hogging:
                    time.sleep(0.06)
                    asyncio.get_running_loop().call_later(0.01, hog)
            hog()
            try:
                refused = await until(lambda: _saturated(base), "ready says saturated", 15, 0.05)
                assert refused.json()["reason"] == "saturated" and refused.json()["lag_ms"] > 30
                with pytest.raises(websockets.InvalidStatus) as shed:
                    await websockets.connect(f"ws://{base}/ws/audio", proxy=None, open_timeout=10)
                response = shed.value.response
                assert response.status_code == 503 and response.headers["retry-after"] == "1"
                assert json.loads(response.body)["code"] == "overloaded"
            finally:
                hogging = False
            assert engine.node.shed_total >= 1
            await admitted.send(json.dumps({"type": "text", "text": "still here"}))  # the admitted one goes on
            assert any(e["type"] == "reply" for e in await _events_until(admitted, "metrics"))
        await until(lambda: _ready_again(base), "ready once the lag is gone", 15, 0.1)


async def _ready_again(base: str) -> bool:
    return (await _get(base, "/health/ready")).status_code == 200


async def _saturated(base: str) -> httpx.Response | None:
    response = await _get(base, "/health/ready")
    return response if response.status_code == 503 else None


async def test_a_drain_lets_the_reply_finish_then_sends_reconnect_and_parks_it() -> None:
    engine = node({"drain_timeout_s": 10}, tts={"provider": "scripted", "ms_per_char": 20})
    async with in_loop(engine) as base:
        async with websockets.connect(f"ws://{base}/ws/audio", proxy=None, max_size=None) as ws:
            session_id = (await _events_until(ws, "ready"))[-1]["session_id"]
            await ws.send(json.dumps({"type": "text", "text": "hello"}))
            await _events_until(ws, "reply")
            draining = asyncio.create_task(engine.node.drain())
            await until(lambda: engine.node.draining, "draining")
            assert (await _get(base, "/health/ready")).json()["reason"] == "draining"
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(f"ws://{base}/ws/audio", proxy=None)
            assert refused.value.response.status_code == 503
            seen = await _events_until(ws, "closed")
            kinds = [e["type"] for e in seen]
            assert kinds.index("metrics") < kinds.index("reconnect") < kinds.index("closed")  # reply first
            await draining
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1012
        memory = await engine.ledger.take(session_id)  # parked for a reconnect (here: this process's ledger)
        assert [m.content for m in memory or []][:1] == ["hello"]


async def test_a_transcript_is_read_on_another_node_from_the_shared_state(redis_server) -> None:
    state = {"url": redis_server.url, "prefix": redis_server.prefix()}
    one, two = node(state=state), node(state=state)  # no storage.url: only the shared state has the turns
    async with in_loop(one) as base_one, in_loop(two) as base_two:
        async with websockets.connect(f"ws://{base_one}/ws/audio", proxy=None, max_size=None) as ws:
            session_id = (await _events_until(ws, "ready"))[-1]["session_id"]
            for text in ("first", "second"):
                await ws.send(json.dumps({"type": "text", "text": text}))
                await _events_until(ws, "metrics")
        transcript = (await _get(base_two, f"/sessions/{session_id}/transcript")).json()
        assert transcript["session_id"] == session_id and transcript["transport"] == "websocket"
        assert [t["user_text"] for t in transcript["turns"]] == ["first", "second"]
        assert (await _get(base_two, "/sessions/ses_unknown/transcript")).status_code == 404


async def test_late_webrtc_media_sheds_like_loop_lag() -> None:
    """WebRTC's paced track reports each frame that went out behind schedule; late media makes the node shed."""
    pytest.importorskip("aiortc")
    from vocable.transports.webrtc.audio import PlaybackTrack

    late: list[float] = []
    track = PlaybackTrack(16000, on_late=late.append)
    await track.recv()  # the clock starts
    time.sleep(0.1)  # the loop is held up: the next frame, due 20 ms after the first, goes out ~80 ms late
    await track.recv()
    track.stop()
    assert late and late[0] > 50

    engine = node({"max_loop_lag_ms": 30})
    await engine.start()
    engine.node.start()
    async with engine.conversation():
        feeding = True

        async def feed() -> None:  # a peer's frames keep going out 80 ms late
            while feeding:
                engine.node.media_late(80.0)
                await asyncio.sleep(0.01)
        feeder = asyncio.create_task(feed())
        try:
            await until(lambda: engine.node.lagging, "late media counts as lag", 10, 0.02)
            refusal = engine.node.refusal()
            assert refusal is not None and refusal.code == "overloaded" and refusal.status == 503
        finally:
            feeding = False
            await feeder
    await engine.stop()
