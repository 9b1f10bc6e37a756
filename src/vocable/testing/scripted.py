"""Engines on the scripted fakes, and audio that the energy VAD hears as speech: for tests of apps and plugins."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from vocable import Engine
from vocable.testing.fakes import tone
from vocable.testing.speech import silence

SCRIPTED_PLUGINS = ["vocable.plugins.core", "vocable.testing.plugin"]


def scripted_config(**pipeline: Any) -> dict[str, Any]:
    """A config on the scripted fakes; keyword arguments replace pipeline slots."""
    base: dict[str, Any] = {
        "transports": {},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence", "hangover_ms": 300},
            "stt": {"provider": "scripted", "transcripts": ["what is the weather today"]},
            "llm": {"provider": "scripted", "reply": "It is sunny. Take a hat with you today."},
            "tts": {"provider": "scripted"},
        },
        "metrics": [{"provider": "log"}, {"provider": "prometheus"}],
    }
    config = copy.deepcopy(base)
    config["pipeline"].update(pipeline)
    return config


def scripted_engine(**pipeline: Any) -> Engine:
    return Engine.from_dict(scripted_config(**pipeline), autoload=False, plugins=SCRIPTED_PLUGINS)


def utterance(speech_ms: int = 600, pause_ms: int = 600, rate: int = 16000) -> bytes:
    """A 'spoken' utterance the energy VAD hears: a tone, then silence long enough to end the turn."""
    return silence(100, rate) + tone(speech_ms, rate) + silence(pause_ms, rate)


async def feed(conv: Any, pcm: bytes, *, rate: int = 16000, frame_ms: int = 20, realtime: bool = False) -> None:
    step = rate * frame_ms // 1000 * 2
    for i in range(0, len(pcm), step):
        await conv.send_audio(pcm[i : i + step])
        if realtime:
            await asyncio.sleep(frame_ms / 1000)


async def assert_no_new_tasks(before: set[asyncio.Task[Any]], grace_s: float = 1.0) -> None:
    """Fail if tasks created since ``before`` are still running after ``grace_s``."""
    deadline = asyncio.get_running_loop().time() + grace_s
    while True:
        current = asyncio.current_task()
        leftover = [t for t in asyncio.all_tasks() - before if not t.done() and t is not current]
        if not leftover:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"tasks left running: {[t.get_name() for t in leftover]}")
        await asyncio.sleep(0.02)
