"""``smart-turn``: the Smart Turn v3 model from an installed pipecat-ai, with vocable's own features.

Skipped as a whole when pipecat-ai is not installed (it is an optional ~500 MB install).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from local.localkit import start, stop
from vocable.providers.local import SmartTurn
from vocable.providers.local._mel import fit_to_seconds, log_mel
from vocable.testing.speech import espeak_pcm, silence

pytest.importorskip("pipecat", reason="smart-turn needs pipecat-ai installed (pip install pipecat-ai)")

pytestmark = pytest.mark.slow

FRAME_MS = 32.0


@pytest.fixture(scope="module")
def smart_turn() -> Iterator[SmartTurn]:
    provider = start(SmartTurn())
    yield provider
    stop(provider)


def pause_until_end(detector: SmartTurn, utterance: bytes, *, limit_ms: float = 5000) -> float | None:
    """Drive one pause the way the engine does, a call per silent frame in real time; when did the turn end?"""
    stream = detector.open()
    pause = 0.0
    while pause <= limit_ms:
        if stream.on_pause(utterance, pause, 16000):
            return pause
        time.sleep(FRAME_MS / 1000)  # the model runs in the pool meanwhile
        pause += FRAME_MS
    return None


def test_a_complete_question_ends_the_turn_soon(smart_turn: SmartTurn) -> None:
    ended = pause_until_end(smart_turn, espeak_pcm("What is the capital of France?") + silence(200))
    settings = smart_turn.settings
    assert ended is not None and settings.min_pause_ms <= ended < settings.max_pause_ms


def test_a_trailing_off_sentence_waits_for_max_pause(smart_turn: SmartTurn) -> None:
    ended = pause_until_end(smart_turn, espeak_pcm("So I was thinking, um,") + silence(200))
    assert ended is not None and ended >= smart_turn.settings.max_pause_ms


def test_speech_resets_the_pause(smart_turn: SmartTurn) -> None:
    stream = smart_turn.open()
    utterance = espeak_pcm("What is the capital of France?")
    assert not stream.on_pause(utterance, 0.0, 16000)
    assert not stream.on_pause(utterance, 250.0, 16000)  # inference started
    stream.on_speech()  # the user went on: that inference no longer counts
    time.sleep(0.3)
    assert not stream.on_pause(utterance, 100.0, 16000)  # below min_pause_ms again
    assert not stream.on_pause(utterance, 250.0, 16000)  # asks the model afresh, answers later


def test_the_engine_may_grow_its_buffer_meanwhile(smart_turn: SmartTurn) -> None:
    utterance = bytearray(espeak_pcm("What is the capital of France?"))
    stream = smart_turn.open()
    stream.on_pause(utterance, 0.0, 16000)
    stream.on_pause(utterance, 250.0, 16000)  # the model now reads a copy in its thread
    for _ in range(100):
        utterance += silence(32)  # a BufferError here would mean the thread holds the engine's buffer
        time.sleep(0.002)


def test_probability_of_other_sample_rates(smart_turn: SmartTurn) -> None:
    complete = smart_turn.probability(espeak_pcm("What is the capital of France?", sample_rate=8000), 8000)
    assert 0.0 <= complete <= 1.0


def test_features_match_pipecats_reference() -> None:
    from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

    audio = np.frombuffer(espeak_pcm("Hello there."), dtype="<i2").astype(np.float32) / 32768.0
    audio = fit_to_seconds(audio, 8.0)
    ours = log_mel(audio)
    assert ours.shape == (80, 800)
    np.testing.assert_allclose(ours, compute_whisper_log_mel_features(audio, do_normalize=True), atol=1e-4)
