"""One transcription stream per session, with fallback that loses none of the user's words.

The STT reads from a bounded channel. Everything it has read since the last answered FLUSH is kept, so
when it fails (raises, ends early, or owes a final transcript for longer than its ``timeout_s``) the next
STT of the chain is replayed that audio first and answers the same FLUSH.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing

import structlog

from vocable.engine.channel import Channel, ChannelClosed
from vocable.engine.fallback import LiveProvider, describe
from vocable.providers.base import STT, Flush, TranscriptEvent
from vocable.providers.errors import ProviderTimeout, ServiceUnavailable

MAX_REPLAY_S = 60
WAKE_EVERY_FRAMES = 2  # the STT task wakes once per two frames of speech (40 ms), and at once for a FLUSH

OnTranscript = Callable[[TranscriptEvent, str], Awaitable[None]]
OnFailure = Callable[[BaseException], Awaitable[None]]


class Transcriber:
    def __init__(
        self, chain: Sequence[LiveProvider[STT]], *, sample_rate: int, frame_ms: float, queue_frames: int,
        on_transcript: OnTranscript, on_failure: OnFailure, log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.chain = chain
        self.sample_rate = sample_rate
        self.on_transcript = on_transcript
        self.on_failure = on_failure
        self.log = log
        self.owed = 0  # FLUSHes sent whose final transcript has not come yet
        self._input: Channel[bytes | Flush] = Channel(queue_frames)
        self._replay: deque[bytes | Flush] = deque(maxlen=max(16, int(MAX_REPLAY_S * 1000 / frame_ms)))
        self._deadline: asyncio.Timeout | None = None
        self._timeout_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._unannounced = 0

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._run(), name=name)

    async def aclose(self) -> None:
        self._input.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def push_nowait(self, frame: bytes) -> bool:
        """``push`` for an audio frame when the STT keeps up (the channel has room): False if it must wait."""
        wake = self._unannounced + 1 >= WAKE_EVERY_FRAMES
        if not self._input.put_nowait(frame, wake=wake):
            return False
        self._unannounced = 0 if wake else self._unannounced + 1
        return True

    async def push(self, item: bytes | Flush) -> None:
        """Audio for the STT (waits when it lags: backpressure, not loss); a Flush owes a final transcript.

        Audio frames arrive every 20 ms while the user speaks, and the next one (or the FLUSH that ends
        the utterance) is never far behind, so the STT task is woken for every second frame only: half
        the wake-ups, at most 20 ms later for an interim transcript, and no delay at all for a final one.
        """
        wake = True
        if not isinstance(item, Flush):
            self._unannounced += 1
            wake = self._unannounced >= WAKE_EVERY_FRAMES
        if wake:
            self._unannounced = 0
        try:
            await self._input.put(item, wake=wake)
        except ChannelClosed:
            return
        if isinstance(item, Flush):
            self.owed += 1
            self.arm()

    def answered(self) -> None:
        """A final transcript came: forget the audio it covered and stop (or restart) the clock."""
        self.owed = max(0, self.owed - 1)
        while self._replay:
            if isinstance(self._replay.popleft(), Flush):
                break
        self.arm()

    def arm(self) -> None:
        """While a final transcript is owed, the STT has ``timeout_s`` to give it (else: fall back)."""
        if self._deadline is not None:
            when = asyncio.get_running_loop().time() + self._timeout_s if self.owed else None
            self._deadline.reschedule(when)

    async def _source(self) -> AsyncIterator[bytes | Flush]:
        for item in list(self._replay):
            yield item
        while (item := await self._input.get()) is not None:
            self._replay.append(item)
            yield item

    async def _run(self) -> None:
        for live in self.chain:
            try:
                async with asyncio.timeout(None) as deadline:
                    self._deadline, self._timeout_s = deadline, live.timeout_s
                    self.arm()  # a flush may be owed already (after a fallback)
                    stream = live.provider.transcribe(self._source(), sample_rate=self.sample_rate)
                    async with aclosing(stream):
                        async for event in stream:
                            await self.on_transcript(event, live.name)
                if self._input.closed:
                    return
                raise ServiceUnavailable("the transcription stream ended unexpectedly", provider=live.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error: BaseException = exc
                if isinstance(exc, TimeoutError):
                    error = ProviderTimeout(f"no final transcript within {live.timeout_s:g} s", provider=live.name)
                self.log.warning("stt_failed", provider=live.name, error=describe(error))
                last = error
        else:
            self.owed = 0
            await self.on_failure(last if self.chain else ServiceUnavailable("no STT configured"))
