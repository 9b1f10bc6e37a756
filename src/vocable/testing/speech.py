"""Test speech from Debian's espeak-ng: real spoken audio without a network or a model download."""

from __future__ import annotations

import shutil
import subprocess
import wave
from io import BytesIO

import numpy as np

from vocable.engine.audio import resample_pcm


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


def silence(ms: int, sample_rate: int = 16000) -> bytes:
    return b"\x00\x00" * (sample_rate * ms // 1000)


def rms(pcm: bytes) -> float:
    """Root-mean-square level of PCM16 (0..32767): the simplest check that audio is speech, not silence."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def write_wav(path: str, pcm: bytes, sample_rate: int) -> None:
    with wave.open(path, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def read_wav(path: str) -> tuple[bytes, int]:
    """Read a 16-bit PCM WAV (stereo is mixed down); raise ValueError naming what is wrong otherwise."""
    try:
        with wave.open(path, "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ValueError(f"{path}: expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit")
            pcm = wav.readframes(wav.getnframes())
            rate, channels = wav.getframerate(), wav.getnchannels()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc or 'truncated'})") from None
    if channels != 1:
        samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).mean(axis=1)
        pcm = samples.astype("<i2").tobytes()
    return pcm, rate
