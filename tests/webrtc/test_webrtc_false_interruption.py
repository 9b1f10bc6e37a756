"""False and true interruptions over WebRTC (issue 17): the outgoing track holds its buffer while the reply is
paused by the user's voice, plays on from the same sample after a noise burst, and is cleared when words
commit the interruption. Runs in the loopback-only namespace, with an aiortc client as the browser."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from kit import ClientPeer, Events, scripted_engine, served
from test_loopback import _json, connect_http

from vocable.testing.speech import espeak_available, espeak_pcm, silence

pytestmark = pytest.mark.netns

RATE = 48000
REPLY = ("One two three four five. Six seven eight nine ten. Eleven twelve thirteen fourteen. "
         "Fifteen sixteen seventeen eighteen.")


def noise(ms: int) -> bytes:
    rng = np.random.default_rng(7)
    return rng.normal(0, 6000, RATE * ms // 1000).clip(-32768, 32767).astype("<i2").tobytes()


async def _until(check: Any, timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)


async def _stamp(events: Events, seen: list[tuple[float, dict[str, Any]]]) -> None:
    """When each event arrived (to 10 ms), for timing checks: ``Events`` keeps no times."""
    loop = asyncio.get_running_loop()
    while True:
        seen.extend((loop.time(), item) for item in events.items[len(seen):])
        await asyncio.sleep(0.01)


async def _one_reply(transcripts: list[str], mic: bytes | None
                     ) -> tuple[ClientPeer, Events, list[Any], float, list[tuple[float, dict[str, Any]]]]:
    engine = scripted_engine(
        stt={"provider": "scripted", "transcripts": transcripts, "interim_every_ms": 200},
        llm={"provider": "scripted", "reply": REPLY},
        tts={"provider": "scripted", "ms_per_char": 30},
    )
    async with served(engine.asgi_app()) as base:
        client = ClientPeer()
        session_id, events = await connect_http(base, client)
        await client.wait_connected()
        await events.wait_for("ready")
        session = engine.sessions[session_id]
        stamped: list[tuple[float, dict[str, Any]]] = []
        stamper = asyncio.create_task(_stamp(events, stamped))
        loop = asyncio.get_running_loop()
        start = loop.time()
        await events.ws.send(_json({"type": "text", "text": "what is the plan"}))
        await _until(lambda: client.sound_after(start) >= 0.8)
        if mic is not None:
            await client.mic.push(mic)
        await events.wait_for("metrics", timeout_s=20)
        await client.mic.push(silence(600, RATE))
        last = len(client.frames)
        await _until(lambda: len(client.frames) > last + 30)  # the tail through the jitter buffer, 0.6 s
        memory = [m for m in session.memory.messages if m.role == "assistant"]
        stamper.cancel()
        await events.aclose()
        await client.close()
    return client, events, memory, start, stamped


async def test_a_noise_burst_pauses_the_track_and_it_resumes_whole() -> None:
    baseline, _, _, start0, _ = await _one_reply([""], None)
    client, events, memory, start, _ = await _one_reply([""], noise(300) + silence(900, RATE))
    kinds = [e["type"] for e in events.items]
    assert "paused" in kinds and "resumed" in kinds and "interrupted" not in kinds, kinds
    share = client.sound_after(start) / baseline.sound_after(start0)
    assert 0.85 <= share <= 1.15, f"the person heard {share:.0%} of the reply"
    assert memory and memory[-1].content == REPLY


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
async def test_wait_stop_clears_the_track_and_memory_keeps_what_was_heard() -> None:
    baseline, _, _, start0, _ = await _one_reply(["wait stop"], None)
    speech = espeak_pcm("wait, stop", sample_rate=RATE)
    client, events, memory, start, stamped = await _one_reply(["wait stop"], speech + silence(500, RATE))
    kinds = [e["type"] for e in events.items]
    assert "paused" in kinds and "interrupted" in kinds and "resumed" not in kinds, kinds
    committed = next(at for at, e in stamped if e["type"] == "interrupted")
    answered = next((at for at, e in stamped if at > committed and e["type"] == "state" and e["state"] == "speaking"),
                    float("inf"))  # the answer to "wait stop" starts speaking
    late = [at - committed for at, level in client.frames if committed + 0.1 < at < answered and level > 300]
    assert not late, f"sound {late[:3]} s after the commit"
    heard = sum(0.02 for at, level in client.frames if start < at < answered and level > 300)
    assert heard < 0.8 * baseline.sound_after(start0)
    spoken = memory[0].content  # the interrupted reply (the second is the answer to "wait stop")
    assert spoken and REPLY.startswith(spoken) and len(spoken) < len(REPLY), spoken
