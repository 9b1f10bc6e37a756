"""``provider: openai`` for stt, llm and tts through the real ``vocable serve`` and its WebSocket.

1. A whole spoken turn with all three on the OpenAI stand-in (multipart upload, streamed chat, streamed PCM).
2. A real OpenAI-compatible server started here: llama-cpp-python's own (``python -m llama_cpp.server``)
   serving the packaged SmolLM2 GGUF on 127.0.0.1, with STT and TTS on the stand-in: a streamed reply, and a
   barge-in that closes the stream promptly, after which the server stops generating (it says so, and its
   CPU time stops growing).

The API key comes from the environment and must never appear in the server's log, its events or /config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from standins import OpenAIStandin
from standins.openai_standin import DEFAULT_REPLY, DEFAULT_TRANSCRIPT
from vendor_support import API_KEY, silence, speech

from vocable.testing.server import ServerProcess, free_port

websockets = pytest.importorskip("websockets")
pytest.importorskip("vocable.transports.websocket")

KEY = API_KEY  # what the stand-in expects
ENV = {"OPENAI_API_KEY": KEY}
FRAME = 16000 * 20 // 1000 * 2


def config(standin: OpenAIStandin, llm: dict[str, Any]) -> dict[str, Any]:
    on_standin = {"provider": "openai", "base_url": f"{standin.url}/v1", "api_key": "${OPENAI_API_KEY}"}
    return {
        "server": {"rate_limit_per_minute": 0, "max_turns_per_minute": 0},
        "transports": {"websocket": {}},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence", "hangover_ms": 400},
            "turn_taking": {"false_interruption_timeout_s": 0},
            "stt": {**on_standin, "model": "gpt-transcribe"},
            "llm": llm,
            "tts": {**on_standin, "model": "gpt-4o-mini-tts", "voice": "marin"},
        },
        "metrics": [{"provider": "log"}],
    }


def write_checked(data: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(data))
    checked = subprocess.run([sys.executable, "-m", "vocable.cli", "check", str(path)], capture_output=True,
                             text=True, env={**os.environ, **ENV}, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return path


class Client:
    """Reads every event (binary frames as their length) while the test speaks and waits."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any] | int] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self.ws:
                self.events.append(len(message) if isinstance(message, bytes) else json.loads(message))

    def of(self, kind: str, after: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.events[after:] if isinstance(e, dict) and e["type"] == kind]

    async def wait(self, kind: str, after: int = 0, count: int = 1, timeout_s: float = 30.0) -> int:
        """Index of the ``count``-th ``kind`` event at or after ``after``."""
        async with asyncio.timeout(timeout_s):
            while True:
                seen = [i for i in range(after, len(self.events))
                        if isinstance(self.events[i], dict) and self.events[i]["type"] == kind]
                if len(seen) >= count:
                    return seen[count - 1]
                await asyncio.sleep(0.01)

    async def speak(self, pcm: bytes) -> None:
        for start in range(0, len(pcm), FRAME):
            await self.ws.send(pcm[start:start + FRAME])
            await asyncio.sleep(0.02)  # a microphone sends at real time

    async def end(self) -> None:
        await self.ws.send(json.dumps({"type": "end"}))
        await self._task


@contextlib.asynccontextmanager
async def connected(server: ServerProcess) -> Any:
    """A session on the server; a 503 (the server is busy, say just after start-up) is tried again."""
    for attempt in range(20):
        try:
            ws = await websockets.connect(f"{server.ws_url}/ws/audio", proxy=None, max_size=None)
            break
        except websockets.InvalidStatus as exc:
            if exc.response.status_code != 503 or attempt == 19:
                raise
            await asyncio.sleep(0.5)
    async with ws:
        client = Client(ws)
        await client.wait("ready")
        yield client
        await client.end()


# ------------------------------------------------------------------------------ all three on the stand-in


async def test_a_spoken_turn_with_stt_llm_and_tts_on_openai(openai_standin: OpenAIStandin, tmp_path: Path) -> None:
    llm = {"provider": "openai", "base_url": f"{openai_standin.url}/v1", "api_key": "${OPENAI_API_KEY}",
           "model": "gpt-standin"}
    path = write_checked(config(openai_standin, llm), tmp_path / "openai.yaml")
    with ServerProcess(path, env=ENV) as server:
        async with connected(server) as client:
            await client.speak(silence(300) + speech(1200) + silence(900))
            await client.wait("metrics")
        config_text = json.dumps(server.get_json("/config"))
        log = server.output()
    events = client.events
    kinds = [e["type"] if isinstance(e, dict) else "audio" for e in events]
    assert "error" not in kinds, events
    finals = [e["text"] for e in client.of("transcript") if e["final"]]
    assert finals == [DEFAULT_TRANSCRIPT]
    assert "".join(e["text"] for e in client.of("reply")) == DEFAULT_REPLY
    assert len(client.of("reply")) > 1, "the reply streams to the client in pieces"
    assert kinds.index("transcript") < kinds.index("reply") < kinds.index("audio") < kinds.index("metrics")
    assert sum(e for e in events if isinstance(e, int)) > 16000, "reply audio came back"
    metrics = client.of("metrics")[0]
    assert metrics["stt_provider"] == metrics["llm_provider"] == metrics["tts_provider"] == "openai"
    assert metrics["prompt_tokens"] > 0 and metrics["completion_tokens"] > 0

    upload = next(e for e in openai_standin.log if e["path"] == "/v1/audio/transcriptions")
    assert upload["sample_rate"] == 16000 and upload["seconds"] > 1.0
    chat = next(e for e in openai_standin.log if e["path"] == "/v1/chat/completions")
    assert chat["body"]["messages"][-1] == {"role": "user", "content": DEFAULT_TRANSCRIPT}
    speech_requests = [e for e in openai_standin.log if e["path"] == "/v1/audio/speech"]
    assert speech_requests and all(e["body"]["response_format"] == "pcm" for e in speech_requests)
    assert openai_standin.counters["transcriptions"] == openai_standin.counters["chat_completions"] == 1

    assert KEY in chat["headers"]["authorization"], "the key did reach the server"
    for text in (config_text, log, json.dumps([e for e in events if isinstance(e, dict)])):
        assert KEY not in text
    assert config_text.count('"api_key": "**********"') == 3


# ------------------------------------------------------------------- a real server: llama-cpp-python


@dataclass
class LlamaServer:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu_s(self) -> float:
        """CPU time the server process has used so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp.server.app", reason="pip install 'llama-cpp-python[server]'")
    from vocable.providers.local.smollm import bundled_model_path

    model = bundled_model_path()
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = LlamaServer(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start:\n{server.output()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{server.url}/v1/models", timeout=2) as response:
                    if response.status == 200:
                        break
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log_path.unlink(missing_ok=True)


def llama_llm(server: LlamaServer, **settings: Any) -> dict[str, Any]:
    """llama.cpp's server takes any key: none is configured."""
    return {"provider": "openai", "base_url": f"{server.url}/v1", "model": "smollm2", "temperature": 0,
            "timeout_s": 30, **settings}


@pytest.mark.slow
async def test_a_streamed_reply_from_llama_cpp_server(
    openai_standin: OpenAIStandin, llama_server: LlamaServer, tmp_path: Path
) -> None:
    path = write_checked(config(openai_standin, llama_llm(llama_server, max_tokens=48)), tmp_path / "llama.yaml")
    with ServerProcess(path, env=ENV) as server:
        async with connected(server) as client:
            await client.speak(silence(300) + speech(1000) + silence(900))
            await client.wait("metrics", timeout_s=60)
    assert not client.of("error"), client.events
    assert [e["text"] for e in client.of("transcript") if e["final"]] == [DEFAULT_TRANSCRIPT]
    replies = client.of("reply")
    assert len(replies) > 2 and "".join(e["text"] for e in replies).strip(), "SmolLM2's words, streamed"
    assert any(isinstance(e, int) for e in client.events), "and spoken"
    metrics = client.of("metrics")[0]
    assert metrics["llm_provider"] == "openai" and metrics["llm_ttft_ms"] > 0
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in llama_server.output()


@pytest.mark.slow
async def test_barge_in_closes_the_stream_and_the_server_stops_generating(
    openai_standin: OpenAIStandin, llama_server: LlamaServer, tmp_path: Path
) -> None:
    # A reply that would run for a minute: up to 2000 tokens, and (extra_body, llama.cpp's own parameter)
    # the end-of-turn token <|im_end|> (id 2) banned, so the model cannot stop by itself.
    llm = llama_llm(llama_server, max_tokens=2000, extra_body={"logit_bias": {"2": -100}})
    path = write_checked(config(openai_standin, llm), tmp_path / "barge.yaml")
    with ServerProcess(path, env=ENV) as server:
        async with connected(server) as client:
            await client.ws.send(json.dumps({"type": "text", "text": "Tell me a long story about a dragon."}))
            await client.wait("reply", count=5, timeout_s=60)
            busy_from = llama_server.cpu_s()
            await asyncio.sleep(1.0)
            busy = llama_server.cpu_s() - busy_from
            disconnects = llama_server.output().count("Disconnected from client")

            mark = len(client.events)
            await client.speak(speech(600))  # the user talks over the reply; no turn end follows
            stopped = await client.wait("interrupted", after=mark, timeout_s=10)
            interrupted_at = time.monotonic()
            assert client.events[stopped]["reason"] == "barge_in"
            async with asyncio.timeout(3):
                while llama_server.output().count("Disconnected from client") == disconnects:
                    await asyncio.sleep(0.02)
            closed_after = time.monotonic() - interrupted_at
            await asyncio.sleep(0.3)
            idle_from = llama_server.cpu_s()
            await asyncio.sleep(1.0)
            idle = llama_server.cpu_s() - idle_from
            replies_then = len(client.of("reply"))
            await asyncio.sleep(0.5)
            assert len(client.of("reply")) == replies_then, "nothing more of that reply reaches the client"
    assert busy > 0.1, f"the server was generating before the barge-in ({busy:.2f} s CPU in 1 s)"
    assert closed_after < 2.0, f"the server saw the stream closed {closed_after:.2f} s after the barge-in"
    assert idle < min(0.1, busy / 2), f"the server kept working after the barge-in ({idle:.2f} s CPU in 1 s)"
    assert len(client.of("reply")) < 2000
