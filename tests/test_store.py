"""Persistence: every finished turn lands in SQLite at once and reads back after a restart."""

from __future__ import annotations

import httpx
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

from vocable import Engine
from vocable.engine.events import AudioOut, Interrupted


def engine_with_db(path, **pipeline):
    data = scripted_config(**pipeline)
    data["storage"] = {"url": f"sqlite:///{path}"}
    return Engine.from_dict(data, autoload=False, plugins=SCRIPTED_PLUGINS)


async def test_turns_are_written_and_read_back_after_restart(tmp_path):
    db = tmp_path / "sessions.db"
    engine = engine_with_db(db, llm={"provider": "scripted", "echo": True})
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        session_id = conv.id
        for text in ("first", "second"):
            await conv.send_text(text)
            await conv.collect_turn()
        # written at once, while the session is still open
        live = await engine.store.transcript(session_id)
        assert [t["user_text"] for t in live["turns"]] == ["first", "second"]
    await engine.stop()

    restarted = engine_with_db(db)
    app = restarted.asgi_app()
    await restarted.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get(f"/sessions/{session_id}/transcript")
        assert response.status_code == 200
        data = response.json()
        assert data["end_reason"] == "closed"
        assert [t["reply_text"] for t in data["turns"]] == ["You said: first.", "You said: second."]
        assert data["turns"][0]["metrics"]["llm_ttft_ms"] is not None
        missing = await client.get("/sessions/nope/transcript")
        assert missing.status_code == 404
    await restarted.stop()


async def test_interrupted_turn_is_stored_as_spoken(tmp_path):
    engine = engine_with_db(tmp_path / "s.db", tts={"provider": "scripted", "ms_per_char": 40},
                            llm={"provider": "scripted", "reply": "One two three four five six seven eight nine ten."})
    await engine.start()
    async with engine.conversation(pace=True) as conv:
        await conv.send_text("count")
        await conv.next_event(AudioOut)
        loop_time = __import__("asyncio").get_running_loop().time
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
