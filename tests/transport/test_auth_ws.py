"""Refused before accept: every bad token and foreign origin gets an HTTP error, never a session."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest
import websockets
from wskit import connect, engine, live_server

KEY = "k3y-for-tests-0123456789"


def forged(secret: str, **claims) -> str:
    base = {"jti": "abc", "exp": int(time.time()) + 60, "aud": "vocable-session"}
    return jwt.encode({**base, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize("case", ["missing", "garbage", "forged", "expired", "replayed"])
async def test_bad_tokens_are_refused_before_accept(case: str) -> None:
    eng = engine(server={"auth": {"api_key": KEY}, "allowed_origins": ["https://app.example"]})
    async with live_server(eng) as server, httpx.AsyncClient(base_url=server.http) as http:
        token = (await http.post("/session", headers={"Authorization": f"Bearer {KEY}"})).json()["token"]
        if case == "replayed":
            async with connect(server.ws_url(query=f"token={token}")) as first:
                await first.next("ready")
                await asyncio.sleep(0.05)
        query = {
            "missing": "",
            "garbage": "token=not-a-jwt",
            "forged": "token=" + forged("a-completely-different-secret-of-32-bytes"),
            "expired": "token=" + forged(eng.gate._secret, exp=int(time.time()) - 10),
            "replayed": f"token={token}",
        }[case]
        sessions_before = eng.counters()["sessions_total"]
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(server.ws_url(query=query)):
                pass
        assert refused.value.response.status_code in (401, 403)
        assert eng.counters()["sessions_total"] == sessions_before, "a refused client must not get a session"


async def test_a_foreign_origin_is_refused_before_accept() -> None:
    eng = engine(server={"allowed_origins": ["https://app.example"]})
    async with live_server(eng) as server:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(server.ws_url(), origin="https://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        async with connect(server.ws_url(), origin="https://app.example") as client:
            assert (await client.next("ready"))["type"] == "ready"
        assert eng.counters()["sessions_total"] == 1


async def test_reconnect_inside_and_outside_the_grace_window() -> None:
    eng = engine(server={"resume_grace_s": 0.5}, llm={"provider": "scripted", "echo": True})
    async with live_server(eng) as server:
        async with connect(server.ws_url()) as client:
            ready = await client.next("ready")
            await client.send({"type": "text", "text": "my name is Ada"})
            await client.turn()
            client.ws.transport.abort()
        await asyncio.sleep(0.1)
        async with connect(server.ws_url(query=f"resume={ready['session_id']}")) as client:
            again = await client.next("ready")
            assert again["session_id"] == ready["session_id"] and again["resumed"] is True
            session = eng.sessions[again["session_id"]]
            assert session.memory.messages[0].content == "my name is Ada"
            client.ws.transport.abort()
        await asyncio.sleep(0.8)
        async with connect(server.ws_url(query=f"resume={ready['session_id']}")) as client:
            late = await client.next("ready")
            assert late["session_id"] != ready["session_id"] and late["resumed"] is False
