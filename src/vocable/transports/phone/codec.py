"""G.711 for phone audio: μ-law (PCMU) and A-law (PCMA) at 8 kHz, to and from vocable's PCM16.

Carriers stream 8 kHz G.711. The conversion comes from a maintained library: the standard library's
``audioop`` up to Python 3.12, the ``audioop-lts`` package (the same module, kept up) on 3.13 and later.
Where neither imports, the same tables are built here with numpy (ITU-T G.711, bit-exact with ``audioop``:
tests/phone/test_playout.py compares every one of the 65,536 samples).

``PhoneAudioOut`` turns the session's reply audio (PCM16 at the session's output rate) into 20 ms G.711
frames: low-pass filtered, decimated or resampled with soxr (``Downsampler``), encoded, framed.
``PhoneAudioIn`` turns the caller's G.711 into PCM16 at 16 kHz, frame by frame.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np


Encoding = Literal["mulaw", "alaw"]

PHONE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = PHONE_RATE * FRAME_MS // 1000  # one byte a sample
SILENCE = {"mulaw": b"\xff", "alaw": b"\xd5"}  # the code of a zero sample

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # stdlib audioop (3.11, 3.12) warns on import
        import audioop as _audioop  # audioop-lts provides this module on 3.13+
except ImportError:  # pragma: no cover - the numpy tables below take over
    _audioop = None


# ----------------------------------------------------------------------------------- numpy tables


def _ulaw_encode_one(sample: int) -> int:
    value = sample >> 2  # 14 bits, as G.711's reference code (and audioop) count
    mask = 0x7F if value < 0 else 0xFF
    value = min(8159, -value if value < 0 else value) + 33
    segment = (value >> 6).bit_length()  # the segments end at 0x3F, 0x7F, ... 0x1FFF
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _alaw_encode_one(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    magnitude = (sample if sample >= 0 else -sample - 1) >> 3  # 13-bit magnitude, as G.711 counts it
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = min(7, magnitude.bit_length() - 5)
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


def _ulaw_decode_one(code: int) -> int:
    code = ~code & 0xFF
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if code & 0x80 else magnitude


def _alaw_decode_one(code: int) -> int:
    code ^= 0x55
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if code & 0x80 else -magnitude


def _tables(encode: Callable[[int], int], decode: Callable[[int], int]) -> tuple[np.ndarray, np.ndarray]:
    """(encoder indexed by a sample's 16 bits as unsigned, decoder indexed by the code)."""
    samples = np.arange(65536, dtype=np.uint16).view(np.int16)
    encoder = np.fromiter((encode(int(s)) for s in samples), dtype=np.uint8, count=65536)
    decoder = np.fromiter((decode(c) for c in range(256)), dtype="<i2", count=256)
    return encoder, decoder


_TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def numpy_tables(encoding: Encoding) -> tuple[np.ndarray, np.ndarray]:
    """The G.711 tables for ``encoding``, built once (about 0.1 s each)."""
    if encoding not in _TABLES:
        pair = (_ulaw_encode_one, _ulaw_decode_one) if encoding == "mulaw" else (_alaw_encode_one, _alaw_decode_one)
        _TABLES[encoding] = _tables(*pair)
    return _TABLES[encoding]


def numpy_encode(pcm: bytes, encoding: Encoding) -> bytes:
    encoder, _ = numpy_tables(encoding)
    return encoder[np.frombuffer(pcm, dtype="<i2").view(np.uint16)].tobytes()


def numpy_decode(data: bytes, encoding: Encoding) -> bytes:
    _, decoder = numpy_tables(encoding)
    return decoder[np.frombuffer(data, dtype=np.uint8)].tobytes()


# ----------------------------------------------------------------------------------- the codec


def encoder(encoding: Encoding) -> Callable[[bytes], bytes]:
    """PCM16 -> G.711 bytes (one byte a sample)."""
    if _audioop is not None:
        convert = _audioop.lin2ulaw if encoding == "mulaw" else _audioop.lin2alaw
        return lambda pcm: convert(pcm, 2)
    return lambda pcm: numpy_encode(pcm, encoding)


def decoder(encoding: Encoding) -> Callable[[bytes], bytes]:
    """G.711 bytes -> PCM16."""
    if _audioop is not None:
        convert = _audioop.ulaw2lin if encoding == "mulaw" else _audioop.alaw2lin
        return lambda data: convert(data, 2)
    return lambda data: numpy_decode(data, encoding)


class PhoneAudioIn:
    """The caller's G.711 -> PCM16 at 16 kHz (the pipeline's usual rate), 20 ms in -> 20 ms out.

    Doubling the rate here, by zero-stuffing and a low-pass FIR (Kaiser windowed sinc, cut at 3.8 kHz), costs
    less than the session's soxr resampler would and, unlike soxr's filtering qualities, keeps each frame's
    audio in that frame: soxr releases 8 -> 16 kHz in blocks of 100 ms, which would delay every end of turn
    by up to as much.
    """

    RATE = 16000
    __slots__ = ("_decode", "_taps", "_history")

    def __init__(self, encoding: Encoding = "mulaw", cutoff_hz: float = 3800.0, taps: int = 33) -> None:
        self._decode = decoder(encoding)
        m = np.arange(taps) - (taps - 1) / 2
        h = np.sinc(2 * cutoff_hz / self.RATE * m) * np.kaiser(taps, 8.0)
        self._taps = (2 * h / h.sum()).astype(np.float32)  # x2: half the stuffed samples are zeros
        self._history = np.zeros(taps - 1, dtype=np.float32)

    def __call__(self, data: bytes) -> bytes:
        samples = np.frombuffer(self._decode(data), dtype="<i2")
        stuffed = np.zeros(len(self._history) + 2 * len(samples), dtype=np.float32)
        stuffed[: len(self._history)] = self._history
        stuffed[len(self._history) :: 2] = samples
        self._history = stuffed[-len(self._history):]
        out = np.convolve(stuffed, self._taps, mode="valid")
        return np.clip(out, -32768, 32767).astype("<i2").tobytes()


class Downsampler:
    """PCM16 at ``from_rate`` -> PCM16 at 8 kHz, streaming, 20 ms in -> 20 ms out.

    soxr's filtering qualities (LQ and up) release their output in blocks of 60-100 ms, which would delay
    every reply and put marks off by as much. So the anti-alias filter is a low-pass FIR here (Kaiser
    windowed sinc, cut at 3.6 kHz: the telephone band is 300-3400 Hz; ~2 ms of delay). From a multiple of
    8 kHz (16, 24, 48 kHz) the filtered signal is then simply decimated; from other rates (22.05, 44.1 kHz)
    soxr's quick interpolator ("QQ", which gives each frame's samples at once) changes its rate.
    """

    __slots__ = ("from_rate", "_taps", "_history", "_stream", "_step", "_phase")

    def __init__(self, from_rate: int, cutoff_hz: float = 3600.0) -> None:
        self.from_rate = from_rate
        n = int(from_rate / PHONE_RATE * 32) | 1
        m = np.arange(n) - (n - 1) / 2
        taps = np.sinc(2 * cutoff_hz / from_rate * m) * np.kaiser(n, 8.0)
        self._taps = (taps / taps.sum()).astype(np.float32)
        self._history = np.zeros(n - 1, dtype=np.float32)
        self._step = from_rate // PHONE_RATE if from_rate % PHONE_RATE == 0 else 0
        self._phase = 0  # decimating: the index, in the next filtered block, of the first sample kept
        self._stream = None
        if not self._step:
            import soxr

            self._stream = soxr.ResampleStream(from_rate, PHONE_RATE, 1, dtype="float32", quality="QQ")

    def __call__(self, pcm: bytes) -> bytes:
        block = np.concatenate([self._history, np.frombuffer(pcm, dtype="<i2").astype(np.float32)])
        self._history = block[-len(self._history):]
        filtered = np.convolve(block, self._taps, mode="valid")
        if self._step:
            out = filtered[self._phase :: self._step]
            self._phase = (self._phase - len(filtered)) % self._step
        else:
            out = self._stream.resample_chunk(filtered)
        return np.clip(out, -32768, 32767).astype("<i2").tobytes()


class PhoneAudioOut:
    """Reply audio (PCM16 at ``from_rate``) -> 20 ms G.711 frames at 8 kHz, streaming."""

    __slots__ = ("encoding", "_resample", "_encode", "_buffer", "from_rate")

    def __init__(self, from_rate: int, encoding: Encoding = "mulaw") -> None:
        self.from_rate = from_rate
        self.encoding = encoding
        self._resample: Callable[[bytes], bytes] = Downsampler(from_rate) if from_rate != PHONE_RATE else bytes
        self._encode = encoder(encoding)
        self._buffer = b""

    def push(self, pcm: bytes) -> list[bytes]:
        """The whole 20 ms frames ``pcm`` completes (the rest waits for the next push or ``flush``)."""
        data = self._buffer + self._encode(self._resample(pcm))
        whole = len(data) - len(data) % FRAME_BYTES
        self._buffer = data[whole:]
        return [data[i : i + FRAME_BYTES] for i in range(0, whole, FRAME_BYTES)]

    def flush(self) -> list[bytes]:
        """The last partial frame, padded with silence (the end of a reply)."""
        rest, self._buffer = self._buffer, b""
        if not rest:
            return []
        return [rest + SILENCE[self.encoding] * (FRAME_BYTES - len(rest))]

    def reset(self) -> None:
        """Drop what is buffered (an interruption): the next reply starts clean."""
        self._buffer = b""
        if self.from_rate != PHONE_RATE:
            self._resample = Downsampler(self.from_rate)
