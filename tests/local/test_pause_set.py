"""The offline default's end of turn on Piper speech: a hesitation is waited out, a question is not.

Two ways, both on the real models:

- the detector in lockstep with its models (each frame waits for any inference under way, so the figures are
  those of the rule, whatever the machine's load): a 600 ms pause after "could" never ends the turn; a complete
  question ends it before the old 500 ms hangover would;
- the whole offline default fed at real time, as a microphone would: the utterance with the pause is one turn
  with every word, answered.

The utterances come from the pause set (``benchmarks/data``, ``benchmarks/make_pause_set.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.localkit import offline_config, speak, start, stop, words
from vocable import Engine
from vocable.engine.events import MetricsEvent, Transcript
from vocable.providers.local import DynamicTurn, WhisperSTT
from vocable.testing.speech import read_wav, silence

pytest.importorskip("pipecat", reason="the dynamic end of turn needs Smart Turn (pip install 'vocable[local,smart-turn]')")
pytest.importorskip("faster_whisper")

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"
FRAME_MS = 32.0  # Silero's frames: the engine asks the detector once per frame
SPECULATIVE_MS = 120  # the offline default's turn_taking.speculative_ms: when the words of the pause are asked for
OLD_HANGOVER_MS = 500


def utterance(name: str) -> tuple[dict, bytes]:
    manifest = json.loads((DATA / "manifest.json").read_text())
    entry = next(u for u in manifest["utterances"] if u["file"] == f"{name}.wav")
    pcm, rate = read_wav(str(DATA / entry["file"]))
    assert rate == 16000
    return entry, pcm


def with_pause(name: str, pause_ms: int) -> tuple[bytes, bytes]:
    """A paused utterance of the set, its pause made exactly ``pause_ms``: (before the pause, after it)."""
    entry, pcm = utterance(name)
    return pcm[: entry["pause_start_ms"] * 32], silence(pause_ms) + pcm[entry["pause_end_ms"] * 32:]


@pytest.fixture(scope="module")
def dynamic() -> Iterator[DynamicTurn]:
    provider = start(DynamicTurn())
    assert provider.mode == "smart-turn"
    yield provider
    stop(provider)


def lockstep_pause(detector: DynamicTurn, whisper: WhisperSTT, speech: bytes, pause_ms: float) -> float | None:
    """One pause after ``speech``, frame by frame as the engine drives it, the words of the pause reported as the
    speculative final reports them; each frame waits for the model's inference. When did the turn end?"""
    stream = detector.open()
    heard = bytearray(speech)
    pause = 0.0
    reported = False
    while pause + FRAME_MS <= pause_ms:
        pause += FRAME_MS
        heard += silence(int(FRAME_MS))
        if stream.on_pause(heard, pause, 16000):
            return pause
        if stream._pending is not None:  # lockstep: the model's verdict is in before the next frame
            stream._pending.exception(timeout=60)
        if not reported and pause >= SPECULATIVE_MS:
            stream.on_words(whisper.decode(bytes(heard), 16000)[0])
            reported = True
    return None


def test_a_600_ms_pause_mid_sentence_is_not_cut(dynamic, whisper):
    before, _ = with_pause("paused_10", 600)  # Piper: "I was wondering if you could ... help me with my homework."
    assert lockstep_pause(dynamic, whisper, before, 600) is None


def test_a_complete_question_ends_before_the_old_hangover_would(dynamic, whisper):
    _, question = utterance("complete_00")  # Piper: "What is the capital of France?"
    ended = lockstep_pause(dynamic, whisper, question, dynamic.settings.max_silence_ms)
    assert ended is not None and dynamic.settings.min_silence_ms <= ended < OLD_HANGOVER_MS


@pytest.mark.skipif(not DATA.joinpath("manifest.json").exists(), reason="no pause set")
async def test_the_offline_default_hears_a_hesitation_out_at_real_time():
    pytest.importorskip("llama_cpp")
    pytest.importorskip("piper")
    before, after = with_pause("paused_10", 600)
    engine = Engine.from_dict(offline_config(llm={"provider": "smollm", "max_tokens": 24}))
    await engine.start()
    try:
        async with engine.conversation() as conv:
            finals: list[tuple[float, str]] = []
            loop = asyncio.get_running_loop()

            async def listen() -> MetricsEvent:
                while True:
                    event = await conv.session.events.get()
                    if isinstance(event, Transcript) and event.final:
                        finals.append((loop.time(), event.text))
                    if isinstance(event, MetricsEvent):
                        return event

            listener = asyncio.create_task(listen())
            await speak(conv, silence(300) + before)
            resumed_at = loop.time() + 0.6  # the pause is 600 ms of the next clip
            await speak(conv, after + silence(1600))
            metrics = await asyncio.wait_for(listener, 120)
    finally:
        await engine.stop()
    assert len(finals) == 1, finals
    at, text = finals[0]
    assert at > resumed_at, "the turn ended inside the pause"
    assert {"wondering", "homework"} <= words(text), text
    assert metrics.figures["voice_to_voice_ms"] is not None
