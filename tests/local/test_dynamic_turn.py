"""``dynamic`` end of turn (the offline default): its rule with a stand-in model, and its fallback without one.

The rule on the real Smart Turn model and Piper speech is in ``test_pause_set.py``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from importlib import resources

import pytest
import yaml
from pydantic import ValidationError

from vocable.providers.errors import CapacityExceeded
from vocable.providers.local import DynamicTurn, smart_turn
from vocable.providers.local.dynamic_turn import DynamicTurnStream, sounds_unfinished

FRAME_MS = 32.0
UTTERANCE = b"\x00\x01" * 16000


def detector(probability: float | None = None, *, fail: Exception | None = None, **settings) -> DynamicTurn:
    """A started ``dynamic`` detector whose model answers ``probability`` at once (no onnxruntime)."""
    turn = DynamicTurn(DynamicTurn.Settings(**settings))

    def submit(utterance: bytes, sample_rate: int) -> Future[float]:
        if isinstance(fail, CapacityExceeded):
            raise fail
        future: Future[float] = Future()
        if fail is not None:
            future.set_exception(fail)
        elif probability is not None:
            future.set_result(probability)
        return future

    turn.model.submit = submit  # type: ignore[method-assign]
    turn.mode = "smart-turn"
    return turn


def pause_end(stream, *, words: str | None = None, words_at_ms: float = 160.0, limit_ms: float = 3000.0) -> float | None:
    """Drive one pause frame by frame in audio time, as the listener does; the words of the pause arrive
    between frames, once the pause has lasted ``words_at_ms``."""
    pause = FRAME_MS
    while pause <= limit_ms:
        if stream.on_pause(UTTERANCE, pause, 16000):
            return pause
        if words is not None and pause >= words_at_ms:
            stream.on_words(words)
            words = None
        pause += FRAME_MS
    return None


def test_the_offline_default_ends_turns_dynamically():
    text = resources.files("vocable.config").joinpath("default.yaml").read_text(encoding="utf-8")
    turn = yaml.safe_load(text)["pipeline"]["turn"]
    assert turn == {"provider": "dynamic", "min_silence_ms": 200, "max_silence_ms": 1200}
    assert DynamicTurn.Settings(**{k: v for k, v in turn.items() if k != "provider"})


def test_max_silence_must_be_longer_than_min_silence():
    with pytest.raises(ValidationError, match="max_silence_ms must be longer"):
        DynamicTurn.Settings(min_silence_ms=500, max_silence_ms=400)


@pytest.mark.parametrize(("text", "unfinished"), [
    ("I'd like to book a table for", True),
    ("Can you play some music by...?", True),
    ("Remind me to call my...", True),
    ("So I was thinking, um", True),
    ("Tell me,", True),
    ("What is the capital of France?", False),
    ("Book me a taxi.", False),
    ("", False),
])
def test_words_that_cannot_end_a_sentence(text, unfinished):
    assert sounds_unfinished(text) is unfinished


def test_without_smart_turn_it_falls_back_to_a_fixed_silence(monkeypatch):
    monkeypatch.setattr(smart_turn, "MODEL_DISTRIBUTION", "pipecat-ai-not-installed-here")
    turn = DynamicTurn(DynamicTurn.Settings(fallback_ms=500))
    asyncio.run(turn.start())
    assert turn.mode == "silence"
    assert "pip install 'vocable[local,smart-turn]'" in (turn.fallback_reason or "")
    stream = turn.open()
    assert not isinstance(stream, DynamicTurnStream)
    assert pause_end(stream) == pytest.approx(512.0)  # the first 32 ms frame at or past 500 ms


def test_finished_words_end_the_turn_as_soon_as_they_come():
    stream = detector(0.3).open()  # the model is unsure; the words are not
    assert pause_end(stream, words="What is two plus two?", words_at_ms=260) == pytest.approx(320.0)


def test_the_model_is_asked_after_min_silence_only():
    stream = detector(0.99).open()
    assert pause_end(stream, words="What is the capital of France?", words_at_ms=0) == pytest.approx(224.0)


def test_unfinished_words_wait_for_max_silence_whatever_the_model_says():
    stream = detector(0.99).open()
    assert pause_end(stream, words="I'd like to book a table for") == pytest.approx(1216.0)


def test_a_model_sure_the_speaker_goes_on_vetoes_finished_words():
    stream = detector(0.05).open()
    assert pause_end(stream, words="I'd like a large pizza.") == pytest.approx(1216.0)


def test_no_words_expected_lets_the_model_decide_alone():
    complete, unsure = detector(0.9).open(), detector(0.3).open()
    complete.expect_words(False)
    unsure.expect_words(False)
    assert pause_end(complete) == pytest.approx(224.0)
    assert pause_end(unsure) == pytest.approx(1216.0)


def test_words_expected_but_never_coming_wait_for_max_silence():
    assert pause_end(detector(0.99).open()) == pytest.approx(1216.0)


def test_speech_starts_the_pause_over_and_forgets_its_words():
    stream = detector(0.99).open()
    assert not stream.on_pause(UTTERANCE, 250.0, 16000)
    stream.on_words("I'd like to book a table for")
    stream.on_speech()
    stream.on_words("words reported between pauses are not this pause's")
    assert stream.words is None and stream.probability is None
    assert pause_end(stream, words="I'd like to book a table for four people.") == pytest.approx(224.0)


def test_a_model_that_cannot_answer_leaves_the_words_to_decide():
    full = detector(fail=CapacityExceeded("full", provider="smart-turn")).open()
    broken = detector(fail=RuntimeError("onnxruntime")).open()
    assert pause_end(full, words="What is the capital of France?") == pytest.approx(224.0)
    assert pause_end(broken, words="What is the capital of France?") == pytest.approx(224.0)
    assert pause_end(detector(fail=RuntimeError("onnxruntime")).open()) == pytest.approx(1216.0)


def test_without_the_model_the_words_decide_alone():
    turn = DynamicTurn(DynamicTurn.Settings(model=False))
    asyncio.run(turn.start())
    assert turn.mode == "words"
    assert pause_end(turn.open(), words="What is the capital of France?") == pytest.approx(224.0)
    assert pause_end(turn.open(), words="I'd like to book a table for") == pytest.approx(1216.0)
