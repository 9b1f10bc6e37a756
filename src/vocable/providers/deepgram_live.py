"""One session's Deepgram live transcription: a websocket kept open, fed, kept alive and re-opened.

Why this is more than a loop over ``socket.recv()``: the SDK only opens the socket. It does not keep it
alive (Deepgram closes a stream that receives nothing for ~10 s with ``NET-0001``), does not reconnect, and
does not know vocable's ``FLUSH`` contract (exactly one final transcript after each flush). So:

- a reader task moves the engine's audio into a bounded queue, so nothing ever cancels the engine's own
  iterator, and audio waits there (back-pressure, no loss) while a dropped connection is re-opened;
- the sender forwards frames, turns ``FLUSH`` into ``Finalize``, and sends ``KeepAlive`` whenever no audio
  has gone out for ``keepalive_s``;
- the receiver accumulates ``is_final`` segments and emits one final per utterance (at ``speech_final``,
  ``UtteranceEnd``, or the ``from_finalize`` answer to a flush); a flush Deepgram never answers is closed
  after ``finalize_timeout_s`` with the text already heard, so the engine is never left waiting;
- a drop re-opens the socket with bounded exponential backoff (the engine's ``RetryPolicy``: this is not a
  request retry the fallback runner could do, since the stream lives as long as the session and has
  already produced output); 401/403 fail at once (one attempt). Segments already emitted are never emitted
  again after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from vocable.engine.retry import RetryPolicy
from vocable.providers.base import Flush, TranscriptEvent
from vocable.providers.errors import ProviderError, ProviderTimeout, ServiceUnavailable
from vocable.providers.vendor_errors import map_error

log = structlog.get_logger("vocable.providers.deepgram")

_END = object()  # end of the engine's audio
_AUDIO_QUEUE = 256  # frames (about 5 s of 20 ms frames) buffered while a connection is re-opened
_EVENT_QUEUE = 64
_TICK_S = 0.25  # longest the receiver waits before re-checking the flush and response deadlines


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What the session needs from the provider's settings (kept apart so the session is testable)."""

    connect_timeout_s: float
    keepalive_s: float
    finalize_timeout_s: float
    response_timeout_s: float
    close_timeout_s: float
    policy: RetryPolicy
    provider: str
    secrets: tuple[str, ...]


class LiveTranscription:
    """Runs one ``STT.transcribe`` stream. ``connect`` opens one SDK socket (an async context manager)."""

    def __init__(
        self,
        connect: Callable[[], contextlib.AbstractAsyncContextManager[Any]],
        audio: AsyncIterable[bytes | Flush],
        options: LiveOptions,
    ) -> None:
        self._connect = connect
        self._audio = audio
        self._opt = options
        self._frames: asyncio.Queue[Any] = asyncio.Queue(maxsize=_AUDIO_QUEUE)
        self._events: asyncio.Queue[Any] = asyncio.Queue(maxsize=_EVENT_QUEUE)
        self._audio_done = False
        self._unsent: Any = None  # a frame taken off the queue but not yet sent when the link dropped
        self._segments: list[str] = []  # is_final text of the current utterance, not yet emitted as final
        self._flush_deadlines: deque[float] = deque()  # one per FLUSH awaiting its final
        self._awaiting_reply_since: float | None = None  # audio sent, nothing heard back since
        self._heard = False  # the current connection has delivered at least one message
        self.connections = 0

    # ------------------------------------------------------------------------------------------- public

    async def events(self) -> AsyncGenerator[TranscriptEvent, None]:
        reader = asyncio.create_task(self._read_audio(), name="deepgram-audio-reader")
        runner = asyncio.create_task(self._run(), name="deepgram-connection")
        try:
            while True:
                item = await self._events.get()
                if item is _END:
                    return
                if isinstance(item, ProviderError):
                    raise item
                yield item
        finally:
            for task in (reader, runner):
                task.cancel()
            await asyncio.gather(reader, runner, return_exceptions=True)

    # ------------------------------------------------------------------------------------------- audio

    async def _read_audio(self) -> None:
        try:
            async for frame in self._audio:
                await self._frames.put(frame)
        except Exception as exc:  # noqa: BLE001 - a failing audio source ends the audio, it is not ours
            log.warning("deepgram.audio_source_failed", error=type(exc).__name__)
        self._audio_done = True
        await self._frames.put(_END)

    # -------------------------------------------------------------------------------------- connection

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                try:
                    await self._one_connection()
                    break  # the audio ended and the stream was closed cleanly
                except Exception as exc:  # noqa: BLE001 - mapped below
                    error = map_error(exc, provider=self._opt.provider, secrets=self._opt.secrets)
                if self._heard:
                    attempt = 0  # the link worked before it dropped: a fresh drop starts the backoff over
                if error.retryable and self._nothing_left_to_send():
                    break  # the audio is over and fully sent: no reason to reconnect
                if not self._opt.policy.allows(error, attempt):
                    await self._events.put(error)
                    return
                delay = self._opt.policy.delay(attempt, error)
                log.warning("deepgram.reconnect", error=error.code, attempt=attempt + 1, delay_s=round(delay, 3))
                await asyncio.sleep(delay)
                attempt += 1
            await self._finish_utterance()
            await self._events.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - never leave the consumer waiting
            await self._events.put(map_error(exc, provider=self._opt.provider, secrets=self._opt.secrets))

    def _nothing_left_to_send(self) -> bool:
        """True once the audio has ended and at most the end marker is still queued.

        ``_read_audio`` puts the end marker right after setting ``_audio_done`` without suspending (unless the
        queue is full, and then ``qsize`` is large), so ``qsize() <= 1`` means only the marker can be left.
        """
        return self._audio_done and self._unsent in (None, _END) and self._frames.qsize() <= 1

    async def _one_connection(self) -> None:
        """Open a socket and pump it until the audio ends (returns) or the link fails (raises)."""
        self.connections += 1
        self._heard = False
        self._awaiting_reply_since = None
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self._opt.connect_timeout_s):
                socket = await stack.enter_async_context(self._connect())
            log.debug("deepgram.connected", connection=self.connections)
            sender = asyncio.create_task(self._send(socket), name="deepgram-sender")
            receiver = asyncio.create_task(self._receive(socket), name="deepgram-receiver")
            try:
                done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if sender in done and sender.exception() is None:
                    # CloseStream went out: Deepgram answers with the last results, then closes.
                    async with asyncio.timeout(self._opt.close_timeout_s):
                        await receiver
                    return
                for task in (receiver, sender):
                    if task in done and (exc := task.exception()) is not None:
                        raise exc
                raise ServiceUnavailable("stream closed by the server", provider=self._opt.provider)
            finally:
                for task in (sender, receiver):
                    task.cancel()
                await asyncio.gather(sender, receiver, return_exceptions=True)

    # --------------------------------------------------------------------------------------------- send

    async def _send(self, socket: Any) -> None:
        while True:
            if self._unsent is not None:
                item = self._unsent
            else:
                try:
                    async with asyncio.timeout(self._opt.keepalive_s):
                        item = await self._frames.get()
                except TimeoutError:
                    await socket.send_keep_alive()
                    continue
                self._unsent = item
            if item is _END:
                await socket.send_close_stream()
                self._unsent = None
                return
            if isinstance(item, Flush):
                await socket.send_finalize()
                self._flush_deadlines.append(time.monotonic() + self._opt.finalize_timeout_s)
            else:
                await socket.send_media(item)
                if self._awaiting_reply_since is None:
                    self._awaiting_reply_since = time.monotonic()
            self._unsent = None

    # ------------------------------------------------------------------------------------------ receive

    async def _receive(self, socket: Any) -> None:
        while True:
            try:
                async with asyncio.timeout(self._next_wakeup()):
                    message = await socket.recv()
            except TimeoutError:
                await self._on_tick()
                continue
            except Exception as exc:
                if type(exc).__name__ == "ConnectionClosedOK":
                    return
                raise
            self._heard = True
            self._awaiting_reply_since = None
            await self._on_message(message)

    def _next_wakeup(self) -> float:
        """Seconds until the receiver must look at its deadlines; at most ``_TICK_S``.

        The sender adds deadlines while the receiver is blocked in ``recv``, so the receiver never sleeps
        longer than a tick (cancelling ``recv`` loses nothing) instead of being woken by the sender.
        """
        now = time.monotonic()
        deadlines = [now + _TICK_S]
        if self._flush_deadlines:
            deadlines.append(self._flush_deadlines[0])
        if self._awaiting_reply_since is not None:
            deadlines.append(self._awaiting_reply_since + self._opt.response_timeout_s)
        return max(0.0, min(deadlines) - now)

    async def _on_tick(self) -> None:
        now = time.monotonic()
        while self._flush_deadlines and self._flush_deadlines[0] <= now:
            log.warning("deepgram.finalize_unanswered", timeout_s=self._opt.finalize_timeout_s)
            self._flush_deadlines.popleft()
            await self._emit_final(speech_final=False)
        if self._awaiting_reply_since is not None and now - self._awaiting_reply_since >= self._opt.response_timeout_s:
            raise ProviderTimeout(
                f"no results for {self._opt.response_timeout_s:g}s of audio", provider=self._opt.provider
            )

    async def _on_message(self, message: Any) -> None:
        kind = getattr(message, "type", None) or (message.get("type") if isinstance(message, dict) else None)
        if kind == "Results":
            await self._on_results(message)
        elif kind == "UtteranceEnd":
            if self._flush_deadlines:
                self._flush_deadlines.popleft()
                await self._emit_final(speech_final=True)
            elif self._segments:
                await self._emit_final(speech_final=True)
        elif kind == "Error":
            log.warning("deepgram.error_message", variant=getattr(message, "variant", None))

    async def _on_results(self, message: Any) -> None:
        alternatives = message.channel.alternatives
        text = alternatives[0].transcript.strip() if alternatives else ""
        confidence = alternatives[0].confidence if alternatives else None
        if not message.is_final:
            if text:
                await self._events.put(TranscriptEvent(" ".join([*self._segments, text]), final=False))
            return
        if text:
            self._segments.append(text)
        if self._flush_deadlines and (message.from_finalize or message.speech_final):
            self._flush_deadlines.popleft()
            await self._emit_final(speech_final=bool(message.speech_final), confidence=confidence)
        elif message.speech_final and self._segments:
            await self._emit_final(speech_final=True, confidence=confidence)
        elif text:
            await self._events.put(TranscriptEvent(" ".join(self._segments), final=False, confidence=confidence))

    async def _emit_final(self, *, speech_final: bool, confidence: float | None = None) -> None:
        text = " ".join(self._segments)
        self._segments.clear()
        await self._events.put(TranscriptEvent(text, final=True, speech_final=speech_final, confidence=confidence))

    async def _finish_utterance(self) -> None:
        """At the end of the audio: answer every pending flush, and never drop text already heard."""
        while self._flush_deadlines:
            self._flush_deadlines.popleft()
            await self._emit_final(speech_final=False)
        if self._segments:
            await self._emit_final(speech_final=False)
