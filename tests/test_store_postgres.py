"""Persistence on PostgreSQL: the behaviours of test_store.py, a SIGKILL mid-conversation, and no password leaks.

A throwaway PostgreSQL server runs on 127.0.0.1 for these tests (see postgres_cluster.py); they are skipped when
its binaries or the psycopg driver are missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from urllib.parse import quote

import httpx
import pytest
import websockets
import yaml
from structlog.testing import capture_logs

from vocable import Engine
from vocable.config.loader import ConfigError
from vocable.engine.events import AudioOut, Interrupted
from vocable.engine.store import open_store
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config
from vocable.testing.server import ServerProcess

pytest_plugins = ["postgres_cluster"]  # the postgres_cluster and postgres_db fixtures, from the file beside this


def secret_forms(cluster) -> tuple[str, str]:
    """The test role's password, as written and as percent-encoded in the URL."""
    return cluster.password, quote(cluster.password, safe="")


def engine_with_db(url: str, **pipeline) -> Engine:
    data = scripted_config(**pipeline)
    data["storage"] = {"url": url}
    return Engine.from_dict(data, autoload=False, plugins=SCRIPTED_PLUGINS)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_turns_are_written_and_read_back_after_restart(postgres_cluster, postgres_db, scheme):
    url = postgres_cluster.url(postgres_db, scheme=scheme)
    engine = engine_with_db(url, llm={"provider": "scripted", "echo": True})
    assert type(engine.store).__name__ == "PostgresTurnStore"
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        session_id = conv.id
        for text in ("first", "second"):
            await conv.send_text(text)
            await conv.collect_turn()
        # written at once, while the session is still open: committed, so another connection sees it
        live = await engine.store.transcript(session_id)
        assert [t["user_text"] for t in live["turns"]] == ["first", "second"]
        rows = postgres_cluster.query(
            postgres_db, "SELECT seq, user_text FROM vocable_turns WHERE session_id = %s ORDER BY seq", session_id)
        assert rows == [(0, "first"), (1, "second")]
    await engine.stop()

    restarted = engine_with_db(url)
    app = restarted.asgi_app()
    await restarted.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get(f"/sessions/{session_id}/transcript")
        assert response.status_code == 200
        data = response.json()
        assert data["session_id"] == session_id
        assert data["end_reason"] == "closed"
        assert data["ended_at"] >= data["started_at"] > 0
        assert [t["reply_text"] for t in data["turns"]] == ["You said: first.", "You said: second."]
        assert [t["interrupted"] for t in data["turns"]] == [False, False]
        assert data["turns"][0]["metrics"]["llm_ttft_ms"] is not None
        missing = await client.get("/sessions/nope/transcript")
        assert missing.status_code == 404
    await restarted.stop()


async def test_interrupted_turn_is_stored_as_spoken(postgres_cluster, postgres_db):
    engine = engine_with_db(postgres_cluster.url(postgres_db), tts={"provider": "scripted", "ms_per_char": 40},
                            llm={"provider": "scripted", "reply": "One two three four five six seven eight nine ten."})
    await engine.start()
    async with engine.conversation(pace=True) as conv:
        await conv.send_text("count")
        await conv.next_event(AudioOut)
        loop_time = asyncio.get_running_loop().time
        until = loop_time() + 0.7
        while loop_time() < until:
            await conv.session.events.get()
        await conv.interrupt()
        await conv.next_event(Interrupted)
        data = await engine.store.transcript(conv.id)
    turn = data["turns"][0]
    assert turn["interrupted"] is True
    assert 0 < len(turn["reply_text"]) < len(turn["full_reply_text"])
    await engine.stop()


async def test_a_dropped_database_connection_loses_no_later_turn(postgres_cluster, postgres_db):
    engine = engine_with_db(postgres_cluster.url(postgres_db), llm={"provider": "scripted", "echo": True})
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        await conv.send_text("before")
        await conv.collect_turn()
        killed = postgres_cluster.query(
            postgres_db,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
            "vocable_test", postgres_db,
        )
        assert killed and all(ok for (ok,) in killed)  # the pool's connections are gone, as after a DB restart
        await conv.send_text("after")
        await conv.collect_turn()
        data = await engine.store.transcript(conv.id)
    assert [t["user_text"] for t in data["turns"]] == ["before", "after"]
    await engine.stop()


def test_sigkill_mid_conversation_keeps_every_finished_turn(postgres_cluster, postgres_db, tmp_path):
    data = scripted_config(llm={"provider": "scripted", "echo": True, "token_delay_ms": 40},
                           tts={"provider": "scripted", "ms_per_char": 30})
    data["transports"] = {"websocket": {}}
    data["storage"] = {"url": postgres_cluster.url(postgres_db)}
    data["server"] = {"log_level": "debug"}
    data["plugins"] = {"autoload": False, "modules": ["vocable.plugins.core", "vocable.testing.plugin",
                                                      "vocable.transports.websocket"]}
    path = tmp_path / "vocable.yaml"
    path.write_text(yaml.safe_dump(data))

    async def next_event(ws, kind: str) -> dict:
        async with asyncio.timeout(20):
            while True:
                raw = await ws.recv()
                if isinstance(raw, str) and (message := json.loads(raw))["type"] == kind:
                    return message

    async def talk(server: ServerProcess) -> str:
        async with websockets.connect(f"{server.ws_url}/ws/audio", open_timeout=10, max_size=None,
                                      proxy=None) as ws:
            ready = await next_event(ws, "ready")
            for text in ("first question", "second question"):
                await ws.send(json.dumps({"type": "text", "text": text}))
                await next_event(ws, "metrics")  # the turn's last event, sent after its write
            await ws.send(json.dumps({"type": "text", "text": "third question, cut off by the crash"}))
            await next_event(ws, "reply")
            server.kill()  # SIGKILL in the middle of the third reply: no shutdown code runs
            return ready["session_id"]

    server = ServerProcess(path).start()
    try:
        session_id = asyncio.run(talk(server))
    finally:
        server.stop()
    with ServerProcess(path) as restarted:
        transcript = restarted.get_json(f"/sessions/{session_id}/transcript")
        config_text = json.dumps(restarted.get_json("/config"))
    turns = transcript["turns"]
    assert [t["user_text"] for t in turns] == ["first question", "second question"]
    assert [t["reply_text"] for t in turns] == ["You said: first question.", "You said: second question."]
    assert transcript["ended_at"] is None  # it never ended cleanly, and nothing pretends it did
    for text in (server.output(), restarted.output(), config_text):
        assert not any(secret in text for secret in secret_forms(postgres_cluster))


async def test_the_password_never_shows_in_config_logs_or_errors(postgres_cluster, postgres_db, caplog):
    caplog.set_level(logging.DEBUG)
    url = postgres_cluster.url(postgres_db)
    wrong = "wrong-Passw0rd"
    wrong_url = postgres_cluster.url(postgres_db, password=wrong)
    seen: list[str] = []
    with capture_logs() as logs:
        engine = engine_with_db(url, llm={"provider": "scripted", "echo": True})
        app = engine.asgi_app()
        await engine.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            config = (await client.get("/config")).json()
            assert config["storage"]["url"] == (
                f"postgresql://{'vocable_test'}:**********@127.0.0.1:{postgres_cluster.port}/{postgres_db}")
            async with engine.conversation(pace=False) as conv:
                await conv.send_text("hello")
                await conv.collect_turn()
            seen.append(json.dumps(config))
            seen.append((await client.get(f"/sessions/{conv.id}/transcript")).text)
        await engine.stop()

        bad = engine_with_db(wrong_url)
        bad_app = bad.asgi_app()
        with pytest.raises(RuntimeError) as failed:
            await bad.start()
        assert "password authentication failed" in str(failed.value)
        assert f"127.0.0.1:{postgres_cluster.port}/{postgres_db}" in str(failed.value)  # says which database
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bad_app), base_url="http://test") as client:
            health = await client.get("/health")
            assert health.status_code == 503
            seen.append(health.text)
        await bad.stop()
        seen += [str(failed.value), repr(failed.value), repr(bad.store), bad.load_error or ""]

    with pytest.raises(ConfigError) as refused:
        engine_with_db(url.replace("postgresql://", "mysql://"))
    assert "storage.url" in str(refused.value)
    seen.append(str(refused.value))

    seen += [json.dumps(logs, default=str), caplog.text]
    everything = "\n".join(seen)
    assert "providers_failed_to_load" in everything  # the failure was logged, and the log is in what we searched
    for secret in (*secret_forms(postgres_cluster), wrong):
        assert secret not in everything


def test_an_unsupported_scheme_is_refused_at_load_time_naming_storage_url():
    for url in ("mysql://user:hunter2hunter2@db/x", "user:hunter2hunter2@db/x"):
        data = scripted_config()
        data["storage"] = {"url": url}
        with pytest.raises(ConfigError) as refused:
            Engine.from_dict(data, autoload=False, plugins=SCRIPTED_PLUGINS)
        assert [path for path, _ in refused.value.errors] == ["storage.url"]
        assert "postgresql://" in str(refused.value) and "hunter2hunter2" not in str(refused.value)
    with pytest.raises(ValueError, match="storage.url"):
        open_store("mysql://db/x")


def test_a_missing_driver_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails, as when it is not installed
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    data = scripted_config()
    data["storage"] = {"url": "postgresql://vocable:hunter2hunter2@127.0.0.1:5432/vocable"}
    with pytest.raises(ConfigError) as refused:
        Engine.from_dict(data, autoload=False, plugins=SCRIPTED_PLUGINS)
    message = str(refused.value)
    assert "storage.url" in message and "pip install 'vocable[postgres]'" in message
    assert "hunter2hunter2" not in message
