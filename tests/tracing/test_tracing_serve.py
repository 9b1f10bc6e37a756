"""Tracing through the real ``vocable serve``: a spoken turn over the WebSocket, carrying a W3C ``traceparent``,
exports its spans to a stand-in OTLP/HTTP collector on loopback; and with OpenTelemetry absent the server
runs as usual and says how to enable tracing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml
from otlp_collector import Collector, Span, tree

from vocable.testing.scripted import scripted_config, utterance
from vocable.testing.server import ServerProcess

pytest.importorskip("opentelemetry.sdk", reason="tracing needs pip install 'vocable[otel]'")

USER_WORDS = {"what", "is", "the", "weather", "today"}


def write_config(path: Path, tracing: dict[str, Any]) -> Path:
    config = {**scripted_config(), "server": {"log_format": "json"}, "transports": {"websocket": {}},
              "metrics": [{"provider": "log"}], "tracing": tracing}
    path.write_text(yaml.safe_dump(config))
    return path


async def spoken_turn(ws_url: str, headers: dict[str, str]) -> str:
    """One spoken turn, then ``end``; the session id."""
    async with websockets.connect(f"{ws_url}/ws/audio", additional_headers=headers, open_timeout=10,
                                  proxy=None) as ws:
        ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ready["type"] == "ready"
        pcm = utterance()
        for i in range(0, len(pcm), 640):
            await ws.send(pcm[i : i + 640])
        async with asyncio.timeout(20):
            while True:
                message = await ws.recv()
                if isinstance(message, str) and json.loads(message)["type"] == "metrics":
                    break
        await ws.send(json.dumps({"type": "end"}))
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
        return str(ready["session_id"])


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


async def test_a_spoken_turn_through_vocable_serve_exports_its_spans(collector: Collector, tmp_path: Path) -> None:
    config = write_config(tmp_path / "vocable.yaml", {"endpoint": collector.endpoint, "service_name": "voice-edge"})
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    with ServerProcess(config, env={"OTEL_BSP_SCHEDULE_DELAY": "50"}) as server:
        session_id = await spoken_turn(server.ws_url, {"traceparent": f"00-{trace_id}-{parent_id}-01"})
        spans: list[Span] = await asyncio.to_thread(collector.wait_for, lambda spans: any(
            s.name == "conversation" and s.attributes["vocable.session.id"] == session_id for s in spans))
    root = next(s for s in spans if s.name == "conversation")
    assert root.trace_id == trace_id and root.parent_id == parent_id  # the incoming traceparent is the parent
    assert root.resource["service.name"] == "voice-edge"
    assert tree(spans, root) == {"conversation": [{"turn": [{"end_of_turn": []}, {"stt": []}, {"llm": []}, {"tts": []}]}]}
    assert {s.trace_id for s in spans} == {trace_id}
    turn = next(s for s in spans if s.name == "turn")
    for key in ("stt_ms", "eot_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms", "engine_overhead_ms"):
        assert isinstance(turn.attributes[f"vocable.turn.{key}"], float), key
    assert root.attributes["vocable.transport"] == "websocket" and root.attributes["vocable.session.end_reason"] == "client_end"
    said = [(s.name, k) for s in spans for k, v in s.attributes.items()
            if isinstance(v, str) and set(re.findall(r"[a-z]+", v.lower())) & USER_WORDS]
    assert said == []  # the default: no user words in any attribute


async def test_without_opentelemetry_the_server_runs_and_says_how_to_enable_tracing(tmp_path: Path) -> None:
    blocker = tmp_path / "site"
    blocker.mkdir()  # `import opentelemetry` fails in the server, as if it were not installed
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['opentelemetry'] = None\n")
    config = write_config(tmp_path / "vocable.yaml", {"endpoint": "http://127.0.0.1:9"})
    path = os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))
    with ServerProcess(config, env={"PYTHONPATH": path}) as server:
        session_id = await spoken_turn(server.ws_url, {})
        assert session_id
        server.stop()
        hints = [json.loads(line) for line in server.output().splitlines() if '"tracing_unavailable"' in line]
    assert hints and hints[0]["hint"] == "tracing is configured but OpenTelemetry is not installed: pip install 'vocable[otel]'"
