"""Deepgram + Groq + ElevenLabs through the real `vocable serve`, against stand-ins in their own processes.

The SDKs' base URLs are pointed at the stand-ins by config, exactly as an operator would point them at a
proxy; API keys come from the environment and must never show up in logs, events or /config.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vocable.testing.server import ServerProcess
from vocable.testing.speech import espeak_available, espeak_pcm, silence

websockets = pytest.importorskip("websockets")
pytest.importorskip("vocable.transports.websocket")

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"deepgram": "dg-secret-key-1234567890", "groq": "gsk-secret-key-1234567890",
        "elevenlabs": "el-secret-key-1234567890"}


class Standins:
    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.urls: dict[str, str] = {}

    def start(self, name: str, *extra: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.vendors.standins", name, "--port", "0", "--api-key", KEYS[name], *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            proc.kill()
            raise RuntimeError(f"stand-in {name} did not start")
        self.procs[name] = proc
        self.urls[name] = json.loads(line)["url"]
        return self.urls[name]

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def standins():
    s = Standins()
    yield s
    s.stop()


def cloud_config(urls: dict[str, str], llm_chain: list[dict] | None = None) -> dict:
    return {
        "server": {"rate_limit_per_minute": 0},
        "transports": {"websocket": {}},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence", "hangover_ms": 400},
            "stt": {"provider": "deepgram", "api_key": "${DEEPGRAM_API_KEY}", "base_url": urls["deepgram"]},
            "llm": llm_chain or {"provider": "groq", "api_key": "${GROQ_API_KEY}", "base_url": urls["groq"]},
            "tts": {"provider": "elevenlabs", "api_key": "${ELEVENLABS_API_KEY}", "base_url": urls["elevenlabs"],
                    "voice_id": "voice123", "output_format": "pcm_16000"},
        },
        "metrics": [{"provider": "log"}, {"provider": "prometheus"}],
    }


ENV = {"DEEPGRAM_API_KEY": KEYS["deepgram"], "GROQ_API_KEY": KEYS["groq"], "ELEVENLABS_API_KEY": KEYS["elevenlabs"]}


async def spoken_turn(ws_url: str, pcm: bytes | None, text: str | None = None) -> list:
    events: list = []
    async with websockets.connect(f"{ws_url}/ws/audio", max_size=None) as ws:
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready"
        events.append(ready)
        if text is not None:
            await ws.send(json.dumps({"type": "text", "text": text}))
        else:
            for i in range(0, len(pcm), 640):
                await ws.send(pcm[i : i + 640])
                await asyncio.sleep(0.02)
        async with asyncio.timeout(60):
            while True:
                message = await ws.recv()
                events.append(message if isinstance(message, bytes) else json.loads(message))
                if isinstance(events[-1], dict) and events[-1]["type"] in ("metrics",):
                    break
                if isinstance(events[-1], dict) and events[-1]["type"] == "error" and events[-1].get("fatal"):
                    break
        await ws.send(json.dumps({"type": "end"}))
    return events


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vocable.cli", "check", str(path)], capture_output=True,
                          text=True, env={**os.environ, **ENV}, timeout=60)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng makes the test speech")
def test_a_whole_turn_through_the_server_process_on_all_three_vendors(standins, tmp_path):
    urls = {name: standins.start(name) for name in KEYS}
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump(cloud_config(urls)))
    checked = check_config(path)
    assert checked.returncode == 0, checked.stderr
    speech = silence(300) + espeak_pcm("What is the capital of France?") + silence(1500)
    with ServerProcess(path, env=ENV) as server:
        events = asyncio.run(spoken_turn(server.ws_url, speech))
        config_text = json.dumps(server.get_json("/config"))
        log = server.output()
    types = [e["type"] if isinstance(e, dict) else "audio" for e in events]
    assert "error" not in types, events
    finals = [e for e in events if isinstance(e, dict) and e["type"] == "transcript" and e["final"]]
    assert finals and finals[0]["text"]
    assert types.index("transcript") < types.index("reply") < types.index("audio") < types.index("metrics")
    metrics = events[-1]
    assert metrics["stt_provider"] == "deepgram" and metrics["llm_provider"] == "groq"
    assert metrics["tts_provider"] == "elevenlabs" and metrics["voice_to_voice_ms"] > 0
    assert metrics["prompt_tokens"] is not None
    for key in KEYS.values():
        assert key not in config_text and key not in log and key not in json.dumps([e for e in events if isinstance(e, dict)])


def test_groq_failing_falls_back_to_smollm_end_to_end(standins, tmp_path):
    pytest.importorskip("llama_cpp")
    urls = {name: standins.start(name) for name in ("deepgram", "elevenlabs")}
    urls["groq"] = standins.start("groq", "--mode", "500")
    chain = [{"provider": "groq", "api_key": "${GROQ_API_KEY}", "base_url": urls["groq"], "retries": 1},
             {"provider": "smollm", "max_tokens": 24}]
    path = tmp_path / "fallback.yaml"
    path.write_text(yaml.safe_dump(cloud_config(urls, chain)))
    assert check_config(path).returncode == 0
    with ServerProcess(path, env=ENV) as server:
        events = asyncio.run(spoken_turn(server.ws_url, None, text="Say hello."))
    replies = "".join(e["text"] for e in events if isinstance(e, dict) and e["type"] == "reply")
    assert replies.strip(), events
    assert not any(isinstance(e, dict) and e["type"] == "error" for e in events)
    assert events[-1]["llm_provider"] == "smollm"
    assert any(isinstance(e, bytes) for e in events)
