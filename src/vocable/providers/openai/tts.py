"""``tts: {provider: openai}``: ``/v1/audio/speech`` with ``response_format: pcm``, streamed as it arrives.

Each sentence is one request whose body is read as it comes (the SDK's streaming response), so the first
audio plays while the server is still synthesizing the rest. OpenAI's ``pcm`` is 24 kHz signed 16-bit
little-endian mono, as is Kokoro's; set ``sample_rate`` to what another server sends. A failure before any
audio is the engine's to retry; after audio it is raised, so no sentence is heard twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import Field

from vocable.providers.base import TTS, AudioChunk, TTSCapabilities, WholeSamples
from vocable.providers.openai.settings import REQUIRES, OpenAISettings
from vocable.providers.openai_compat import SDKClientProvider

OPENAI_PCM_RATE = 24000


class OpenAITTSSettings(OpenAISettings):
    voice: str = Field("alloy", min_length=1, description="The voice (OpenAI: alloy, coral, marin...; Kokoro: "
                                                          "af_heart...).")
    speed: float | None = Field(None, ge=0.25, le=4.0, description="Speaking speed; default: the server's (1.0).")
    instructions: str | None = Field(None, description="How to speak (tone, accent), for models that take it.")
    sample_rate: int = Field(OPENAI_PCM_RATE, ge=8000, le=48000, description="The rate of the server's raw PCM "
                                                                             "(OpenAI and Kokoro: 24000).")


class OpenAITTS(SDKClientProvider, TTS):
    """Speech by OpenAI (gpt-4o-mini-tts...) or any server with its speech API (Kokoro...), raw PCM."""

    name = "openai"
    Settings = OpenAITTSSettings
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(sample_rate=OPENAI_PCM_RATE)
    requires = REQUIRES
    settings: OpenAITTSSettings

    def __init__(self, settings: OpenAITTSSettings | None = None) -> None:
        super().__init__(settings)
        self.capabilities = TTSCapabilities(sample_rate=self.settings.sample_rate)  # type: ignore[misc]

    @property
    def sample_rate(self) -> int:
        return self.settings.sample_rate

    def new_client(self) -> Any:
        return self.settings.new_client()

    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        return self.attempt(self._attempt(text))

    async def _attempt(self, text: str) -> AsyncIterator[AudioChunk]:
        s = self.settings
        request: dict[str, Any] = {"model": s.model, "voice": s.voice, "input": text, "response_format": "pcm"}
        if s.speed is not None:
            request["speed"] = s.speed
        if s.instructions:
            request["instructions"] = s.instructions
        if s.extra_body:
            request["extra_body"] = dict(s.extra_body)
        rate = s.sample_rate
        async with self.client().audio.speech.with_streaming_response.create(**request) as response:
            samples = WholeSamples()
            async for data in response.iter_bytes():
                if pcm := samples.take(data):
                    yield AudioChunk(pcm, rate)
