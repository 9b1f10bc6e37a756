"""Tools under barge-in, end to end (issue 17): the real ``vocable serve`` process, the Groq provider against
its stand-in, a plugin tool selected in YAML that takes 1.5 s and has a side effect, and a WebSocket client
that interrupts before the call, during it and after its result.

What must hold: the tool ran at most once per call and never twice; no turn is left stuck; and every LLM
request the stand-in received answers each tool call id with exactly one tool message.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import websockets
from standins import GroqStandin
from vendor_support import API_KEY

from vocable.testing.fakes import tone
from vocable.testing.server import ServerProcess
from vocable.testing.speech import silence

RATE = 16000
FRAME = RATE * 20 // 1000 * 2
REPLY = "Your table is booked for seven. Enjoy your dinner tonight, and see you soon."


def _config(groq: GroqStandin) -> dict[str, Any]:
    return {
        "server": {"max_turns_per_minute": 0, "rate_limit_per_minute": 0},
        "transports": {"websocket": {}},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence", "hangover_ms": 300},
            "stt": {"provider": "scripted", "transcripts": ["wait stop"], "interim_every_ms": 200},
            "llm": {"provider": "groq", "base_url": groq.url, "api_key": API_KEY, "model": "llama-3.3-70b-versatile"},
            "tts": {"provider": "scripted", "ms_per_char": 30},
        },
        "agent": {"tools": ["book_table"], "filler_after_ms": 0},
        "metrics": [],
        "plugins": {"modules": ["vocable.testing.plugin", "booking_plugin"]},
    }


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    self.events.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass

    async def wait(self, kind: str, after: int = 0, timeout_s: float = 15.0, **fields: Any) -> int:
        """Index of the first ``kind`` event at or after index ``after`` (matching ``fields``)."""
        async with asyncio.timeout(timeout_s):
            while True:
                for index in range(after, len(self.events)):
                    event = self.events[index]
                    if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                        return index
                await asyncio.sleep(0.01)

    async def speak(self, pcm: bytes) -> None:
        for start in range(0, len(pcm), FRAME):
            await self.ws.send(pcm[start:start + FRAME])
            await asyncio.sleep(0.02)  # a microphone sends at real time


def _unanswered(messages: list[dict[str, Any]]) -> list[str]:
    """Tool call ids in a chat request not answered by exactly one tool message."""
    called = [c["id"] for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
    answered = Counter(m.get("tool_call_id") for m in messages if m["role"] == "tool")
    return [i for i in called if answered[i] != 1] + [i for i in answered if i not in called]


def _bookings(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_slow_tool_survives_interruptions_before_during_and_after_it(
        groq: GroqStandin, tmp_path: Path) -> None:
    groq.reply = REPLY
    path = tmp_path / "vocable.yaml"
    path.write_text(json.dumps(_config(groq)))
    bookings = tmp_path / "bookings.jsonl"
    env = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "BOOKINGS_FILE": str(bookings), "NO_COLOR": "1"}
    voice = tone(400, RATE) + silence(700)
    with ServerProcess(path, env=env) as server:
        async with websockets.connect(f"{server.ws_url}/ws/audio", proxy=None, max_size=None) as ws:
            client = Client(ws)
            await client.wait("ready")

            # 1. before the call: the reply is interrupted while the model is still streaming the call
            groq.tool_calls = [("book_table", '{"time": "7pm"}')]
            groq.set_mode("slow", times=1, slow_delay_s=0.3)
            asked = groq.counters["chat_completions"]
            await ws.send(json.dumps({"type": "text", "text": "book a table for seven"}))
            async with asyncio.timeout(10):
                while groq.counters["chat_completions"] == asked:
                    await asyncio.sleep(0.01)
            await ws.send(json.dumps({"type": "interrupt"}))
            await client.wait("interrupted")
            assert not any(e["type"] == "tool_call" for e in client.events)

            # 2. during the call: the user talks over it; it finishes once and its result is remembered
            mark = len(client.events)
            await ws.send(json.dumps({"type": "text", "text": "book a table for seven please"}))
            call_at = await client.wait("tool_call", after=mark)
            call_id = client.events[call_at]["id"]
            groq.tool_calls = []  # from now on the model answers in words
            await client.speak(voice)
            stopped = await client.wait("interrupted", after=call_at)
            assert client.events[stopped]["reason"] in ("barge_in", "user_continued")
            result_at = await client.wait("tool_result", after=call_at, id=call_id)
            assert client.events[result_at]["status"] == "ok"
            assert result_at > stopped, "the interruption came while the call was running"
            await client.wait("metrics", after=result_at)  # the turn of "wait stop" was answered
            requests_after_call = [r["body"]["messages"] for r in groq.log if any(
                c["id"] == call_id for m in r["body"]["messages"] for c in m.get("tool_calls") or ())]
            assert requests_after_call, "the next request carries the call the user talked over"
            tool_message = [m for m in requests_after_call[-1] if m.get("tool_call_id") == call_id]
            assert len(tool_message) == 1 and "booked" in tool_message[0]["content"]

            # 3. after its result: the reply that speaks the result is interrupted
            groq.tool_calls = [("book_table", '{"time": "8pm"}')]
            mark = len(client.events)
            await ws.send(json.dumps({"type": "text", "text": "and one for eight"}))
            second_call = client.events[await client.wait("tool_call", after=mark)]["id"]
            groq.tool_calls = []
            await client.wait("tool_result", after=mark, id=second_call)
            await client.wait("state", after=mark, state="speaking")
            await client.speak(voice)
            await client.wait("interrupted", after=mark)
            last = await client.wait("metrics", after=await client.wait("transcript", after=mark, final=True,
                                                                         text="wait stop"))
            # no turn is left stuck
            await client.wait("state", after=last, state="listening")
            await ws.send(json.dumps({"type": "end"}))
            await client._task

    starts = Counter(b["time"] for b in _bookings(bookings) if b["event"] == "start")
    booked = Counter(b["time"] for b in _bookings(bookings) if b["event"] == "booked")
    assert starts == booked == Counter({"7pm": 1, "8pm": 1}), "each call ran once, to the end, and never twice"
    for request in groq.log:
        assert not _unanswered(request["body"]["messages"]), request["body"]["messages"]
