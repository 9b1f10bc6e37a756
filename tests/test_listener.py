"""The turn-taking state machine on its own: speech start, pre-roll, pauses, speculation, end of turn."""

from __future__ import annotations

from vocable.config.model import TurnTakingConfig
from vocable.engine.listener import END_OF_TURN, FORWARD, SPECULATE, SPEECH, STARTED, Listener
from vocable.providers.base import VADStream
from vocable.providers.silence_turn import SilenceTurnDetector

LOUD, QUIET = b"\x01" * 640, b"\x00" * 640  # 20 ms frames at 16 kHz


class ByteVAD(VADStream):
    def probability(self, frame: bytes) -> float:
        return 1.0 if frame[0] else 0.0


def listener(**taking) -> Listener:
    turn = SilenceTurnDetector(SilenceTurnDetector.Settings(hangover_ms=200)).open()
    config = TurnTakingConfig(**{"min_speech_ms": 40, "pre_roll_ms": 100, **taking})
    return Listener(ByteVAD(), turn, config, 20.0, 16000)


def test_speech_starts_after_min_speech_with_pre_roll():
    ear = listener()
    assert [ear.hear(f) for f in (QUIET,) * 10] == [0] * 10
    assert ear.hear(LOUD) == 0  # 20 ms is not yet speech
    assert ear.hear(LOUD) == STARTED | SPEECH
    preroll = ear.take_preroll()
    assert len(preroll) == 5 and preroll[-1] == LOUD and preroll[-2] == LOUD  # 100 ms, ending with speech
    assert ear.speaking and ear.utterance_speech_ms == 40


def test_a_short_pause_does_not_end_the_turn_and_a_long_one_does():
    ear = listener()
    for _ in range(3):
        ear.hear(LOUD)
    assert [ear.hear(QUIET) for _ in range(9)] == [FORWARD] * 9  # 180 ms pause
    assert ear.hear(LOUD) == FORWARD | SPEECH
    flags = [ear.hear(QUIET) for _ in range(10)]
    assert flags[:9] == [FORWARD] * 9 and flags[9] == FORWARD | END_OF_TURN
    assert not ear.speaking


def test_speculation_fires_once_per_pause():
    ear = listener(speculative_ms=100)
    for _ in range(3):
        ear.hear(LOUD)
    flags = [ear.hear(QUIET) for _ in range(6)]
    assert flags.count(FORWARD | SPECULATE) == 1 and flags[4] == FORWARD | SPECULATE
    ear.hear(LOUD)
    flags = [ear.hear(QUIET) for _ in range(10)]
    assert flags.count(FORWARD | SPECULATE) == 1 and flags[-1] == FORWARD | END_OF_TURN
