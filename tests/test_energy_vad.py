"""The energy VAD decides the same way on its fast (audioop) and its numpy path, right at the threshold."""

from __future__ import annotations

import numpy as np
import pytest

from vocable.providers import energy_vad
from vocable.providers.energy_vad import EnergyVAD, EnergyVADSettings, threshold_amplitude


def constant_frame(amplitude: int, samples: int = 320) -> bytes:
    """A square wave of +-amplitude: its RMS is exactly ``amplitude``."""
    signal = np.full(samples, amplitude, dtype="<i2")
    signal[::2] *= -1
    return signal.tobytes()


@pytest.fixture(params=["audioop", "numpy"])
def stream(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if request.param == "audioop" and energy_vad._audioop is None:
        pytest.skip("no audioop on this Python")
    if request.param == "numpy":
        monkeypatch.setattr(energy_vad, "_audioop", None)
    return EnergyVAD(EnergyVADSettings(threshold_dbfs=-45.0)).open()


def test_threshold_is_whole_steps() -> None:
    assert threshold_amplitude(-45.0) == 185  # 32768 * 10**(-45/20) = 184.27
    assert threshold_amplitude(0.0) == 32768
    assert threshold_amplitude(-200.0) == 1


def test_decides_at_the_threshold(stream) -> None:
    limit = threshold_amplitude(-45.0)
    assert stream.probability(constant_frame(limit)) == 1.0
    assert stream.probability(constant_frame(limit - 1)) == 0.0
    assert stream.probability(constant_frame(5000)) == 1.0
    assert stream.probability(bytes(640)) == 0.0


def test_short_and_odd_frames(stream) -> None:
    assert stream.probability(b"") == 0.0
    assert stream.probability(b"\x01") == 0.0
    loud = constant_frame(5000)
    assert stream.probability(loud + b"\x7f") == 1.0  # an odd trailing byte is ignored, not an error


def test_paths_agree_on_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    if energy_vad._audioop is None:
        pytest.skip("no audioop on this Python")
    rng = np.random.default_rng(7)
    frames = [(rng.normal(0, scale, 320)).astype("<i2").tobytes() for scale in np.linspace(120, 260, 200)]
    fast = EnergyVAD().open()
    decided = [fast.probability(frame) for frame in frames]
    monkeypatch.setattr(energy_vad, "_audioop", None)
    assert [fast.probability(frame) for frame in frames] == decided
    assert 0 < sum(decided) < len(decided)  # the sweep crosses the threshold
