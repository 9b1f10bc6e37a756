"""``state:``: a Redis URL is checked when the config loads, its password never shows, and the driver is optional."""

from __future__ import annotations

import sys

import httpx
import pytest

from vocable import Engine
from vocable.config.loader import ConfigError
from vocable.engine.ledger import LocalLedger
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

PASSWORD = "r3dis-Passw0rd-x"


def engine_with_state(state: dict) -> Engine:
    data = scripted_config()
    data["state"] = state
    return Engine.from_dict(data, autoload=False, plugins=SCRIPTED_PLUGINS)


def test_an_unsupported_scheme_is_refused_naming_state_url_without_its_password() -> None:
    for url in (f"mysql://u:{PASSWORD}@db/0", f"u:{PASSWORD}@db/0"):
        with pytest.raises(ConfigError) as refused:
            engine_with_state({"url": url})
        assert [path for path, _ in refused.value.errors] == ["state.url"]
        assert "redis://" in str(refused.value) and PASSWORD not in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        engine_with_state({"url": "redis://h/0", "prefix": "no spaces"})
    assert [path for path, _ in refused.value.errors] == ["state.prefix"]


def test_no_url_keeps_the_state_per_server() -> None:
    for state in ({}, {"url": ""}, {"url": None}):
        engine = engine_with_state(state)
        assert isinstance(engine.ledger, LocalLedger) and engine.worker_id is None


async def test_a_redis_url_makes_a_shared_ledger_and_its_password_is_redacted() -> None:
    pytest.importorskip("redis")
    engine = engine_with_state({"url": f"redis://:{PASSWORD}@127.0.0.1:1/0", "prefix": "c1:"})
    assert type(engine.ledger).__name__ == "RedisLedger" and engine.ledger.shared
    assert engine.worker_id and engine.server_id == engine.worker_id  # a node of the cluster, named host-pid
    assert PASSWORD not in repr(engine.ledger)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=engine.asgi_app()), base_url="http://t") as client:
        config = (await client.get("/config")).json()
    assert config["state"]["url"] == "redis://:**********@127.0.0.1:1/0"
    assert config["state"]["prefix"] == "c1:"
    await engine.ledger.aclose()


def test_a_missing_driver_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigError) as refused:
        engine_with_state({"url": f"redis://:{PASSWORD}@127.0.0.1:6379/0"})
    message = str(refused.value)
    assert "state.url" in message and "pip install 'vocable[redis]'" in message and PASSWORD not in message
