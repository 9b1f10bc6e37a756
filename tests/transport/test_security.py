"""Issue 22, through the real ``vocable serve`` process: what a hostile but careful client tried, and what holds.

Each test here failed on the server before the fix: one token opened unlimited sessions through ``resume``,
transcripts and session ids were readable with auth on, a lone surrogate in a typed turn killed the session,
a password in a provider's ``base_url`` reached the start-up log, and a typed-turn flood became one LLM
request per message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from wskit import connect, events

from vocable.testing.scripted import scripted_config
from vocable.testing.server import ServerProcess, free_port

KEY = "security-api-key-0123456789"
METRICS_TOKEN = "scrape-only-token-0123456789"
PASSWORD = "Pa55w0rd-in-the-url"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _serve(tmp: Path, **server: Any) -> ServerProcess:
    data = scripted_config(llm={"provider": "scripted", "echo": True})
    data["server"] = {"auth": {"api_key": KEY}, "resume_grace_s": 30, "rate_limit_per_minute": 1000,
                      "metrics_token": METRICS_TOKEN, "log_format": "json", **server}
    data["transports"] = {"websocket": {}}
    data["plugins"] = {"modules": ["vocable.testing.plugin"]}
    data["storage"] = {"url": f"sqlite:///{tmp / 'turns.db'}"}
    path = tmp / "vocable.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return ServerProcess(path, env={"NO_COLOR": "1"})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with _serve(tmp_path_factory.mktemp("security"), max_turns_per_minute=3) as process:
        yield process


async def _token(http: httpx.AsyncClient) -> str:
    response = await http.post("/session", headers=AUTH)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def _refused_status(url: str) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url):
            pass
    return int(refused.value.response.status_code)


async def _wait_until(check: Any, what: str, timeout_s: float = 10.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while not (value := await check()):
            await asyncio.sleep(0.05)
    return value


# ---------------------------------------------------------------------------------------- 1. resume tokens


async def test_a_used_token_resumes_only_its_own_parked_conversation(server: ServerProcess) -> None:
    ws = f"{server.ws_url}/ws/audio"
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await _token(http)

        async def live() -> int:
            return len((await http.get("/sessions", headers=AUTH)).json()["sessions"])

        async with connect(f"{ws}?token={token}") as first:
            session_id = (await first.next("ready"))["session_id"]
            for _ in range(3):  # while it is live: no second session from the same token
                assert await _refused_status(f"{ws}?token={token}&resume={session_id}") == 403
            assert await live() == 1
            await first.send({"type": "text", "text": "remember the number 42"})
            await first.turn()
            await first.send({"type": "end"})
            await first.closed()
        await _wait_until(lambda: _zero(live), "the session ended")
        # ended cleanly: nothing is parked, so the used token opens nothing any more
        assert await _refused_status(f"{ws}?token={token}&resume={session_id}") == 403
        assert await live() == 0

        # a dropped connection parks its conversation: the same token resumes it, once
        other = await _token(http)
        async with connect(f"{ws}?token={other}") as second:
            dropped_id = (await second.next("ready"))["session_id"]
            await second.send({"type": "text", "text": "my name is Ada"})
            await second.turn()
            second.ws.transport.abort()
        await _wait_until(lambda: _zero(live), "the dropped session ended")
        async with connect(f"{ws}?token={other}&resume={dropped_id}") as resumed:
            ready = await resumed.next("ready")
            assert ready["session_id"] == dropped_id and ready["resumed"] is True
            assert await _refused_status(f"{ws}?token={other}&resume={dropped_id}") == 403
            assert await live() == 1
            # a token may not resume somebody else's parked conversation either
            assert await _refused_status(f"{ws}?token={token}&resume={dropped_id}") == 403


async def _zero(count: Any) -> bool:
    return await count() == 0


# ---------------------------------------------------------------------------------------- 2. operator reads


async def test_operator_routes_need_the_api_key_and_transcripts_their_owner(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await _token(http)
        async with connect(f"{server.ws_url}/ws/audio?token={token}") as client:
            session_id = (await client.next("ready"))["session_id"]
            await client.send({"type": "text", "text": "my card PIN is 4921"})
            await client.turn()
            for path in ("/sessions", f"/sessions/{session_id}/transcript", "/config", "/metrics"):
                for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": KEY}):
                    response = await http.get(path, headers=headers)
                    assert response.status_code == 401, (path, headers, response.text)
                    assert "4921" not in response.text and session_id not in response.text
                assert (await http.get(path, headers=AUTH)).status_code == 200, path
            listed = (await http.get("/sessions", headers=AUTH)).json()["sessions"]
            assert [s["id"] for s in listed] == [session_id]
            # the token that opened a conversation reads that conversation, and nothing else
            own = await http.get(f"/sessions/{session_id}/transcript", headers={"Authorization": f"Bearer {token}"})
            assert own.status_code == 200 and "4921" in own.text
            for path in ("/sessions", "/config", "/metrics"):
                assert (await http.get(path, headers={"Authorization": f"Bearer {token}"})).status_code == 401
        other = await _token(http)
        async with connect(f"{server.ws_url}/ws/audio?token={other}") as stranger:
            await stranger.next("ready")
            foreign = await http.get(f"/sessions/{session_id}/transcript", headers={"Authorization": f"Bearer {other}"})
            assert foreign.status_code == 401 and "4921" not in foreign.text
        # Prometheus: the scrape token reads /metrics and nothing else
        scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        metrics = await http.get("/metrics", headers=scrape)
        assert metrics.status_code == 200 and "vocable_sessions_total" in metrics.text
        assert (await http.get("/sessions", headers=scrape)).status_code == 401
        assert (await http.get("/config", headers=scrape)).status_code == 401
        assert (await http.get("/health")).status_code == 200  # load balancers need no key
        # ids from a client are checked at the edge
        assert (await http.get("/sessions/..%2F..%2Fetc/transcript", headers=AUTH)).status_code in (400, 404)


# ---------------------------------------------------------------------------------------- 3. client text


async def test_a_lone_surrogate_is_an_input_error_not_a_dead_session(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await _token(http)
    async with connect(f"{server.ws_url}/ws/audio?token={token}") as client:
        await client.next("ready")
        for raw in ('{"type":"text","text":"\\ud800"}', '{"type":"text","text":"ok \\udfff then"}',
                    '{"type":"\\ud800"}', '{"type":"start","sample_rate":16000,"x":{"\\ud83d":1}}'):
            await client.ws.send(raw)
            error = await client.next("error")
            assert error["code"] == "invalid_field" and not error.get("fatal"), error
        await client.send({"type": "text", "text": "still here \U0001F600"})
        reply = "".join(e["text"] for e in events(await client.turn(), "reply"))
        assert "still here" in reply


async def test_hostile_query_parameters_are_refused_cleanly(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await _token(http)
        for query in (f"token={token}&resume=%ED%A0%80", f"token={token}&resume=" + "a" * 200,
                      f"token={token}&resume=..%2F..", "token=%ED%A0%80"):
            status = await _refused_status(f"{server.ws_url}/ws/audio?{query}")
            assert status in (400, 401, 403), (query, status)
        async with connect(f"{server.ws_url}/ws/audio?token={token}&sample_rate=%ED%A0%80") as client:
            error = await client.next("error")
            assert error["code"] == "invalid_field" and error["fatal"]
            assert (await client.closed())[0] == 1008
        # the token was not spent by the refusals above
        async with connect(f"{server.ws_url}/ws/audio?token={token}") as client:
            assert (await client.next("ready"))["type"] == "ready"
        assert (await http.get("/health")).status_code == 200  # and the server is fine


# ---------------------------------------------------------------------------------------- weak spots


async def test_a_typed_turn_flood_is_rate_limited_per_session(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await _token(http)
    async with connect(f"{server.ws_url}/ws/audio?token={token}") as client:
        await client.next("ready")
        for n in range(6):
            await client.send({"type": "text", "text": f"flood {n}"})
        errors: list[dict[str, Any]] = []
        finals: list[str] = []
        async with asyncio.timeout(10):
            while len(errors) < 3 or len(finals) < 3:
                event = await client.recv()
                if isinstance(event, dict) and event["type"] == "error":
                    errors.append(event)
                elif isinstance(event, dict) and event["type"] == "transcript" and event["final"]:
                    finals.append(event["text"])
        assert all(e["code"] == "rate_limited" and not e.get("fatal") for e in errors), errors
        assert finals == ["flood 0", "flood 1", "flood 2"], "the first three became turns, the rest did not"


def test_a_password_in_a_provider_url_never_reaches_the_log_or_config(tmp_path: Path) -> None:
    data = scripted_config()
    data["pipeline"]["llm"] = [
        {"provider": "groq", "api_key": "gsk-not-a-real-key-0123", "model": "m", "timeout_s": 3,
         "request_timeout_s": 7, "base_url": f"http://user:{PASSWORD}@127.0.0.1:{free_port()}/openai/v1"},
        {"provider": "scripted"},
    ]
    data["pipeline"]["stt"] = {"provider": "deepgram", "api_key": "dg-not-a-real-key-0123",
                               "base_url": f"http://dg:{PASSWORD}x@127.0.0.1:{free_port()}"}
    data["pipeline"]["tts"] = {"provider": "elevenlabs", "api_key": "el-not-a-real-key-0123", "voice_id": "v",
                               "mode": "http", "base_url": f"http://el:{PASSWORD}y@127.0.0.1:{free_port()}"}
    data["server"] = {"log_level": "debug"}
    data["transports"] = {"websocket": {}}
    data["plugins"] = {"modules": ["vocable.testing.plugin"]}
    path = tmp_path / "vocable.yaml"
    path.write_text(json.dumps(data))
    with ServerProcess(path, env={"NO_COLOR": "1"}) as process:
        config = process.get_json("/config")
        output = process.output()
    assert "groq.ready" in output and "deepgram.stt_ready" in output and "elevenlabs.ready" in output
    assert PASSWORD not in output, [line for line in output.splitlines() if PASSWORD in line]
    assert "127.0.0.1" in output  # the URL is logged, its password is not
    assert PASSWORD not in json.dumps(config)
    groq = config["pipeline"]["llm"][0]
    assert groq["timeout_s"] == 3 and groq["request_timeout_s"] == 7, "the timeouts in force, each under its name"
