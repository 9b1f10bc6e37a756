"""/health answers 503 while models load, then 200; a provider that fails to load is reported, not hidden."""

from __future__ import annotations

import asyncio

import httpx

from vocable import Engine, hookimpl
from vocable.providers.base import LLM, TextDelta
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config


class SlowLLM(LLM):
    name = "slow-to-load"
    gate: asyncio.Event
    fail = False

    async def start(self) -> None:
        await type(self).gate.wait()
        if type(self).fail:
            raise RuntimeError("model file is corrupt")

    async def stream(self, messages, *, tools=()):
        yield TextDelta("ready")


class Plugin:
    @hookimpl
    def register_providers(self, register):
        register(SlowLLM)


async def health(client: httpx.AsyncClient) -> tuple[int, dict]:
    response = await client.get("/health")
    return response.status_code, response.json()


async def test_health_is_503_until_the_models_are_loaded():
    SlowLLM.gate, SlowLLM.fail = asyncio.Event(), False
    engine = Engine.from_dict(scripted_config(llm={"provider": "slow-to-load"}), autoload=False,
                              plugins=[*SCRIPTED_PLUGINS, Plugin()])
    app = engine.asgi_app()
    engine.start_in_background()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        status, body = await health(client)
        assert status == 503 and body["status"] == "loading"
        SlowLLM.gate.set()
        await engine.wait_ready(5)
        status, body = await health(client)
        assert status == 200 and body["status"] == "ok" and body["providers"]["llm"] == ["slow-to-load"]
    await engine.stop()


async def test_a_provider_that_fails_to_load_keeps_health_at_503_with_the_reason():
    SlowLLM.gate, SlowLLM.fail = asyncio.Event(), True
    SlowLLM.gate.set()
    engine = Engine.from_dict(scripted_config(llm={"provider": "slow-to-load"}), autoload=False,
                              plugins=[*SCRIPTED_PLUGINS, Plugin()])
    app = engine.asgi_app()
    await engine.start_in_background()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        status, body = await health(client)
    assert status == 503 and body["status"] == "error" and "model file is corrupt" in body["error"]
    await engine.stop()
