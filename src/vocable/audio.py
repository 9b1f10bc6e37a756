"""PCM16 helpers: resampling (soxr, streaming), framing, silence and WAV files.

Audio everywhere in vocable is signed 16-bit little-endian mono PCM in ``bytes``. This module is at the bottom
of vocable's layers (it imports nothing from vocable): providers, the engine, transports and ``vocable talk``
all use it. ``vocable.engine.audio`` and ``vocable.testing.speech`` re-export its names.
"""

from __future__ import annotations

import wave

import numpy as np
import soxr

SAMPLE_WIDTH = 2


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole clip (one shot). For streams use ``Resampler``."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype("<i2").tobytes()


class Resampler:
    """Stateful streaming resampler: chunk boundaries leave no clicks. A no-op when the rates match."""

    __slots__ = ("from_rate", "to_rate", "passthrough", "_stream")

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self.passthrough = from_rate == to_rate  # hot paths may skip the call altogether
        self._stream = None if self.passthrough else soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality="HQ")

    def __call__(self, pcm: bytes, *, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return self._stream.resample_chunk(samples, last=last).tobytes()


class Framer:
    """Cuts a byte stream into fixed-size frames, keeping the remainder for the next push."""

    __slots__ = ("frame_bytes", "_buffer")

    def __init__(self, frame_samples: int) -> None:
        self.frame_bytes = frame_samples * SAMPLE_WIDTH
        self._buffer = bytearray()

    def aligned(self, pcm: bytes) -> bool:
        """True if ``pcm`` is exactly one frame and nothing is pending: it is its own frame, as it is."""
        return len(pcm) == self.frame_bytes and not self._buffer and type(pcm) is bytes

    def push(self, pcm: bytes) -> list[bytes]:
        if self.aligned(pcm):  # one message, one frame: the common case
            return [pcm]
        self._buffer += pcm
        n = len(self._buffer) // self.frame_bytes
        if n == 0:
            return []
        cut = n * self.frame_bytes
        frames = [bytes(self._buffer[i : i + self.frame_bytes]) for i in range(0, cut, self.frame_bytes)]
        del self._buffer[:cut]
        return frames

    def rest(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


def duration_ms(pcm_bytes: int, sample_rate: int) -> float:
    return pcm_bytes / SAMPLE_WIDTH * 1000.0 / sample_rate


def silence(ms: int, sample_rate: int = 16000) -> bytes:
    return b"\x00\x00" * (sample_rate * ms // 1000)


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
