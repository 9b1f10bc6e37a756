"""Phone sessions are sessions like any other: session and rate limits, persistence, /sessions; and the real
``vocable serve`` finds the transport through its entry point and never logs the auth token."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets
from phone_standins import RestStandIn
from phonekit import AUTH_TOKEN, PLUGINS, Recorder, phone_config, spoken, twilio_call, twilio_signature, wait_for
from wskit import live_server

from vocable import Engine
from vocable.testing.server import ServerProcess


async def test_max_sessions_refuses_the_next_call_and_rate_limits_apply() -> None:
    config = phone_config()
    config["server"].update(max_sessions=1, rate_limit_per_minute=2)
    engine = Engine.from_dict(config, autoload=False, plugins=PLUGINS)
    async with live_server(engine) as server, twilio_call(server) as first:
        await first.begin()
        await wait_for(lambda: engine.sessions)
        async with twilio_call(server) as second:  # the second of two allowed a minute: admitted, then no room
            await second.begin()
            await asyncio.wait_for(second.closed.wait(), 5)
            assert second.ws.close_code == 1013 and second.ws.close_reason == "capacity"
        with pytest.raises(websockets.InvalidStatus) as refused:  # the third within the minute
            async with twilio_call(server):
                pass
        assert refused.value.response.status_code == 429
        assert len(engine.sessions) == 1
        await first.hang_up()


async def test_phone_turns_are_persisted(tmp_path: Path) -> None:
    recorder = Recorder()
    config = phone_config()
    config["storage"] = {"url": f"sqlite:///{tmp_path / 'calls.db'}"}
    engine = Engine.from_dict(config, autoload=False, plugins=[*PLUGINS, recorder])
    async with live_server(engine) as server, twilio_call(server) as call:
        await call.begin()
        await call.speak(spoken())
        await wait_for(lambda: recorder.turns, timeout_s=15)
        await call.hang_up()
        await wait_for(lambda: not engine.sessions)
        session_id = recorder.turns[0].session_id
        async with httpx.AsyncClient(base_url=server.http) as http:
            transcript = (await http.get(f"/sessions/{session_id}/transcript")).json()
    assert "what is the weather today" in json.dumps(transcript)


@pytest.mark.slow
async def test_vocable_serve_runs_twilio_from_its_entry_point_and_never_logs_the_token(tmp_path: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "vocable.cli", "plugins"], capture_output=True, text=True,
                            check=True).stdout
    assert all(name in listed for name in ("twilio", "telnyx", "plivo"))
    async with RestStandIn(lambda request: (401, {"code": 20003, "message": "Authenticate"})) as rest:
        config = phone_config(transport={"auth_token": "${TWILIO_AUTH_TOKEN}", "api_base_url": rest.url,
                                         "account_sid": "AC" + "0" * 32},
                              llm={"provider": "scripted", "tool_call": "end_call", "reply": "Bye."})
        config["server"]["log_level"] = "debug"
        config["plugins"] = {"modules": ["vocable.testing.plugin"]}
        path = tmp_path / "phone.yaml"
        path.write_text(json.dumps(config))
        env = {**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
        env.pop("VOCABLE_DISABLE_PLUGIN_AUTOLOAD", None)
        server = ServerProcess(path, env=env)
        await asyncio.to_thread(server.start)
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert AUTH_TOKEN not in (await http.get("/config")).text
                form = {"CallSid": "CA" + "b" * 32, "From": "+14155550123"}
                good = await http.post("/twilio/voice", data=form, headers={
                    "X-Twilio-Signature": twilio_signature("https://voice.example.com/twilio/voice", form)})
                bad = await http.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": "x"})
            assert good.status_code == 200 and bad.status_code == 403
            async with twilio_call(server) as call:  # end_call: the REST stand-in refuses the hang-up
                await call.begin()
                await call.speak(spoken())
                await asyncio.wait_for(call.closed.wait(), 20)
        finally:
            await asyncio.to_thread(server.stop)
        output = server.output()
    assert rest.requests, output[-3000:]
    assert "phone_hangup_failed" in output and "HTTP 401" in output
    assert AUTH_TOKEN not in output


def test_a_missing_sdk_is_an_install_hint_when_the_config_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from vocable.config.loader import ConfigError
    from vocable.transports.phone.twilio import TwilioTransport

    monkeypatch.setattr(TwilioTransport, "requires", ("twilio_sdk_that_is_not_installed",))
    with pytest.raises(ConfigError) as refused:
        Engine.from_dict(phone_config(), autoload=False, plugins=PLUGINS)
    assert "transports.twilio" in str(refused.value) and "pip install 'vocable[phone]'" in str(refused.value)
