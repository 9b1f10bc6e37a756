"""Deepgram as a vocable plugin: live streaming STT (Nova) and Aura TTS, through ``deepgram-sdk`` 7.x.

Both use one ``AsyncDeepgramClient`` per provider, pointed at ``base_url`` (the websocket URL is the same
host with ``ws``/``wss``), so tests and proxies need only one setting. The SDK's HTTP retries are off and
the providers do not retry requests: errors are mapped once, in ``vendor_errors``, and the engine's retry
policy decides. The live session logic (keep-alive, Finalize, reconnecting a dropped stream without
repeating a word) is in ``deepgram_live`` because the SDK leaves all of it to the caller; its reconnects
are spaced by the engine's ``RetryPolicy``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, ClassVar, Literal

import structlog
from pydantic import Field

from vocable.plugins.hookspecs import hookimpl
from vocable.providers.base import (
    STT,
    TTS,
    AudioChunk,
    Flush,
    Requirement,
    STTCapabilities,
    TranscriptEvent,
    TTSCapabilities,
    WholeSamples,
)
from vocable.engine.retry import RetryPolicy
from vocable.providers.deepgram_live import LiveOptions, LiveTranscription
from vocable.providers.hosted import HostedSettings
from vocable.redaction import redact_url
from vocable.providers.vendor_errors import mapped_stream

log = structlog.get_logger("vocable.providers.deepgram")

_REQUIRES = (Requirement("deepgram", "pip install 'vocable[deepgram]'"),)
DEFAULT_BASE_URL = "https://api.deepgram.com"


def websocket_url(base_url: str) -> str:
    """``https://host`` -> ``wss://host``; ``http://127.0.0.1:P`` -> ``ws://127.0.0.1:P``."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    return base_url


def http_url(base_url: str) -> str:
    if base_url.startswith("wss://"):
        return "https://" + base_url[len("wss://") :]
    if base_url.startswith("ws://"):
        return "http://" + base_url[len("ws://") :]
    return base_url


class DeepgramClientHolder:
    """One SDK client and the httpx pool we gave it, so ``aclose`` releases exactly what ``start`` made."""

    def __init__(self, settings: HostedSettings) -> None:
        self._settings = settings
        self._client: Any = None
        self._http: Any = None

    def get(self) -> Any:
        if self._client is None:
            with warnings.catch_warnings():
                # deepgram-sdk 7 still drives websockets' legacy client, which warns on import.
                warnings.simplefilter("ignore", DeprecationWarning)
                import deepgram.listen.v1.raw_client  # noqa: F401
                import httpx
                from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment

            s = self._settings
            http, ws = http_url(s.base_url), websocket_url(s.base_url)
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(s.request_timeout_s), follow_redirects=True)
            self._client = AsyncDeepgramClient(
                api_key=s.api_key.get_secret_value(),
                environment=DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http),
                timeout=s.request_timeout_s,
                max_retries=0,
                reconnect=False,
                httpx_client=self._http,
            )
        return self._client

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.aclose()


# ------------------------------------------------------------------------------------------------ STT


class DeepgramSTTSettings(HostedSettings):
    base_url: str = DEFAULT_BASE_URL
    model: str = "nova-3"
    language: str = "en-US"
    punctuate: bool = True
    smart_format: bool = True
    interim_results: bool = True
    endpointing_ms: int | None = Field(300, ge=10, description="Silence that makes Deepgram set speech_final.")
    utterance_end_ms: int | None = Field(1000, ge=1000, description="Gap that makes Deepgram send UtteranceEnd.")
    keepalive_s: float = Field(4.0, gt=0, le=9.0, description="Send KeepAlive after this long without audio.")
    finalize_timeout_s: float = Field(2.0, gt=0, description="Longest wait for Deepgram's answer to a flush.")
    response_timeout_s: float = Field(10.0, gt=0, description="Audio sent with no reply this long: reconnect.")
    max_reconnects: int = Field(5, ge=0, le=20, description="Consecutive reconnect attempts after a drop.")
    reconnect_delay_s: float = Field(0.25, ge=0, le=30, description="First reconnect delay; doubles on each "
                                     "attempt, with jitter (retry_delay_s, beside provider:, is the engine's).")


class DeepgramSTT(STT):
    """Deepgram live transcription: interim and final results, endpointing used as the end of turn."""

    name = "deepgram"
    Settings = DeepgramSTTSettings
    capabilities: ClassVar[STTCapabilities] = STTCapabilities(
        streaming=True, interim_results=True, sample_rates=(8000, 16000, 24000, 48000), endpointing=True
    )
    requires = _REQUIRES
    settings: DeepgramSTTSettings

    def __init__(self, settings: DeepgramSTTSettings | None = None) -> None:
        super().__init__(settings)
        self._holder = DeepgramClientHolder(self.settings)

    async def start(self) -> None:
        self._holder.get()
        log.info("deepgram.stt_ready", model=self.settings.model, base_url=redact_url(self.settings.base_url))

    async def aclose(self) -> None:
        await self._holder.aclose()

    def connect_options(self, sample_rate: int) -> dict[str, Any]:
        """Query parameters of ``/v1/listen``: Deepgram wants ``"true"``/``"false"`` strings, not booleans."""
        s = self.settings

        def flag(value: bool) -> str:
            return "true" if value else "false"

        options: dict[str, Any] = {
            "model": s.model,
            "language": s.language,
            "encoding": "linear16",
            "sample_rate": sample_rate,
            "channels": 1,
            "interim_results": flag(s.interim_results),
            "punctuate": flag(s.punctuate),
            "smart_format": flag(s.smart_format),
            "vad_events": "true",
        }
        if s.endpointing_ms is not None:
            options["endpointing"] = s.endpointing_ms
        if s.utterance_end_ms is not None and s.interim_results:
            options["utterance_end_ms"] = s.utterance_end_ms  # Deepgram requires interim results for it
        return options

    async def transcribe(
        self, audio: AsyncIterable[bytes | Flush], *, sample_rate: int
    ) -> AsyncIterator[TranscriptEvent]:
        client = self._holder.get()
        s = self.settings
        options = self.connect_options(sample_rate)
        session = LiveTranscription(
            lambda: client.listen.v1.connect(**options),
            audio,
            LiveOptions(
                connect_timeout_s=s.request_timeout_s,
                keepalive_s=s.keepalive_s,
                finalize_timeout_s=s.finalize_timeout_s,
                response_timeout_s=s.response_timeout_s,
                close_timeout_s=s.request_timeout_s,
                policy=RetryPolicy(retries=s.max_reconnects, base_delay_s=s.reconnect_delay_s),
                provider=self.name,
                secrets=s.secrets(),
            ),
        )
        async with contextlib.aclosing(session.events()) as events:
            async for event in events:
                yield event


# ------------------------------------------------------------------------------------------------ TTS

AuraRate = Literal[8000, 16000, 24000, 32000, 48000]


class DeepgramTTSSettings(HostedSettings):
    base_url: str = DEFAULT_BASE_URL
    model: str = "aura-2-thalia-en"
    sample_rate: AuraRate = 24000


class DeepgramTTS(TTS):
    """Deepgram Aura: each sentence is one streaming ``POST /v1/speak`` returning raw linear16."""

    name = "deepgram"
    Settings = DeepgramTTSSettings
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(sample_rate=24000)
    requires = _REQUIRES
    settings: DeepgramTTSSettings

    def __init__(self, settings: DeepgramTTSSettings | None = None) -> None:
        super().__init__(settings)
        self._holder = DeepgramClientHolder(self.settings)

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    async def start(self) -> None:
        self._holder.get()
        log.info("deepgram.tts_ready", model=self.settings.model, base_url=redact_url(self.settings.base_url))

    async def aclose(self) -> None:
        await self._holder.aclose()

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        s = self.settings
        return mapped_stream(
            self._attempt(text),
            provider=self.name,
            idle_timeout_s=s.request_timeout_s,
            secrets=s.secrets(),
        )

    async def _attempt(self, text: str) -> AsyncIterator[AudioChunk]:
        client = self._holder.get()
        s = self.settings
        stream = client.speak.v1.audio.generate(
            text=text,
            model=s.model,
            encoding="linear16",
            container="none",
            sample_rate=s.sample_rate,
            request_options={"max_retries": 0, "timeout_in_seconds": s.request_timeout_s},
        )
        samples = WholeSamples()
        try:
            async for data in stream:
                if pcm := samples.take(data):
                    yield AudioChunk(pcm, s.sample_rate)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()


@hookimpl
def register_providers(register: Any) -> None:
    register(DeepgramSTT)
    register(DeepgramTTS)
