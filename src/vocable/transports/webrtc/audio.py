"""Audio between aiortc and a session: decoded Opus frames in, a paced reply track out.

Inbound, aiortc hands us ``av.AudioFrame`` objects (its Opus decoder gives 48 kHz interleaved stereo s16);
the session wants mono PCM16, so we downmix here and let the session resample to the pipeline rate.

Outbound, aiortc's RTP sender pulls frames from a track as fast as ``recv`` returns them, so the track owns
the clock: one 20 ms frame per 20 ms of wall time, silence when nothing is queued (RTP timing and the
browser's jitter buffer both want a continuous stream). Reply audio stays at the session's output rate;
aiortc's Opus encoder resamples to 48 kHz in one step. The queue is bounded, and ``clear`` drops it at once
on an interruption, so the listener hears at most the frame already handed to the encoder.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

FRAME_MS = 20
MAX_DRIFT_S = 0.5  # further behind than this (a stalled loop): restart the clock rather than burst frames


def mono_pcm16(frame: av.AudioFrame) -> bytes:
    """Mono signed 16-bit PCM from a decoded frame, averaging channels (browsers send identical ones)."""
    if frame.format.name != "s16" or frame.format.is_planar:
        frame = _to_s16(frame)
    samples = frame.to_ndarray().reshape(-1)
    channels = len(frame.layout.channels)
    if channels == 1:
        return samples.tobytes()
    wide = samples.reshape(-1, channels).astype(np.int32)
    return (wide.sum(axis=1) // channels).astype("<i2").tobytes()


def _to_s16(frame: av.AudioFrame) -> av.AudioFrame:
    resampler = av.AudioResampler(format="s16", layout=frame.layout.name, rate=frame.sample_rate)
    converted = resampler.resample(frame)
    if len(converted) != 1:
        raise ValueError("cannot convert the audio frame to s16")
    return converted[0]


class PlaybackTrack(MediaStreamTrack):
    """The outgoing audio track: reply PCM16 in, real-time 20 ms ``av.AudioFrame`` out."""

    kind = "audio"

    def __init__(self, sample_rate: int, *, max_buffer_ms: int = 2000,
                 on_late: Callable[[float], None] | None = None) -> None:
        """``on_late``: told how many milliseconds behind its real-time schedule a frame went out (the node's
        media lateness, for load shedding)."""
        super().__init__()
        self.on_late = on_late
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * FRAME_MS // 1000
        self._frame_bytes = self.frame_samples * 2
        self._max_bytes = max(self._frame_bytes, sample_rate * max_buffer_ms // 1000 * 2)
        self._buffer = bytearray()
        self._room = asyncio.Event()
        self._room.set()
        self._time_base = fractions.Fraction(1, sample_rate)
        self._pts = 0
        self._start: float | None = None
        self.frames_sent = 0
        self.frames_with_audio = 0
        self.paused = False  # the reply is paused by the user's voice: silence goes out, the buffer waits

    @property
    def buffered_ms(self) -> float:
        return len(self._buffer) / 2 * 1000 / self.sample_rate

    async def push(self, pcm: bytes) -> None:
        """Queue reply audio; wait while the buffer is full (the session's channel then backs up too)."""
        while len(self._buffer) >= self._max_bytes and self.readyState == "live":
            self._room.clear()
            await self._room.wait()
        if self.readyState == "live":
            self._buffer += pcm

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def pause(self) -> None:
        """Hold what is buffered (silence goes out meanwhile); ``resume`` plays on from the same sample."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def clear(self) -> int:
        """Drop everything queued (an interruption): returns the bytes dropped."""
        dropped = len(self._buffer)
        self._buffer.clear()
        self.paused = False
        self._room.set()
        return dropped

    def stop(self) -> None:
        self.clear()
        super().stop()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += self.frame_samples
            wait = self._start + self._pts / self.sample_rate - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif self.on_late is not None:
                self.on_late(-wait * 1000)
            if wait < -MAX_DRIFT_S:  # jump the clock: the gap shows as loss, not as a burst
                self._start = loop.time() - self._pts / self.sample_rate
        if self.readyState != "live":
            raise MediaStreamError
        return self._next_frame()

    def _next_frame(self) -> av.AudioFrame:
        chunk = b"" if self.paused else bytes(self._buffer[: self._frame_bytes])
        if chunk:
            del self._buffer[: len(chunk)]
            self.frames_with_audio += 1
            if len(self._buffer) < self._max_bytes:
                self._room.set()
        if len(chunk) < self._frame_bytes:
            chunk += bytes(self._frame_bytes - len(chunk))
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.frame_samples)
        frame.planes[0].update(chunk)
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        frame.time_base = self._time_base
        self.frames_sent += 1
        return frame
