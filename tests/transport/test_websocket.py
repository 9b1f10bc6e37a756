"""``WS /ws/audio`` and the HTTP API over a real uvicorn server on loopback, with the scripted fakes."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from wskit import (
    audio_bytes,
    connect,
    engine,
    events,
    live_server,
    send_audio,
    utterance,
    websocket_transport,
)

from vocable.testing.fakes import tone
from vocable.testing.speech import silence
from vocable.transports import direct_frames

LONG_REPLY = " ".join(["This reply goes on for quite a while so there is time to cut it off."] * 4)
METRIC_KEYS = ("stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")


@pytest.mark.parametrize(("protocol", "deflate"), [
    ("direct", False),  # as `vocable serve` runs: frames heard as parsed, written with the header made here
    ("direct", True),  # permessage-deflate negotiated: the protocol library frames (and compresses) them
    ("websockets-sansio", True),  # uvicorn's own protocol: everything through the ASGI queue and send
    ("fallback", False),  # what `vocable serve` runs when this uvicorn lacks an internal direct frames use
])
async def test_audio_turn_arrives_in_order(protocol: str, deflate: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"ws_per_message_deflate": deflate} | ({} if protocol == "direct" else {"ws": protocol})
    if protocol == "fallback":
        monkeypatch.setattr(direct_frames, "direct_frames_missing", lambda: ["WebSocketsSansIOProtocol.conn"])
        options = direct_frames.serve_ws_options()
        assert options["ws"] == "websockets-sansio"
    async with live_server(engine(), **options) as server, connect(server.ws_url()) as client:
        assert (client.ws.protocol.extensions != []) is deflate
        ready = await client.recv()
        assert ready == {"type": "ready", "session_id": ready["session_id"], "input_sample_rate": 16000,
                         "output_sample_rate": 16000, "resumed": False}
        assert await client.recv() == {"type": "state", "state": "listening"}
        await send_audio(client, utterance())
        turn = await client.turn()

        kinds = [m["type"] if isinstance(m, dict) else "audio" for m in turn]
        transcripts = events(turn, "transcript")
        interim = next(i for i, m in enumerate(turn) if isinstance(m, dict) and m["type"] == "transcript"
                       and not m["final"])
        final = next(i for i, m in enumerate(turn) if isinstance(m, dict) and m["type"] == "transcript"
                     and m["final"])
        assert interim < final < kinds.index("reply") < kinds.index("audio") < kinds.index("metrics")
        assert transcripts[-1]["text"] == "what is the weather today"
        replies = events(turn, "reply")
        assert "".join(r["text"] for r in replies) == "It is sunny. Take a hat with you today."
        assert replies[-1]["final"] and {r["turn_id"] for r in replies} == {transcripts[-1]["turn_id"]}
        assert audio_bytes(turn) >= 16000 * 2 * 0.35
        states = [m["state"] for m in events(turn, "state")]
        assert states.index("thinking") < states.index("speaking")
        metrics = turn[-1]
        assert isinstance(metrics, dict) and metrics["turn_id"] == transcripts[-1]["turn_id"]
        for key in METRIC_KEYS:
            assert isinstance(metrics[key], (int, float)) and metrics[key] >= 0, key
        assert (await client.next("state"))["state"] == "listening"
        (connection,) = websocket_transport(server.engine).connections
        heard_direct = connection.heard_direct
        assert connection.messages_in >= len(utterance()) // 640
        if protocol == "direct":  # frames that came while the reader was busy went the ASGI way, in order
            assert 0 < heard_direct <= connection.messages_in
        else:
            assert heard_direct == 0


async def test_typed_text_turn() -> None:
    eng = engine(llm={"provider": "scripted", "echo": True})
    async with live_server(eng) as server, connect(server.ws_url()) as client:
        await client.next("ready")
        await client.send({"type": "text", "text": "hello engine"})
        turn = await client.turn()
        assert [(t["text"], t["final"]) for t in events(turn, "transcript")] == [("hello engine", True)]
        assert "".join(r["text"] for r in events(turn, "reply")) == "You said: hello engine."
        assert audio_bytes(turn) > 0
        assert turn[-1]["llm_ttft_ms"] is not None  # type: ignore[index]


async def test_interrupt_mid_reply_stops_the_audio() -> None:
    eng = engine(llm={"provider": "scripted", "reply": LONG_REPLY})
    async with live_server(eng) as server, connect(server.ws_url()) as client:
        await client.next("ready")
        await client.send({"type": "text", "text": "tell me a long story"})
        while not isinstance(await client.recv(), bytes):
            pass
        await client.send({"type": "interrupt"})
        after: list[object] = []
        while not (isinstance(message := await client.recv(), dict) and message["type"] == "interrupted"):
            after.append(message)
        after.clear()
        try:
            async with asyncio.timeout(1.0):
                while True:
                    after.append(await client.recv())
        except TimeoutError:
            pass
        assert audio_bytes(after) == 0, "no reply audio may follow 'interrupted'"  # type: ignore[arg-type]
        metrics = events(after, "metrics")  # type: ignore[arg-type]
        assert metrics and metrics[0]["interrupted"] is True
        assert [m["state"] for m in events(after, "state")] == ["listening"]  # type: ignore[arg-type]


async def test_start_declares_the_input_rate() -> None:
    async with live_server(engine()) as server:
        async with connect(server.ws_url(query="sample_rate=8000")) as client:
            assert (await client.next("ready"))["input_sample_rate"] == 8000
        async with connect(server.ws_url()) as client:
            first = await client.next("ready")
            await client.send({"type": "start", "sample_rate": 48000})
            again = await client.next("ready")
            assert again["input_sample_rate"] == 48000 and again["session_id"] == first["session_id"]
            await send_audio(client, utterance(rate=48000), rate=48000)
            turn = await client.turn()
            assert events(turn, "transcript")[-1]["text"] == "what is the weather today"


async def test_end_closes_the_session_cleanly() -> None:
    eng = engine()
    async with live_server(eng) as server:
        async with connect(server.ws_url()) as client:
            ready = await client.next("ready")
            assert ready["session_id"] in eng.sessions
            await client.send({"type": "end"})
            closed = await client.next("closed")
            assert closed["reason"] == "client_end"
            assert await client.closed() == (1000, "client_end")
        await _until(lambda: not eng.sessions and not websocket_transport(eng).live)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(ready["session_id"])]


async def test_client_that_vanishes_mid_reply_frees_its_session() -> None:
    eng = engine(llm={"provider": "scripted", "reply": LONG_REPLY})
    async with live_server(eng) as server:
        async with connect(server.ws_url()) as client:
            ready = await client.next("ready")
            await client.send({"type": "text", "text": "go"})
            while not isinstance(await client.recv(), bytes):
                pass
            client.ws.transport.abort()  # no close frame: a dropped network
        await _until(lambda: not eng.sessions and not websocket_transport(eng).live)
        await _until(lambda: not [t for t in asyncio.all_tasks() if t.get_name().startswith(ready["session_id"])])


async def test_server_shutdown_closes_live_connections() -> None:
    eng = engine()
    async with live_server(eng) as server, connect(server.ws_url()) as client:
        await client.next("ready")
        server.server.should_exit = True
        code, _ = await client.closed()
        assert code in (1001, 1012)  # 1012 is uvicorn's "service restart" sent on shutdown
    assert not eng.sessions


async def test_engine_stop_sends_going_away() -> None:
    """When the engine stops while the web server keeps running (embedded), clients get 1001."""
    eng = engine()
    async with live_server(eng) as server, connect(server.ws_url()) as client:
        await client.next("ready")
        for session in list(eng.sessions.values()):
            await session.close("server_shutdown")
        assert (await client.next("closed"))["reason"] == "server_shutdown"
        assert await client.closed() == (1001, "server_shutdown")


async def test_capacity_refuses_with_1013() -> None:
    eng = engine(server={"max_sessions": 1})
    async with live_server(eng) as server, connect(server.ws_url()) as first:
        await first.next("ready")
        async with connect(server.ws_url()) as second:
            error = await second.next("error")
            assert error["code"] == "capacity" and error["fatal"] is True
            assert (await second.closed())[0] == 1013
        await first.send({"type": "text", "text": "still here"})
        assert events(await first.turn(), "reply")


async def test_origin_allow_list() -> None:
    eng = engine(server={"allowed_origins": ["http://good.example"]})
    async with live_server(eng) as server:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(server.ws_url(), origin="http://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        assert b"origin_not_allowed" in refused.value.response.body
        async with connect(server.ws_url(), origin="http://good.example") as client:
            await client.next("ready")
        async with connect(server.ws_url()) as client:  # no Origin: not a browser
            await client.next("ready")


async def test_http_api_while_a_session_is_live() -> None:
    eng = engine(tts={"provider": "scripted", "sample_rate": 22050})
    async with live_server(eng) as server, connect(server.ws_url()) as client, \
            httpx.AsyncClient(base_url=server.http) as http:
        ready = await client.next("ready")
        assert ready["output_sample_rate"] == 22050
        await client.send({"type": "text", "text": "hi"})
        await client.turn()

        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert "websocket" in health.json()["transports"]
        sessions = (await http.get("/sessions")).json()["sessions"]
        assert [(s["id"], s["transport"], s["turns"]) for s in sessions] == [(ready["session_id"], "websocket", 1)]
        config = (await http.get("/config")).json()
        assert config["transports"]["websocket"]["path"] == "/ws/audio"
        metrics = await http.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "vocable_sessions_active 1" in metrics.text
        client_config = (await http.get("/client-config")).json()
        assert client_config["transports"]["websocket"]["path"] == "/ws/audio"
        page = await http.get("/")
        assert page.status_code == 200 and 'id="latency-chart"' in page.text


async def test_audio_in_small_odd_sized_pieces_still_makes_a_turn() -> None:
    """Clients may cut audio anywhere; the session carries bytes across messages."""
    async with live_server(engine()) as server, connect(server.ws_url()) as client:
        await client.next("ready")
        pcm = silence(100) + tone(600, 16000) + silence(600)
        pieces = [pcm[i : i + 333] for i in range(0, len(pcm), 333)]
        for piece in pieces:
            await client.send(piece)
        turn = await client.turn()
        assert events(turn, "transcript")[-1]["final"]
        assert [e["code"] for e in events(client.seen, "error")] == ["odd_length_pcm"]


async def _until(predicate: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_tokens_when_auth_is_on_and_config_hides_the_key() -> None:
    key = "k3y-for-tests-0123456789"
    eng = engine(server={"auth": {"api_key": key}})
    async with live_server(eng) as server, httpx.AsyncClient(base_url=server.http) as http:
        assert (await http.get("/config")).status_code == 401
        shown = await http.get("/config", headers={"Authorization": f"Bearer {key}"})
        assert shown.status_code == 200 and key not in shown.text
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(server.ws_url()):
                pass
        assert refused.value.response.status_code == 401
        assert b"token_required" in refused.value.response.body
        issued = await http.post("/session", headers={"Authorization": f"Bearer {key}"})
        token = issued.json()["token"]
        async with connect(server.ws_url(query=f"token={token}")) as client:
            ready = await client.next("ready")
            await client.send({"type": "text", "text": "hi"})
            assert events(await client.turn(), "reply")
        with pytest.raises(websockets.InvalidStatus) as reused:  # one token, one session
            async with connect(server.ws_url(query=f"token={token}")):
                pass
        assert reused.value.response.status_code == 403
        async with connect(server.ws_url(query=f"token={token}&resume={ready['session_id']}")) as client:
            resumed = await client.next("ready")  # ...but it may resume its own session
            assert resumed["session_id"] == ready["session_id"]


async def test_metrics_expose_turn_histograms_and_transport_counters() -> None:
    eng = engine()
    async with live_server(eng) as server, httpx.AsyncClient(base_url=server.http) as http:
        async with connect(server.ws_url()) as client:
            await client.next("ready")
            await client.send({"type": "text", "text": "hi"})
            await client.turn()
            text = (await http.get("/metrics")).text
    assert "vocable_turns_total 1" in text
    assert 'vocable_voice_to_voice_milliseconds_bucket{le="+Inf"}' in text
    assert "# TYPE vocable_websocket_connections gauge" in text and "vocable_websocket_connections 1" in text
    assert "# TYPE vocable_websocket_connections_total counter" in text
