"""Scripted fake providers (``provider: scripted``) for the engine's own tests and for plugin authors.

They are real plugins, selected through YAML like any other provider, with controllable delays, failures
and hangs. They count what happened to them (streams opened, closed, cancelled) so tests can assert that the
engine really closed a stream on barge-in rather than abandoning it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from vocable.providers.base import (
    LLM,
    STT,
    TTS,
    AudioChunk,
    Flush,
    LLMCapabilities,
    LLMChunk,
    Message,
    ProviderSettings,
    STTCapabilities,
    TextDelta,
    Tool,
    ToolCall,
    TranscriptEvent,
    TTSCapabilities,
    Usage,
)
from vocable.providers.errors import AuthenticationError, ServiceUnavailable

Failure = Literal["none", "raise", "hang", "auth", "raise_after_first"]


class FailureSettings(ProviderSettings):
    fail: Failure = "none"
    fail_times: int = Field(default=-1, description="how many calls fail before it works; -1: always")


class Counters:
    """What happened to a fake's streams; shared by every stream of one provider instance."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.cancelled = 0
        self.completed = 0
        self.calls = 0
        self.requests: list[object] = []


async def _maybe_fail(settings: FailureSettings, counters: Counters, name: str) -> None:
    counters.calls += 1
    if settings.fail in ("none", "raise_after_first"):
        return
    if settings.fail_times >= 0 and counters.calls > settings.fail_times:
        return
    if settings.fail == "hang":
        await asyncio.Event().wait()
    if settings.fail == "auth":
        raise AuthenticationError("invalid API key (scripted)", provider=name)
    raise ServiceUnavailable("scripted failure", provider=name)


def tone(ms: float, sample_rate: int, freq: float = 220.0, amplitude: float = 0.3) -> bytes:
    n = int(sample_rate * ms / 1000)
    t = np.arange(n) / sample_rate
    return (np.sin(2 * math.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


# --------------------------------------------------------------------------------------------- STT


class ScriptedSTTSettings(FailureSettings):
    transcripts: list[str] = Field(default_factory=lambda: ["hello there"])
    interim_every_ms: int = Field(default=200, ge=0, description="audio between interim transcripts; 0: none")
    final_delay_ms: float = Field(default=0.0, ge=0)
    endpointing_ms: int = Field(default=0, ge=0, description="like Deepgram: after this much silence following "
                                "speech, a final marked speech_final comes by itself; 0: never")


class ScriptedSTT(STT):
    """Answers each utterance with the next scripted transcript; interims reveal it word by word."""

    name = "scripted"
    Settings = ScriptedSTTSettings
    capabilities: ClassVar[STTCapabilities] = STTCapabilities(streaming=True, interim_results=True)

    def __init__(self, settings: ScriptedSTTSettings | None = None) -> None:
        super().__init__(settings)
        self.counters = Counters()
        self._next = 0

    def _script(self) -> str:
        scripts = self.settings.transcripts
        text = scripts[self._next % len(scripts)] if scripts else ""
        return text

    async def transcribe(
        self, audio: AsyncIterable[bytes | Flush], *, sample_rate: int
    ) -> AsyncIterator[TranscriptEvent]:
        self.counters.opened += 1
        try:
            await _maybe_fail(self.settings, self.counters, self.name)
            heard_ms = 0.0
            shown = 0
            quiet_ms, spoke = 0.0, False
            async for item in audio:
                if isinstance(item, Flush):
                    if self.settings.final_delay_ms:
                        await asyncio.sleep(self.settings.final_delay_ms / 1000)
                    text = self._script() if heard_ms > 0 else ""
                    if heard_ms > 0:
                        self._next += 1
                    heard_ms, shown = 0.0, 0
                    yield TranscriptEvent(text, final=True)
                    continue
                ms = len(item) / 2 * 1000 / sample_rate
                heard_ms += ms
                if self.settings.endpointing_ms:
                    loud = np.abs(np.frombuffer(item, dtype="<i2")).max(initial=0) > 300
                    quiet_ms = 0.0 if loud else quiet_ms + ms
                    spoke = spoke or loud
                    if spoke and quiet_ms >= self.settings.endpointing_ms:
                        yield TranscriptEvent(self._script(), final=True, speech_final=True)
                        self._next += 1
                        heard_ms, shown, quiet_ms, spoke = 0.0, 0, 0.0, False
                        continue
                every = self.settings.interim_every_ms
                if every and heard_ms // every > shown:
                    shown = int(heard_ms // every)
                    words = self._script().split()
                    yield TranscriptEvent(" ".join(words[: min(len(words), shown)]), final=False)
            self.counters.completed += 1
        except asyncio.CancelledError:
            self.counters.cancelled += 1
            raise
        finally:
            self.counters.closed += 1


# --------------------------------------------------------------------------------------------- LLM


class ScriptedLLMSettings(FailureSettings):
    reply: str = "This is a scripted reply. It has two sentences."
    echo: bool = Field(default=False, description="reply with 'You said: <last user text>.' instead")
    first_token_ms: float = Field(default=0.0, ge=0)
    token_delay_ms: float = Field(default=0.0, ge=0)
    tool_call: str | None = Field(default=None, description="call this tool first, then reply")
    tool_arguments: str = "{}"


class ScriptedLLM(LLM):
    name = "scripted"
    Settings = ScriptedLLMSettings
    capabilities: ClassVar[LLMCapabilities] = LLMCapabilities(streaming=True, tools=True)

    def __init__(self, settings: ScriptedLLMSettings | None = None) -> None:
        super().__init__(settings)
        self.counters = Counters()

    async def stream(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> AsyncIterator[LLMChunk]:
        self.counters.opened += 1
        self.counters.requests.append(list(messages))
        s = self.settings
        try:
            await _maybe_fail(s, self.counters, self.name)
            if s.first_token_ms:
                await asyncio.sleep(s.first_token_ms / 1000)
            if s.tool_call and not any(m.role == "tool" for m in messages) and any(t.name == s.tool_call for t in tools):
                yield ToolCall("call_1", s.tool_call, s.tool_arguments)
                return
            text = s.reply
            if s.echo:
                last = next((m.content for m in reversed(messages) if m.role == "user"), "")
                tool = next((m.content for m in reversed(messages) if m.role == "tool"), None)
                text = f"You said: {last}." + (f" Tool says {tool}." if tool else "")
            pieces = text.split(" ")
            for i, word in enumerate(pieces):
                if i and s.token_delay_ms:
                    await asyncio.sleep(s.token_delay_ms / 1000)
                yield TextDelta(word if i == 0 else " " + word)
                if i == 0 and s.fail == "raise_after_first":
                    raise ServiceUnavailable("scripted failure after first token", provider=self.name)
            yield Usage(sum(len(m.content) for m in messages) // 4, len(pieces))
            self.counters.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.counters.cancelled += 1
            raise
        finally:
            self.counters.closed += 1


class OtherScriptedLLM(ScriptedLLM):
    """The scripted LLM under another name (``provider: scripted_other``), for a fallback chain whose providers
    must be told apart by name (metrics, breakers, traces)."""

    name = "scripted_other"


# --------------------------------------------------------------------------------------------- TTS


class ScriptedTTSSettings(FailureSettings):
    sample_rate: int = 16000
    ms_per_char: float = Field(default=10.0, gt=0, description="audio length per character of text")
    first_audio_ms: float = Field(default=0.0, ge=0)
    chunk_ms: float = Field(default=40.0, gt=0)
    realtime_factor: float = Field(default=0.0, ge=0, description="synthesis time per audio second")
    streaming_input: bool = False


class ScriptedTTS(TTS):
    """Speaks a tone whose length follows the text: real audio with energy, made instantly."""

    name = "scripted"
    Settings = ScriptedTTSSettings

    def __init__(self, settings: ScriptedTTSSettings | None = None) -> None:
        super().__init__(settings)
        self.capabilities = TTSCapabilities(self.settings.sample_rate, streaming_input=self.settings.streaming_input)
        self.counters = Counters()

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.counters.opened += 1
        self.counters.requests.append(text)
        s = self.settings
        try:
            await _maybe_fail(s, self.counters, self.name)
            if s.first_audio_ms:
                await asyncio.sleep(s.first_audio_ms / 1000)
            total_ms = max(s.chunk_ms, len(text) * s.ms_per_char)
            done = 0.0
            while done < total_ms:
                ms = min(s.chunk_ms, total_ms - done)
                if s.realtime_factor:
                    await asyncio.sleep(ms / 1000 * s.realtime_factor)
                yield AudioChunk(tone(ms, s.sample_rate), s.sample_rate)
                done += ms
                if s.fail == "raise_after_first":
                    raise ServiceUnavailable("scripted failure after first audio", provider=self.name)
            self.counters.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.counters.cancelled += 1
            raise
        finally:
            self.counters.closed += 1

    async def speak(self, text: AsyncIterable[str]) -> AsyncIterator[AudioChunk]:
        if not self.settings.streaming_input:
            async for chunk in super().speak(text):
                yield chunk
            return
        first = True
        async for piece in text:  # streaming input: speak each piece as it comes
            async for chunk in self.synthesize(piece):
                if first:
                    chunk = AudioChunk(chunk.pcm, chunk.sample_rate, None)
                    first = False
                yield chunk
