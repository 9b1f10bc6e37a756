"""Admission: API-key-issued tokens, single use, resume, origins, rate limits; and resumable sessions."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

from vocable import Engine
from vocable.config import ConfigError
from vocable.engine.gate import Gate, Refused
from vocable.engine.ledger import SQLiteLedger, create_shared_ledger

KEY = "test-api-key-0123456789"


def engine_with(server: dict) -> Engine:
    data = scripted_config()
    data["server"] = server
    return Engine.from_dict(data, autoload=False, plugins=SCRIPTED_PLUGINS)


async def test_post_session_needs_the_api_key_and_gives_a_token():
    engine = engine_with({"auth": {"api_key": KEY, "token_ttl_s": 60}})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=engine.asgi_app()), base_url="http://t") as client:
        assert (await client.post("/session")).status_code == 401
        assert (await client.post("/session", headers={"Authorization": "Bearer wrong"})).status_code == 401
        response = await client.post("/session", headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 200
        body = response.json()
        assert body["expires_in"] == 60 and body["token"].count(".") == 2
        assert (await client.post("/session/dashboard-token", headers={"Origin": "http://t"})).status_code == 401
        config = (await client.get("/config", headers={"Authorization": f"Bearer {KEY}"})).json()
        assert KEY not in str(config) and config["server"]["auth"]["api_key"]


@pytest.fixture(params=["local", "sqlite"])
def ledger(request, tmp_path):
    """Every admission rule holds for one process (dicts) and for ``--workers`` (the shared SQLite file)."""
    if request.param == "local":
        yield None
        return
    path = str(tmp_path / "ledger.sqlite3")
    create_shared_ledger(path)
    shared = SQLiteLedger(path)
    yield shared
    asyncio.run(shared.aclose())


async def test_tokens_are_checked_before_anything_else(ledger):
    gate = Gate(engine_with({"auth": {"api_key": KEY}}).config.server, ledger)
    admit = dict(origin=None, host=None, client="1.2.3.4")
    with pytest.raises(Refused) as info:
        await gate.admit(token=None, **admit)
    assert info.value.code == "token_required" and info.value.close_code == 1008
    forged = jwt.encode({"jti": "x", "exp": int(time.time()) + 60, "aud": "vocable-session"}, "another-secret-key-that-is-32-bytes-long")
    with pytest.raises(Refused) as info:
        await gate.admit(token=forged, **admit)
    assert info.value.code == "token_invalid"
    expired = jwt.encode({"jti": "x", "exp": int(time.time()) - 5, "aud": "vocable-session"}, gate._secret)
    with pytest.raises(Refused) as info:
        await gate.admit(token=expired, **admit)
    assert info.value.code == "token_expired"
    token = gate.issue()["token"]
    first = await gate.admit(token=token, **admit)
    with pytest.raises(Refused) as info:  # claimed at once: a racing second connection loses
        await gate.admit(token=token, **admit)
    assert info.value.code == "token_used"
    await gate.bind(first, "ses_1")
    with pytest.raises(Refused) as info:
        await gate.admit(token=token, **admit)
    assert info.value.code == "token_used"
    with pytest.raises(Refused) as info:  # bound, but its session is not parked: no second live session
        await gate.admit(token=token, resume_session_id="ses_1", **admit)
    assert info.value.code == "token_used"
    await gate.ledger.park("ses_1", [], time.time() + 30)  # its connection dropped
    resumed = await gate.admit(token=token, resume_session_id="ses_1", **admit)
    assert resumed.resume_session_id == "ses_1" and resumed.memory == []
    with pytest.raises(Refused):  # taken: the same token cannot resume it twice
        await gate.admit(token=token, resume_session_id="ses_1", **admit)
    with pytest.raises(Refused):
        await gate.admit(token=token, resume_session_id="ses_other", **admit)
    fresh = gate.issue()["token"]
    unused = await gate.admit(token=fresh, resume_session_id="ses_1", **admit)
    assert unused.resume_session_id is None  # a fresh token never takes over an existing session
    await gate.release(unused)  # its session did not open (say, the server was full): the token still works
    assert (await gate.admit(token=fresh, **admit)).token_id == unused.token_id


async def test_origin_allow_list_and_rate_limit(ledger):
    server = engine_with({"allowed_origins": ["https://app.example", "same-origin"], "rate_limit_per_minute": 3})
    gate = Gate(server.config.server, ledger)
    gate.check_origin("https://app.example", "voice.example")
    gate.check_origin("http://voice.example", "voice.example")
    with pytest.raises(Refused) as info:
        gate.check_origin("https://evil.example", "voice.example")
    assert info.value.status == 403
    for _ in range(3):
        await gate.check_rate("9.9.9.9")
    with pytest.raises(Refused) as info:
        await gate.check_rate("9.9.9.9")
    assert info.value.status == 429
    await gate.check_rate("8.8.8.8")


def test_short_api_key_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        engine_with({"auth": {"api_key": "short"}})
    assert "server.auth.api_key" in dict(info.value.errors)
    assert "short" not in str(info.value)


async def _dropped_after_one_turn(engine: Engine, text: str):
    session = await engine.open_session(transport="test", pace=False)
    await session.send_text(text)
    while session.replies.task is not None and not session.replies.task.done():
        await session.replies.task
    await engine.close_session(session, "client_gone", resumable=True)
    return session


async def test_a_dropped_session_resumes_inside_the_grace_window_only():
    from vocable.engine.gate import Admission

    engine = engine_with({"resume_grace_s": 0.5})
    await engine.start()
    session = await _dropped_after_one_turn(engine, "remember the number seven")
    again = await engine.open_session(transport="test", admission=Admission(None, session.id))
    assert again.id == session.id and again.resumed
    assert again.memory.messages[0].content == "remember the number seven"
    await engine.close_session(again, "client_gone", resumable=True)
    time.sleep(0.6)
    late = await engine.open_session(transport="test", admission=Admission(None, session.id))
    assert late.id != session.id and not late.resumed
    await engine.close_session(late)
    await engine.stop()


async def test_a_resume_refused_by_a_full_server_keeps_its_conversation():
    from vocable.engine.engine import CapacityError

    engine = engine_with({"resume_grace_s": 30, "max_sessions": 1})
    await engine.start()
    session = await _dropped_after_one_turn(engine, "remember the number seven")
    other = await engine.open_session(transport="test", pace=False)  # the only slot is taken
    admit = dict(token=None, origin=None, host=None, client="1.2.3.4", resume_session_id=session.id)
    admission = await engine.gate.admit(**admit)
    assert admission.memory, "the parked conversation was taken for this connection"
    with pytest.raises(CapacityError):
        await engine.open_session(transport="test", admission=admission)
    await engine.close_session(other)
    again = await engine.open_session(transport="test", admission=await engine.gate.admit(**admit))
    assert again.id == session.id and again.resumed
    assert again.memory.messages[0].content == "remember the number seven"
    await engine.close_session(again)
    await engine.stop()
