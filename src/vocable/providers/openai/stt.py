"""``stt: {provider: openai}``: ``/v1/audio/transcriptions``, a batch STT that decodes at each flush.

Like ``whisper``, a session's stream buffers the utterance and transcribes it when the FLUSH comes: one
multipart upload (a WAV at the session's rate) per user turn, answered by exactly one final transcript. There
are no interim transcripts (each would be another upload of the whole utterance). The request's ``prompt``
is the configured ``prompt`` followed by the end of this session's recent transcripts, so names and words the
user already said are spelt the same way again. Audio under 100 ms is answered with an empty transcript
without a request (servers refuse it, and Whisper models make words up from noise).
"""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing
from typing import ClassVar

from pydantic import Field

from vocable.providers.base import STT, Flush, STTCapabilities, TranscriptEvent
from vocable.providers.openai.settings import REQUIRES, OpenAISettings
from vocable.providers.openai_compat import SDKClientProvider

MIN_AUDIO_MS = 100


class OpenAISTTSettings(OpenAISettings):
    language: str | None = Field("en", description="The spoken language (ISO-639-1); null lets the model guess.")
    prompt: str | None = Field(None, description="Vocabulary or style hint sent with every utterance, before "
                                                 "the recent context.")
    context_chars: int = Field(200, ge=0, le=1000, description="Characters of this session's recent transcripts "
                                                               "sent as the prompt (0: none).")
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    max_utterance_s: float = Field(60.0, gt=0, le=600, description="Audio kept per utterance; older audio is "
                                                                   "dropped beyond it.")


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """PCM16 mono as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def prompt_for(fixed: str | None, recent: str, context_chars: int) -> str | None:
    """The fixed prompt, then the last ``context_chars`` of the recent transcripts (cut at a word)."""
    tail = ""
    if context_chars and recent:
        tail = recent[-context_chars:]
        if len(recent) > context_chars and " " in tail:
            tail = tail.split(" ", 1)[1]
    prompt = " ".join(part for part in (fixed or "", tail) if part).strip()
    return prompt or None


class OpenAISTT(SDKClientProvider, STT):
    """Transcription by OpenAI (gpt-transcribe, whisper-1...) or any server with its audio API."""

    name = "openai"
    Settings = OpenAISTTSettings
    capabilities: ClassVar[STTCapabilities] = STTCapabilities(
        streaming=False, interim_results=False, sample_rates=(8000, 16000, 24000, 48000)
    )
    requires = REQUIRES
    settings: OpenAISTTSettings

    def new_client(self) -> object:
        return self.settings.new_client()

    async def transcribe(
        self, audio: AsyncIterable[bytes | Flush], *, sample_rate: int
    ) -> AsyncIterator[TranscriptEvent]:
        s = self.settings
        keep = int(s.max_utterance_s * sample_rate) * 2
        utterance = bytearray()
        recent = ""
        async for item in audio:
            if not isinstance(item, Flush):
                utterance += item
                if len(utterance) > keep:
                    del utterance[: (len(utterance) - keep) // 2 * 2]
                continue
            prompt = prompt_for(s.prompt, recent, s.context_chars)
            text = await self.transcribe_clip(bytes(utterance), sample_rate, prompt)
            utterance.clear()
            if text:
                recent = f"{recent} {text}".strip()[-4 * max(s.context_chars, 1) :]
            yield TranscriptEvent(text, final=True)

    async def transcribe_clip(self, pcm: bytes, sample_rate: int, prompt: str | None = None) -> str:
        """One request for one whole clip; failures raised as mapped ``ProviderError``s."""
        if len(pcm) // 2 < sample_rate * MIN_AUDIO_MS // 1000:
            return ""
        attempt = self.attempt(self._request(wav_bytes(pcm[: len(pcm) // 2 * 2], sample_rate), prompt))
        async with aclosing(attempt) as results:
            async for text in results:
                return text
        return ""

    async def _request(self, wav: bytes, prompt: str | None) -> AsyncIterator[str]:
        s = self.settings
        request: dict[str, object] = {
            "file": ("speech.wav", wav, "audio/wav"),
            "model": s.model,
            "response_format": "json",
        }
        if s.language:
            request["language"] = s.language
        if prompt:
            request["prompt"] = prompt
        if s.temperature is not None:
            request["temperature"] = s.temperature
        if s.extra_body:
            request["extra_body"] = dict(s.extra_body)
        result = await self.client().audio.transcriptions.create(**request)
        yield (getattr(result, "text", None) or "").strip()
