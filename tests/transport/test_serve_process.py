"""The real server process: ``vocable serve`` on the offline default, spoken to over a loopback WebSocket.

Nothing is faked here: the console script starts uvicorn, the local models load from their packages, and
espeak-ng speech goes in as a browser would send it (20 ms PCM16 frames at real time).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from wskit import stop_process, Client, audio_bytes, connect, events, send_audio

from vocable.testing.speech import espeak_available, espeak_pcm, silence

pytestmark = pytest.mark.slow

VOCABLE = Path(sys.executable).with_name("vocable")
LOCAL_MODULES = ("faster_whisper", "llama_cpp", "piper")
LOCAL_PROVIDERS = {"stt": "whisper", "llm": "smollm", "tts": "piper", "vad": "silero"}


def _why_not() -> str | None:
    """A reason to skip, or None when the offline default can run here."""
    if not espeak_available():
        return "espeak-ng is missing (apt-get install espeak-ng)"
    missing = [m for m in LOCAL_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return f"the local models are not installed ({', '.join(missing)}): pip install 'vocable[local]'"
    listed = subprocess.run([str(VOCABLE), "plugins", "--json"], capture_output=True, text=True, timeout=120)
    if listed.returncode != 0:
        return f"`vocable plugins` failed: {listed.stderr.strip()[-300:]}"
    providers = json.loads(listed.stdout)["providers"]
    absent = [f"{kind}:{name}" for kind, name in LOCAL_PROVIDERS.items() if name not in providers.get(kind, {})]
    if absent or "websocket" not in json.loads(listed.stdout)["transports"]:
        return f"`vocable plugins` does not list {', '.join(absent) or 'the websocket transport'}"
    return None


SERVE_LOG: dict[str, Path] = {}  # the served fixture's log file, for tests that read what the server logged


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vocable serve --port P`` (no -c: the offline default); yields its base URL once /health says ok."""
    if (reason := _why_not()) is not None:
        pytest.skip(reason)
    port = _free_port()
    log_path = SERVE_LOG["path"] = tmp_path_factory.mktemp("serve") / "serve.log"
    log = log_path.open("wb")
    process = subprocess.Popen([str(VOCABLE), "serve", "--host", "127.0.0.1", "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "NO_COLOR": "1", "VOCABLE_DB": str(log_path.with_name("turns.db"))})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"vocable serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/health never said ok:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base
    finally:
        stop_process(process, 20)
        log.close()


def _ws(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws/audio"


async def _collect_turn(client: Client, timeout_s: float = 90.0) -> list[dict | bytes]:
    return await client.turn(timeout_s)  # type: ignore[return-value]


async def test_spoken_turn_in_order(served: str) -> None:
    speech = silence(300) + espeak_pcm("What is the capital of France?") + silence(1500)
    async with connect(_ws(served)) as client:
        ready = await client.recv(30)
        assert isinstance(ready, dict) and ready["type"] == "ready" and ready["input_sample_rate"] == 16000
        sender = asyncio.create_task(send_audio(client, speech, realtime=True))
        turn = await _collect_turn(client)
        await sender

    def first(pred: object) -> int:
        return next(i for i, m in enumerate(turn) if pred(m))  # type: ignore[operator]

    is_event = lambda kind, **kv: lambda m: (isinstance(m, dict) and m["type"] == kind  # noqa: E731
                                             and all(m.get(k) == v for k, v in kv.items()))
    interim = first(is_event("transcript", final=False))
    final = first(is_event("transcript", final=True))
    reply = first(is_event("reply"))
    audio = first(lambda m: isinstance(m, bytes))
    metrics = first(is_event("metrics"))
    assert interim < final < reply < audio < metrics
    text = turn[final]["text"].lower()  # type: ignore[index]
    assert "capital" in text and "france" in text, text
    assert "".join(r["text"] for r in events(turn, "reply")).strip()
    assert audio_bytes(turn) > ready["output_sample_rate"] * 2 * 0.3  # at least 0.3 s of reply audio
    figures = turn[metrics]
    for key in ("stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms"):
        assert isinstance(figures[key], (int, float)) and figures[key] >= 0, key  # type: ignore[index]


async def test_typed_turn(served: str) -> None:
    async with connect(_ws(served)) as client:
        await client.next("ready", 30)
        await client.send({"type": "text", "text": "Say hello in one short sentence."})
        turn = await _collect_turn(client)
        assert [t["text"] for t in events(turn, "transcript")] == ["Say hello in one short sentence."]
        assert "".join(r["text"] for r in events(turn, "reply")).strip()
        assert audio_bytes(turn) > 0
        await client.send({"type": "end"})
        assert (await client.closed())[0] == 1000


async def test_interrupt_mid_reply_stops_the_audio(served: str) -> None:
    async with connect(_ws(served)) as client:
        await client.next("ready", 30)
        await client.send({"type": "text", "text": "Tell me a long story about a dragon who learns to bake bread."})
        async with asyncio.timeout(90):
            while not isinstance(await client.recv(90), bytes):
                pass
        await client.send({"type": "interrupt"})
        interrupted = await client.next("interrupted", 30)
        after: list[dict | bytes] = []
        try:
            async with asyncio.timeout(1.5):
                while True:
                    after.append(await client.recv(5))
        except TimeoutError:
            pass
        assert audio_bytes(after) == 0, "no reply audio may follow 'interrupted'"
        metrics = events(after, "metrics")
        assert metrics and metrics[0]["turn_id"] == interrupted["turn_id"] and metrics[0]["interrupted"] is True


async def test_audio_frames_are_heard_as_parsed_under_vocable_serve(served: str) -> None:
    """`vocable serve` runs uvicorn with vocable's own protocol: frames skip the ASGI queue (``ws_closed`` counts them)."""
    async with connect(_ws(served), compression=None) as client:
        ready = await client.next("ready", 30)
        await send_audio(client, silence(2000), realtime=True)  # 100 frames at real time: the reader is idle for each
        await client.send({"type": "end"})
        assert (await client.closed())[0] == 1000
    import re

    line = ""
    for _ in range(50):
        lines = [x for x in SERVE_LOG["path"].read_text().splitlines() if "ws_closed" in x and ready["session_id"] in x]
        if lines:
            line = lines[-1]
            break
        await asyncio.sleep(0.1)
    counts = {key: int(value) for key, value in re.findall(r"(heard_direct|messages_in)=(\d+)", line)}
    assert counts["messages_in"] == 101, line  # 100 frames and the `end`
    assert counts["heard_direct"] >= 95, line
