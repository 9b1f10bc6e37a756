"""``vocable talk`` on the scripted fakes: a recording with pauses is one turn, and its whole reply is written.

The "phrases" are tones the energy VAD hears as speech, 900 ms apart: longer than the 300 ms hangover, so
each pause would end a turn live. The scripted STT says the next scripted transcript for each utterance; for
the whole file it also finalises each phrase by itself after 400 ms of quiet (as a streaming STT does), so the
transcript shows which phrases were heard.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vocable.config.loader import parse_config
from vocable.talk import TalkResult, run_talk, talk_engine
from vocable.testing.fakes import ScriptedTTSSettings, tone
from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config
from vocable.testing.speech import read_wav, silence, write_wav

RATE = 16000
PHRASES = ["one apple", "two bananas", "three cherries"]
FRAME_BYTES = RATE * 20 // 1000 * 2  # the engine's 20 ms output frames at the scripted voice's 16 kHz


def recording(path: Path, phrases: int = len(PHRASES), pause_ms: int = 900) -> str:
    pcm = silence(200, RATE)
    for i in range(phrases):
        pcm += (silence(pause_ms, RATE) if i else b"") + tone(600, RATE)
    write_wav(str(path), pcm + silence(200, RATE), RATE)
    return str(path)


def talk_config(endpointing_ms: int = 400, **agent: str) -> dict:
    config = scripted_config(
        stt={"provider": "scripted", "transcripts": PHRASES, "endpointing_ms": endpointing_ms},
        llm={"provider": "scripted", "echo": True},
    )
    config["agent"] = agent
    return config


async def talk(tmp_path: Path, *, turns: bool = False, phrases: int = len(PHRASES), **agent: str):
    config = talk_config(0 if turns else 400, **agent)  # with turns, each utterance ends at the engine's FLUSH
    engine = talk_engine(parse_config(config), turns=turns, autoload=False, plugins=SCRIPTED_PLUGINS)
    out = tmp_path / "reply.wav"
    result = await run_talk(engine, recording(tmp_path / "in.wav", phrases), str(out), timeout_s=30)
    tts = engine.runtime.tts[0].provider
    return result, out, tts


def spoken_bytes(texts: list[str]) -> int:
    """What the scripted voice makes of ``texts`` (one reply), cut into whole 20 ms frames as the engine sends it."""
    voice = ScriptedTTSSettings()
    samples = sum(int(RATE * max(voice.chunk_ms, len(t) * voice.ms_per_char) / 1000) for t in texts)
    return math.ceil(samples * 2 / FRAME_BYTES) * FRAME_BYTES


def assert_file_holds(out: Path, result: TalkResult) -> None:
    pcm, rate = read_wav(str(out))
    assert rate == RATE == result.sample_rate
    assert pcm == b"".join(bytes(turn.audio) for turn in result.turns)
    assert len(pcm) / 2 / rate == pytest.approx(result.audio_seconds)


async def test_a_recording_with_pauses_is_one_turn_and_its_whole_reply_is_written(tmp_path):
    result, out, tts = await talk(tmp_path)
    assert [turn.transcript for turn in result.turns] == [" ".join(PHRASES)]
    turn = result.turns[0]
    assert turn.reply == f"You said: {' '.join(PHRASES)}."
    assert turn.latency["voice_to_voice_ms"] is not None  # answered, not cut off
    assert " ".join(tts.counters.requests) == turn.reply  # every sentence of the reply was spoken...
    assert len(turn.audio) == spoken_bytes(tts.counters.requests)  # ...and every frame of it is kept
    assert_file_holds(out, result)
    assert result.audio_seconds > 0.3


async def test_turns_lets_each_pause_end_a_turn_and_writes_every_reply_in_order(tmp_path):
    result, out, tts = await talk(tmp_path, turns=True)
    assert [turn.transcript for turn in result.turns] == PHRASES
    assert [turn.reply for turn in result.turns] == [f"You said: {p}." for p in PHRASES]
    assert all(turn.latency["voice_to_voice_ms"] is not None for turn in result.turns)  # none cut off
    assert tts.counters.requests == [turn.reply for turn in result.turns]
    for turn in result.turns:
        assert len(turn.audio) == spoken_bytes([turn.reply])
    assert_file_holds(out, result)


async def test_a_single_phrase_is_one_turn_either_way(tmp_path):
    for turns in (False, True):
        result, out, _ = await talk(tmp_path, turns=turns, phrases=1)
        assert [turn.transcript for turn in result.turns] == [PHRASES[0]]
        assert_file_holds(out, result)


async def test_a_greeting_is_heard_out_first_and_kept_out_of_the_reply(tmp_path):
    result, out, tts = await talk(tmp_path, greeting="Hello there.")
    assert tts.counters.requests[0] == "Hello there."
    assert [turn.transcript for turn in result.turns] == [" ".join(PHRASES)]
    assert len(result.turns[0].audio) == spoken_bytes(tts.counters.requests[1:])
    assert_file_holds(out, result)


async def test_a_silent_file_says_no_speech_was_recognised(tmp_path):
    quiet = tmp_path / "quiet.wav"
    write_wav(str(quiet), silence(1000, RATE), RATE)
    engine = talk_engine(parse_config(talk_config()), autoload=False, plugins=SCRIPTED_PLUGINS)
    with pytest.raises(RuntimeError, match="no speech was recognised"):
        await run_talk(engine, str(quiet), None, timeout_s=30)
