"""Recording sessions (storage.record) and replaying them (vocable replay): five conversations recorded in real
time on the scripted fakes (a spoken and a typed turn, a barge-in, a tool call, a fallback, a greeting cut
off by the client) replay with the recorded providers on the virtual clock to the same events; a changed
reply policy makes the replay differ, and `vocable replay` says how and exits 1."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from vocable import Engine
from vocable.engine.conversation import Conversation
from vocable.engine.events import AudioOut, Event, Interrupted, MetricsEvent, Ready, StateChanged
from vocable.recording.format import read
from vocable.recording.replay import normalized, replay
from vocable.testing.scripted import SCRIPTED_PLUGINS, feed, scripted_config, utterance

LONG_REPLY = "One two three four. Five six seven eight. Nine ten eleven twelve. Thirteen fourteen fifteen."


async def until(conv: Conversation, wanted: Callable[[Event], bool], timeout_s: float = 15.0) -> Event:
    async with asyncio.timeout(timeout_s):
        while True:
            event = await conv.session.events.get()
            assert event is not None, "the session ended"
            if wanted(event):
                return event


async def turn_done(conv: Conversation) -> None:
    """The turn's metrics, then the agent quiet again (so the next input is not a near tie with its end)."""
    await until(conv, lambda e: isinstance(e, MetricsEvent))
    await until(conv, lambda e: isinstance(e, StateChanged) and e.state == "listening")
    await asyncio.sleep(0.2)


async def spoken_then_typed(conv: Conversation, engine: Engine) -> None:
    await feed(conv, utterance(), realtime=True)
    await turn_done(conv)
    await conv.send_text("and tomorrow")
    await turn_done(conv)


async def barge_in(conv: Conversation, engine: Engine) -> None:
    await conv.send_text("tell me a long story")
    await conv.next_event(AudioOut, timeout_s=5)
    await asyncio.sleep(0.5)  # the agent talks; then the user talks over it with words ("wait stop")
    await feed(conv, utterance(speech_ms=500, pause_ms=500), realtime=True)
    await until(conv, lambda e: isinstance(e, Interrupted))
    await until(conv, lambda e: isinstance(e, MetricsEvent))  # the interrupted turn's
    await turn_done(conv)  # the user's turn, answered


async def tool_call(conv: Conversation, engine: Engine) -> None:
    await conv.send_text("what time is it in Tokyo")
    await turn_done(conv)


async def fallback(conv: Conversation, engine: Engine) -> None:
    await conv.send_text("hello")
    await turn_done(conv)
    await conv.send_text("hello again")
    await turn_done(conv)


async def greeting_cut_off(conv: Conversation, engine: Engine) -> None:
    await turn_done(conv)  # the greeting
    await conv.send_text("tell me a long story")
    await conv.next_event(AudioOut, timeout_s=5)
    await asyncio.sleep(0.3)
    assert await conv.interrupt()
    await until(conv, lambda e: isinstance(e, StateChanged) and e.state == "listening")
    await asyncio.sleep(0.2)
    await feed(conv, utterance(), realtime=True)
    await turn_done(conv)


CONVERSATIONS: dict[str, tuple[dict[str, Any], Callable[[Conversation, Engine], Awaitable[None]]]] = {
    "spoken_then_typed": ({}, spoken_then_typed),
    "barge_in": ({"pipeline": {"llm": {"provider": "scripted", "reply": LONG_REPLY, "token_delay_ms": 100},
                               "tts": {"provider": "scripted", "ms_per_char": 40},
                               "stt": {"provider": "scripted", "transcripts": ["wait stop"]}}}, barge_in),
    "tool_call": ({"pipeline": {"llm": {"provider": "scripted", "echo": True, "tool_call": "clock",
                                        "tool_arguments": '{"city": "Tokyo"}'}},
                   "agent": {"filler_after_ms": 100, "fillers": ["Just a moment while I look."]}}, tool_call),
    "fallback": ({"pipeline": {"llm": [{"provider": "scripted_other", "fail": "raise"},
                                       {"provider": "scripted", "reply": "Backup answers here."}]}}, fallback),
    "greeting_cut_off": ({"agent": {"greeting": "Hello there, how can I help you today?"},
                          "pipeline": {"llm": {"provider": "scripted", "reply": LONG_REPLY},
                                       "tts": {"provider": "scripted", "ms_per_char": 40}}}, greeting_cut_off),
}


def recorded_config(overrides: dict[str, Any], folder: Path, record: str = "audio") -> dict[str, Any]:
    config = scripted_config()
    for section, value in overrides.items():
        if section == "pipeline":
            config["pipeline"].update(value)
        else:
            config[section] = value
    config["storage"] = {"record": record, "recordings": str(folder)}
    return config


async def record(name: str, folder: Path, record_mode: str = "audio") -> Path:
    overrides, script = CONVERSATIONS[name]
    engine = Engine.from_dict(recorded_config(overrides, folder, record_mode), autoload=False, plugins=SCRIPTED_PLUGINS)

    @engine.tool(description="the time in a city", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    async def clock(city: str) -> str:
        await asyncio.sleep(0.3)
        return f"noon in {city}"

    await engine.start()
    async with engine.conversation(pace=True) as conv:
        session_id = (await conv.next_event(Ready)).session_id
        await script(conv, engine)
    await engine.stop()
    return folder / f"{session_id}.jsonl"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    return {name: asyncio.run(record(name, folder)) for name in CONVERSATIONS}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_a_recording_replays_to_the_same_events(recordings: dict[str, Path], name: str) -> None:
    recording = read(recordings[name])
    comparison = replay(recording)
    assert not comparison.differs, "\n".join(comparison.lines)
    kinds = [e["type"] for e in comparison.replayed]
    assert kinds.count("metrics") >= 1 and kinds[-1] != "ready"
    expected = {"barge_in": "interrupted", "tool_call": "tool_result", "greeting_cut_off": "interrupted"}
    if name in expected:
        assert expected[name] in kinds


def test_what_a_recording_holds(recordings: dict[str, Path]) -> None:
    recording = read(recordings["tool_call"])
    header = recording.header
    assert header["record"] == "audio" and header["transport"] == "python"
    assert [p["name"] for p in header["chains"]["llm"]] == ["scripted"]
    assert recording.end_reason == "closed"
    assert [i["in"] for i in recording.inputs()] == ["text"]
    llm = recording.outputs("llm", 0)
    assert len(llm) == 2  # the tool call, then the answer with its result
    assert llm[0][1]["tool_call"]["name"] == "clock" and llm[0][-1]["end"] == "ok"
    events = [e["type"] for e in recording.events()]
    assert events[:2] == ["ready", "state"] and "tool_call" in events and "tool_result" in events
    audio = [e for e in recording.events() if e["type"] == "audio"]
    assert audio and "pcm" not in audio[0] and audio[0]["bytes"] > 0  # a reference to the reply audio
    spoken = read(recordings["spoken_then_typed"])
    assert sum(1 for i in spoken.inputs() if i["in"] == "audio") > 50
    assert [o["final"] for o in spoken.outputs("stt", 0)[0] if "final" in o][-1] is True


def test_record_events_keeps_no_audio(tmp_path: Path) -> None:
    path = asyncio.run(record("spoken_then_typed", tmp_path, "events"))
    recording = read(path)
    assert recording.header["record"] == "events"
    assert [i["in"] for i in recording.inputs()] == ["text"]
    assert any(e["type"] == "transcript" for e in recording.events())


def test_a_changed_reply_policy_makes_the_replay_differ(recordings: dict[str, Path], tmp_path: Path) -> None:
    recording = read(recordings["barge_in"])
    config = recording.header["config"]
    config["pipeline"]["turn_taking"]["barge_in"] = False  # the agent no longer lets itself be interrupted
    comparison = replay(recording, config)
    assert comparison.differs
    text = "\n".join(comparison.lines)
    assert "differs" in text and "interrupted" in text


def test_vocable_replay_exits_1_on_a_difference_and_says_what(recordings: dict[str, Path], tmp_path: Path) -> None:
    path = recordings["barge_in"]
    same = subprocess.run([sys.executable, "-m", "vocable.cli", "replay", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no difference" in same.stdout
    policy = recorded_config(CONVERSATIONS["barge_in"][0], tmp_path)
    policy["pipeline"]["turn_taking"] = {"barge_in": False}
    policy["plugins"] = {"modules": ["vocable.testing.plugin"]}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    differs = subprocess.run([sys.executable, "-m", "vocable.cli", "replay", str(path), "-c", str(tmp_path / "policy.yaml")],
                             capture_output=True, text=True, timeout=120)
    assert differs.returncode == 1, differs.stdout + differs.stderr
    out = differs.stdout
    assert "turn 1: interrupted: recorded \"barge_in, the reply written so far:" in out, out  # barged in, then
    assert "replayed \"new_turn, the reply" in out, out  # not: the user's turn ended it


def test_normalized_events_ignore_ids_audio_frames_and_latency() -> None:
    a = [{"type": "transcript", "text": "hi", "final": True, "turn_id": "turn_a"},
         {"type": "audio", "bytes": 640, "sample_rate": 16000, "turn_id": "turn_a"},
         {"type": "audio", "bytes": 640, "sample_rate": 16000, "turn_id": "turn_a"},
         {"type": "metrics", "turn_id": "turn_a", "stt_ms": 12.5, "interrupted": False}]
    b = [dict(e, turn_id="turn_b") for e in a[:2]] + [{**a[3], "turn_id": "turn_b", "stt_ms": 99.0}]
    assert normalized(a) == normalized(b) == [
        {"type": "transcript", "text": "hi", "final": True, "turn_id": "turn1"},
        {"type": "audio", "turn_id": "turn1"},
        {"type": "metrics", "turn_id": "turn1", "interrupted": False}]
    assert json.dumps(normalized(a))


def test_live_providers_compare_turn_by_turn(recordings: dict[str, Path], tmp_path: Path) -> None:
    """`--providers live`: the config's own providers, in real time; the words must match, latency is shown."""
    config = recorded_config(CONVERSATIONS["spoken_then_typed"][0], tmp_path)
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(config))
    config["pipeline"]["llm"] = {"provider": "scripted", "reply": "It will rain. Take an umbrella."}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(config))
    path = str(recordings["spoken_then_typed"])
    same = subprocess.run([sys.executable, "-m", "vocable.cli", "replay", path, "-c", str(tmp_path / "same.yaml"),
                           "--providers", "live"], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "turn 1: stt_ms" in same.stdout and "voice_to_voice_ms" in same.stdout and "no difference" in same.stdout
    changed = subprocess.run([sys.executable, "-m", "vocable.cli", "replay", path, "-c", str(tmp_path / "changed.yaml"),
                              "--providers", "live"], capture_output=True, text=True, timeout=120)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "turn 1: reply: recorded 'It is sunny. Take a hat with you today.', replayed 'It will rain. Take an umbrella.'" \
        in changed.stdout, changed.stdout
