"""Test speech from Debian's espeak-ng: real spoken audio without a network or a model download."""

from __future__ import annotations

import shutil
import subprocess
import wave
from io import BytesIO

import numpy as np

from vocable.audio import read_wav, resample_pcm, silence, write_wav  # noqa: F401 - re-exported


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_pcm(text: str, *, sample_rate: int = 16000, voice: str = "en-us", speed: int = 160) -> bytes:
    """Speak ``text`` with espeak-ng and return mono PCM16 at ``sample_rate``."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng")
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(BytesIO(out)) as wav:
        rate = wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    return resample_pcm(pcm, rate, sample_rate)


def rms(pcm: bytes) -> float:
    """Root-mean-square level of PCM16 (0..32767): the simplest check that audio is speech, not silence."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
