"""False and true interruptions over a real WebSocket (issue 17): the reply pauses on the user's voice,
resumes when no words follow (a cough, a 300 ms noise burst), and stops for good when they do ("wait, stop").

The client reads every message on its own task, stamping when each arrived, while it sends its microphone
at real time, as a browser does.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import websockets
from wskit import engine, live_server

from vocable.testing.speech import espeak_available, espeak_pcm, silence

REPLY = ("One two three four five. Six seven eight nine ten. Eleven twelve thirteen fourteen. "
         "Fifteen sixteen seventeen eighteen.")
RATE = 16000
FRAME = RATE * 20 // 1000 * 2


def noise(ms: int) -> bytes:
    rng = np.random.default_rng(7)
    return (rng.normal(0, 6000, RATE * ms // 1000).clip(-32768, 32767)).astype("<i2").tobytes()


def _engine(transcripts: list[str]) -> Any:
    return engine(
        stt={"provider": "scripted", "transcripts": transcripts, "interim_every_ms": 200},
        llm={"provider": "scripted", "reply": REPLY},
        tts={"provider": "scripted", "ms_per_char": 30},  # about 3.5 s of reply audio
        turn={"provider": "silence", "hangover_ms": 300},
    )


@dataclass
class Listener:
    """Everything the server sent, with arrival times, read on a task of its own."""

    ws: Any
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    audio: list[tuple[float, int]] = field(default_factory=list)

    async def read(self) -> None:
        try:
            async for message in self.ws:
                at = time.monotonic()
                if isinstance(message, bytes):
                    self.audio.append((at, len(message)))
                else:
                    self.events.append((at, json.loads(message)))
        except websockets.ConnectionClosed:
            pass

    def first(self, kind: str) -> tuple[float, dict[str, Any]] | None:
        return next(((at, e) for at, e in self.events if e["type"] == kind), None)

    async def until(self, check: Any, timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():
                await asyncio.sleep(0.01)

    def audio_bytes(self, after: float = 0.0) -> int:
        return sum(n for at, n in self.audio if at > after)


async def _speak(ws: Any, pcm: bytes) -> None:
    """Microphone audio at real time, 20 ms a frame."""
    for start in range(0, len(pcm), FRAME):
        await ws.send(pcm[start:start + FRAME])
        await asyncio.sleep(0.02)


async def _one_reply(transcripts: list[str], mic: bytes | None) -> tuple[Listener, Any]:
    """Ask for the reply by text; once 0.8 s of its audio has arrived, send ``mic``; then keep the mic silent
    until the reply is over (``metrics``)."""
    eng = _engine(transcripts)
    async with live_server(eng) as server:
        async with websockets.connect(server.ws_url(), proxy=None, max_size=None) as ws:
            listener = Listener(ws)
            reader = asyncio.create_task(listener.read())
            await listener.until(lambda: listener.first("ready") is not None)
            session = eng.sessions[listener.first("ready")[1]["session_id"]]
            await ws.send(json.dumps({"type": "text", "text": "what is the plan"}))
            await listener.until(lambda: listener.audio_bytes() >= RATE * 2 * 0.8)
            if mic is not None:
                await _speak(ws, mic)
            while listener.first("metrics") is None:
                await _speak(ws, silence(100))
            messages = [m for m in session.memory.messages if m.role == "assistant"]
            await ws.close()
            await reader
    return listener, messages


async def test_a_noise_burst_pauses_the_reply_and_it_resumes_whole() -> None:
    baseline, _ = await _one_reply([""], None)
    heard, memory = await _one_reply([""], noise(300) + silence(200))
    kinds = [e["type"] for _, e in heard.events]
    assert "paused" in kinds and "resumed" in kinds and "interrupted" not in kinds, kinds
    assert kinds.index("paused") < kinds.index("resumed")
    share = heard.audio_bytes() / baseline.audio_bytes()
    assert 0.85 <= share <= 1.15, f"the person received {share:.0%} of the reply's audio"
    assert memory and memory[-1].content == REPLY, "memory holds the whole reply"
    paused_at = heard.first("paused")[0]
    resumed_at = heard.first("resumed")[0]
    during = heard.audio_bytes(after=paused_at + 0.05) - heard.audio_bytes(after=resumed_at)
    assert during == 0, "no reply audio was sent while the output was paused"


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
async def test_wait_stop_commits_the_interruption_and_memory_keeps_what_was_heard() -> None:
    baseline, _ = await _one_reply(["wait stop"], None)
    heard, memory = await _one_reply(["wait stop"], espeak_pcm("wait, stop", sample_rate=RATE) + silence(400))
    kinds = [e["type"] for _, e in heard.events]
    assert "paused" in kinds and "interrupted" in kinds and "resumed" not in kinds, kinds
    committed_at, interrupted = heard.first("interrupted")
    assert interrupted["reason"] == "barge_in"
    answered_at = next(at for at, e in heard.events if at > committed_at and e["type"] == "transcript" and e["final"])
    states = [e["state"] for at, e in heard.events if committed_at <= at <= answered_at and e["type"] == "state"]
    assert "speaking" not in states, f"nothing speaks between the commit and the next turn: {states}"
    late = [at - committed_at for at, _ in heard.audio if committed_at + 0.1 < at < answered_at]
    assert not late, f"audio stops within 100 ms of the commit: frames {late[:3]} s after it"
    received = heard.audio_bytes() - heard.audio_bytes(after=answered_at)  # the interrupted reply's audio
    assert received < 0.8 * baseline.audio_bytes()
    spoken = memory[-1].content
    assert spoken and REPLY.startswith(spoken) and len(spoken) < len(REPLY), spoken
    # sentence-accurate at least: what memory keeps matches the share of audio the person received
    kept = len(spoken) / len(REPLY)
    got = received / baseline.audio_bytes()
    assert abs(kept - got) < 0.35, (kept, got)
