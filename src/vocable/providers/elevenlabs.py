"""ElevenLabs as a vocable TTS: HTTP streaming per sentence, or one websocket fed as the LLM writes.

``mode: http`` uses the official ``AsyncElevenLabs`` client (``text_to_speech.stream``) and the base class's
sentence aggregation. ``mode: websocket`` uses the stream-input API
(``/v1/text-to-speech/{voice_id}/stream-input``) through our own ``websockets`` client, because the SDK's
realtime helper is synchronous and forces ``wss``: text pieces go out as they arrive, so the first audio
does not wait for a whole sentence. Audio is raw PCM in both modes (``output_format: pcm_*``).

Each call is one attempt whose failures are mapped (``vendor_errors.mapped_stream``); the engine's retry
policy retries a failure before any audio (giving the new attempt the reply's text from its start), and
after audio has been yielded the error is raised, so the user never hears a sentence twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import structlog
from pydantic import Field

from vocable.plugins.hookspecs import hookimpl
from vocable.providers.base import TTS, AudioChunk, Requirement, TTSCapabilities, WholeSamples
from vocable.providers.errors import ProviderTimeout
from vocable.providers.hosted import HostedSettings
from vocable.redaction import redact_url
from vocable.providers.vendor_errors import close_error, mapped_stream

log = structlog.get_logger("vocable.providers.elevenlabs")

OutputFormat = Literal["pcm_16000", "pcm_22050", "pcm_24000"]
_WORD_BOUNDARY = (" ", "\n", "\t")
_TICK_S = 0.25


def pcm_rate(output_format: str) -> int:
    return int(output_format.split("_", 1)[1])


class ElevenLabsSettings(HostedSettings):
    base_url: str = "https://api.elevenlabs.io"
    voice_id: str = Field("21m00Tcm4TlvDq8ikWAM", min_length=1, description="The voice to speak with.")
    model_id: str = "eleven_flash_v2_5"
    output_format: OutputFormat = "pcm_24000"
    mode: Literal["http", "websocket"] = "websocket"
    chunk_length_schedule: tuple[int, ...] | None = Field(
        (50, 90, 120, 150), description="Websocket: characters buffered before each generation (50-500)."
    )
    stability: float | None = Field(None, ge=0, le=1)
    similarity_boost: float | None = Field(None, ge=0, le=1)
    speed: float | None = Field(None, ge=0.7, le=1.2)


class _TextSourceFailed(Exception):
    """The text being spoken failed (say, the LLM writing it): not a TTS failure, so never retried here."""

    def __init__(self, error: Exception) -> None:
        super().__init__(type(error).__name__)
        self.error = error


class _SpeakerFeed:
    """The text of one reply, read from the engine's iterator by a task of its own.

    The reader task drains the engine's iterator, so the websocket's sender never cancels it mid-``anext``
    when the attempt ends, and a failure of the text itself is told apart from the vendor's. Bounded by the
    reply's length.
    """

    def __init__(self, text: AsyncIterable[str]) -> None:
        self.pieces: list[str] = []
        self.done = False
        self.error: Exception | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(text), name="elevenlabs-text-reader")

    async def _read(self, text: AsyncIterable[str]) -> None:
        try:
            async for piece in text:
                if piece:
                    self.pieces.append(piece)
                    self._changed.set()
        except Exception as exc:  # noqa: BLE001 - handed to the speaker, which re-raises it unchanged
            self.error = exc
        finally:
            self.done = True
            self._changed.set()

    async def wait(self, seen: int) -> None:
        """Return when there is a piece beyond ``seen`` or the text has ended."""
        while len(self.pieces) <= seen and not self.done:
            self._changed.clear()
            await self._changed.wait()
        if self.error is not None:
            raise _TextSourceFailed(self.error)

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class ElevenLabsTTS(TTS):
    """ElevenLabs voices, raw PCM out; streams text in over a websocket by default."""

    name = "elevenlabs"
    Settings = ElevenLabsSettings
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(sample_rate=24000, streaming_input=True)
    requires = (
        Requirement("elevenlabs", "pip install 'vocable[elevenlabs]'"),
        Requirement("websockets", "pip install 'vocable[elevenlabs]'"),
    )
    settings: ElevenLabsSettings

    def __init__(self, settings: ElevenLabsSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        # Per-instance capabilities: the output rate and streaming input depend on settings.
        self.capabilities = TTSCapabilities(  # type: ignore[misc]
            sample_rate=pcm_rate(s.output_format), streaming_input=s.mode == "websocket"
        )
        self._client: Any = None
        self._http: Any = None

    @property
    def sample_rate(self) -> int:
        return pcm_rate(self.settings.output_format)

    async def start(self) -> None:
        self._ensure_client()
        s = self.settings
        log.info(
            "elevenlabs.ready", mode=s.mode, voice_id=s.voice_id, output_format=s.output_format,
            base_url=redact_url(s.base_url),
        )

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.aclose()

    def _ensure_client(self) -> Any:
        if self._client is None:
            import httpx
            from elevenlabs.client import AsyncElevenLabs

            s = self.settings
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(s.request_timeout_s), follow_redirects=True)
            self._client = AsyncElevenLabs(
                api_key=s.api_key.get_secret_value(),
                base_url=s.base_url,
                timeout=s.request_timeout_s,
                httpx_client=self._http,
            )
        return self._client

    def _voice_settings(self) -> dict[str, Any] | None:
        s = self.settings
        values = {"stability": s.stability, "similarity_boost": s.similarity_boost, "speed": s.speed}
        values = {k: v for k, v in values.items() if v is not None}
        return values or None

    # ------------------------------------------------------------------------------------------- http

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        s = self.settings
        return mapped_stream(
            self._http_attempt(text),
            provider=self.name,
            idle_timeout_s=s.request_timeout_s,
            secrets=s.secrets(),
        )

    async def _http_attempt(self, text: str) -> AsyncIterator[AudioChunk]:
        client = self._ensure_client()
        s = self.settings
        rate = self.sample_rate
        kwargs: dict[str, Any] = {
            "text": text,
            "model_id": s.model_id,
            "output_format": s.output_format,
            "request_options": {"max_retries": 0, "timeout_in_seconds": s.request_timeout_s},
        }
        voice = self._voice_settings()
        if voice:
            from elevenlabs import VoiceSettings

            kwargs["voice_settings"] = VoiceSettings(**voice)
        stream = client.text_to_speech.stream(s.voice_id, **kwargs)
        samples = WholeSamples()
        try:
            async for data in stream:
                if pcm := samples.take(data):
                    yield AudioChunk(pcm, rate)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    # -------------------------------------------------------------------------------------- websocket

    async def speak(self, text: AsyncIterable[str]) -> AsyncIterator[AudioChunk]:
        if self.settings.mode == "http":
            async for chunk in super().speak(text):
                yield chunk
            return
        s = self.settings
        feed = _SpeakerFeed(text)
        stream = mapped_stream(
            self._ws_attempt(feed),
            provider=self.name,
            idle_timeout_s=None,  # the LLM may be slow; the attempt bounds its own waits
            secrets=s.secrets(),
            passthrough=(_TextSourceFailed,),
        )
        try:
            async for chunk in stream:
                yield chunk
        except _TextSourceFailed as failed:
            raise failed.error from None  # the LLM's own error, as if the engine had read the text itself
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            await feed.aclose()

    def stream_input_url(self) -> str:
        s = self.settings
        base = s.base_url
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        query = urlencode({"model_id": s.model_id, "output_format": s.output_format})
        return f"{base}/v1/text-to-speech/{s.voice_id}/stream-input?{query}"

    def _init_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"text": " "}
        voice = self._voice_settings()
        if voice:
            message["voice_settings"] = voice
        if self.settings.chunk_length_schedule:
            message["generation_config"] = {"chunk_length_schedule": list(self.settings.chunk_length_schedule)}
        return message

    async def _ws_attempt(self, feed: _SpeakerFeed) -> AsyncIterator[AudioChunk]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        s = self.settings
        rate = self.sample_rate
        async with connect(
            self.stream_input_url(),
            additional_headers={"xi-api-key": s.api_key.get_secret_value()},
            open_timeout=s.request_timeout_s,
            close_timeout=1.0,
            max_size=2**22,
        ) as ws:
            await ws.send(json.dumps(self._init_message()))
            eos_at: list[float] = []  # set once the closing {"text": ""} has gone out
            sender = asyncio.create_task(self._send_text(ws, feed, eos_at), name="elevenlabs-text-sender")
            samples = WholeSamples()
            last_heard = time.monotonic()
            try:
                while True:
                    if sender.done() and sender.exception() is not None:
                        raise sender.exception()  # type: ignore[misc]
                    wait = _TICK_S  # before the end of the text, only look up to notice a failed sender
                    if eos_at:
                        wait = max(0.0, max(eos_at[0], last_heard) + s.request_timeout_s - time.monotonic())
                    try:
                        async with asyncio.timeout(wait):
                            raw = await ws.recv()
                    except TimeoutError:
                        if eos_at and time.monotonic() >= max(eos_at[0], last_heard) + s.request_timeout_s:
                            raise ProviderTimeout(f"no audio within {s.request_timeout_s:g}s", provider=self.name) from None
                        continue
                    except ConnectionClosed as exc:
                        if exc.rcvd is not None and exc.rcvd.code == 1000 and eos_at:
                            return  # closed normally after all text was sent: nothing more to come
                        raise
                    last_heard = time.monotonic()
                    message = json.loads(raw)
                    if message.get("error") or (message.get("message") and "audio" not in message):
                        code = message.get("code") if isinstance(message.get("code"), int) else 1008
                        detail = str(message.get("message") or message.get("error"))
                        raise close_error(code, detail, provider=self.name, secrets=s.secrets())
                    if message.get("audio"):
                        if pcm := samples.take(base64.b64decode(message["audio"])):
                            yield AudioChunk(pcm, rate, _spoken_text(message))
                    if message.get("isFinal"):
                        return
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def _send_text(self, ws: Any, feed: _SpeakerFeed, eos_at: list[float]) -> None:
        """Send whole words as they arrive (ElevenLabs wants each piece to end at a word boundary)."""
        seen = 0
        pending = ""
        while True:
            await feed.wait(seen)
            while seen < len(feed.pieces):
                pending += feed.pieces[seen]
                seen += 1
            cut = max(pending.rfind(b) for b in _WORD_BOUNDARY)
            if cut >= 0 and pending[: cut + 1].strip():
                await ws.send(json.dumps({"text": pending[: cut + 1].rstrip() + " "}))
                pending = pending[cut + 1 :]
            if feed.done and seen == len(feed.pieces):
                break
        if pending.strip():
            await ws.send(json.dumps({"text": pending.strip() + " "}))
        await ws.send(json.dumps({"text": ""}))
        eos_at.append(time.monotonic())


def _spoken_text(message: dict[str, Any]) -> str | None:
    """The characters an audio message speaks (from its alignment), for the engine's barge-in memory."""
    alignment = message.get("normalizedAlignment") or message.get("alignment")
    if isinstance(alignment, dict) and isinstance(alignment.get("chars"), list):
        return "".join(str(c) for c in alignment["chars"]) or None
    return None


@hookimpl
def register_providers(register: Any) -> None:
    register(ElevenLabsTTS)


__all__ = ["ElevenLabsTTS", "ElevenLabsSettings", "register_providers"]
