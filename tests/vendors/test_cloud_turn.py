"""Whole turns through the engine with all three hosted providers pointed at their stand-ins (in-process).

The provider tests prove each SDK against its wire protocol; these prove the engine can use them together:
Deepgram's transcript ends the turn, Groq's deltas reach the client as they stream, ElevenLabs' websocket
audio comes back, usage lands in the turn metrics, and a failing Groq falls back to the next LLM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from standins import DeepgramStandin, ElevenLabsStandin, GroqStandin
from standins.deepgram_standin import SCRIPT
from standins.groq_standin import DEFAULT_REPLY
from vendor_support import API_KEY, frames, silence, speech

from vocable import Engine
from vocable.engine.events import AudioOut, MetricsEvent, Reply, Transcript

PLUGINS = [
    "vocable.plugins.core",
    "vocable.testing.plugin",
    "vocable.providers.deepgram",
    "vocable.providers.groq",
    "vocable.providers.elevenlabs",
]


def cloud_config(deepgram: DeepgramStandin, groq: GroqStandin, elevenlabs: ElevenLabsStandin) -> dict[str, Any]:
    fast = {"api_key": API_KEY, "timeout_s": 2.0, "retry_delay_s": 0.01}
    return {
        "transports": {},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence", "hangover_ms": 300},
            "stt": {"provider": "deepgram", "base_url": deepgram.url, **fast},
            "llm": [
                {"provider": "groq", "base_url": groq.url, "retries": 1, **fast},
                {"provider": "scripted", "reply": "The fallback model answers."},
            ],
            "tts": {
                "provider": "elevenlabs",
                "base_url": elevenlabs.url,
                "voice_id": "v1",
                "output_format": "pcm_16000",
                **fast,
            },
        },
        "metrics": [{"provider": "log"}],
    }


@pytest.fixture
async def engine(deepgram: DeepgramStandin, groq: GroqStandin, elevenlabs: ElevenLabsStandin) -> AsyncIterator[Engine]:
    engine = Engine.from_dict(cloud_config(deepgram, groq, elevenlabs), autoload=False, plugins=PLUGINS)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def spoken_turn(engine: Engine) -> list[Any]:
    async with engine.conversation(pace=False) as conv:
        for frame in frames(silence(100) + speech(1000) + silence(800)):
            await conv.send_audio(frame)
        return await conv.collect_turn(timeout_s=15)


async def test_spoken_turn_through_all_three_vendors(
    engine: Engine, deepgram: DeepgramStandin, groq: GroqStandin, elevenlabs: ElevenLabsStandin
) -> None:
    events = await spoken_turn(engine)
    finals = [e for e in events if isinstance(e, Transcript) and e.final]
    assert [e.text for e in finals] == [" ".join(SCRIPT[:5])]
    assert any(isinstance(e, Transcript) and not e.final for e in events), "interim transcripts go out"
    assert "".join(e.text for e in events if isinstance(e, Reply)) == DEFAULT_REPLY
    audio = b"".join(e.pcm for e in events if isinstance(e, AudioOut))
    assert len(audio) > 16000, "reply audio must come back"
    metrics = next(e for e in events if isinstance(e, MetricsEvent)).figures
    assert metrics["llm_provider"] == "groq" and metrics["prompt_tokens"] > 0 and metrics["completion_tokens"] > 0
    assert groq.log[0]["body"]["messages"][-1]["content"] == " ".join(SCRIPT[:5])
    assert deepgram.attempts == 1 and groq.attempts == 1 and elevenlabs.attempts == 1


async def test_failing_groq_falls_back_to_the_next_llm(engine: Engine, groq: GroqStandin) -> None:
    groq.set_mode("500")
    events = await spoken_turn(engine)
    assert "".join(e.text for e in events if isinstance(e, Reply)) == "The fallback model answers."
    assert groq.attempts == 2, "one try and one bounded retry, then the chain moves on"
    assert any(isinstance(e, AudioOut) for e in events)


async def test_deepgram_speech_final_ends_the_turn(
    deepgram: DeepgramStandin, groq: GroqStandin, elevenlabs: ElevenLabsStandin
) -> None:
    """`turn: {provider: stt}`: Deepgram's endpointing, not the engine's silence timer, ends the turn."""
    config = cloud_config(deepgram, groq, elevenlabs)
    config["pipeline"]["turn"] = {"provider": "stt", "max_pause_ms": 10000}
    config["pipeline"]["stt"]["endpointing_ms"] = 300
    engine = Engine.from_dict(config, autoload=False, plugins=PLUGINS)
    await engine.start()
    try:
        async with engine.conversation(pace=False) as conv:
            for frame in frames(silence(100) + speech(1000) + silence(1500)):
                await conv.send_audio(frame)
                await asyncio.sleep(0.02)  # real time: Deepgram's endpointing runs on its clock
            events = await conv.collect_turn(timeout_s=15)
    finally:
        await engine.stop()
    finals = [e for e in events if isinstance(e, Transcript) and e.final]
    assert [e.text for e in finals] == [" ".join(SCRIPT[:5])]
    assert "".join(e.text for e in events if isinstance(e, Reply)) == DEFAULT_REPLY
    assert events[-1].figures["eot_ms"] < 5000, "ended by speech_final, not the 10 s safety net"
