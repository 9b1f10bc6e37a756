"""The circuit breaker end to end: a chain ``[groq (the stand-in), scripted]`` whose Groq stops answering.

After ``breaker.failures`` turns that each waited for Groq's ``timeout_s``, the breaker opens and turns go
straight to the fallback; ``/health`` and ``/metrics`` say so; after the cooldown (a fake clock) one turn
probes Groq again, which re-opens the breaker while Groq still hangs and closes it once Groq answers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from standins import GroqStandin
from standins.groq_standin import DEFAULT_REPLY
from vendor_support import API_KEY

from vocable import Engine
from vocable.engine.events import ErrorEvent, Reply

PLUGINS = ["vocable.plugins.core", "vocable.testing.plugin", "vocable.providers.groq"]
TIMEOUT_S = 0.6
FAILURES = 2
COOLDOWN_S = 30.0
FALLBACK = "The fallback model answers."


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def config(groq: GroqStandin) -> dict[str, Any]:
    return {
        "transports": {},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence"},
            "stt": {"provider": "scripted"},
            "llm": [
                {"provider": "groq", "api_key": API_KEY, "base_url": groq.url, "request_timeout_s": 10,
                 "timeout_s": TIMEOUT_S, "breaker": {"failures": FAILURES, "cooldown_s": COOLDOWN_S}},
                {"provider": "scripted", "reply": FALLBACK},
            ],
            "tts": {"provider": "scripted"},
        },
        "metrics": [{"provider": "prometheus"}],
    }


@pytest.fixture
async def engine(groq: GroqStandin) -> AsyncIterator[Engine]:
    engine = Engine.from_dict(config(groq), autoload=False, plugins=PLUGINS)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def typed_turn(engine: Engine) -> tuple[str, float]:
    """One typed turn in a session of its own (the breaker is the engine's, shared by all sessions)."""
    async with engine.conversation(pace=False) as conv:
        started = time.monotonic()
        await conv.send_text("What is the weather like?")
        events = await conv.collect_turn(timeout_s=10)
        elapsed = time.monotonic() - started
    assert not [e for e in events if isinstance(e, ErrorEvent)], events
    return "".join(e.text for e in events if isinstance(e, Reply)), elapsed


async def test_a_dead_groq_is_skipped_after_the_breaker_opens_then_probed_after_the_cooldown(
    engine: Engine, groq: GroqStandin
) -> None:
    clock = FakeClock()
    breaker = engine.runtime.llm[0].breaker
    breaker.clock = clock
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=engine.asgi_app()), base_url="http://t")

    async def state() -> str:
        body = (await client.get("/health")).json()
        return body["breakers"]["llm"]["groq"]

    async def metric(name: str) -> float:
        text = (await client.get("/metrics")).text
        line = next(x for x in text.splitlines() if x.startswith(f'vocable_{name}{{kind="llm",provider="groq"}} '))
        return float(line.rsplit(" ", 1)[1])

    async with client:
        assert await state() == "closed" and await metric("breaker_open") == 0
        groq.set_mode("hang")

        waited = []
        for _ in range(FAILURES):  # each of these turns waits for Groq's timeout, then the fallback answers
            reply, elapsed = await typed_turn(engine)
            assert reply == FALLBACK and elapsed >= TIMEOUT_S
            waited.append(elapsed)
        assert groq.attempts == FAILURES
        assert await state() == "open" and await metric("breaker_open") == 1

        reply, skipped = await typed_turn(engine)
        assert reply == FALLBACK and groq.attempts == FAILURES, "Groq was not even asked"
        assert skipped < min(waited) - 0.8 * TIMEOUT_S, f"no wait for Groq's timeout: {skipped:.3f} s vs {waited}"
        assert await metric("breaker_skips_total") == 1

        clock.now += COOLDOWN_S  # the cooldown is over: the next turn probes Groq, which still hangs
        assert await state() == "half_open"
        reply, probed = await typed_turn(engine)
        assert reply == FALLBACK and groq.attempts == FAILURES + 1 and probed >= TIMEOUT_S
        assert await state() == "open"
        reply, _ = await typed_turn(engine)
        assert groq.attempts == FAILURES + 1 and await metric("breaker_skips_total") == 2

        groq.set_mode("normal")  # Groq is back; after the next cooldown the probe succeeds and closes it
        clock.now += COOLDOWN_S
        reply, _ = await typed_turn(engine)
        assert reply == DEFAULT_REPLY and groq.attempts == FAILURES + 2
        assert await state() == "closed" and await metric("breaker_open") == 0
        reply, _ = await typed_turn(engine)
        assert reply == DEFAULT_REPLY and groq.attempts == FAILURES + 3
