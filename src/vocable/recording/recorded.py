"""Providers that answer from a recording (``provider: recorded``), for ``vocable replay --providers recorded``.

Each stands for one place of one chain of the recorded session (``place``) and gives back what that provider
produced there, in the same order and with the same delays (waiting only where the provider had let the event
loop run, ``s``: what it produced in one go comes in one go):

- ``stt``: its n-th stream gives each recorded transcript once it has read as much audio as the recorded one
  had (flushes, then bytes since the last flush), that long after;
- ``llm``: its n-th request gives the recorded deltas, tool calls and usage at their times from the request;
- ``tts``: its n-th request gives silence of the recorded chunks' sizes at their times (a recording keeps
  references to the reply audio, not the audio itself).

A stream the engine had closed early waits to be closed again; one that failed fails again, with the same
error code. A request the recording does not have fails with ``no_recorded_answer``: the replay differs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any, ClassVar

from pydantic import Field

from vocable.plugins.hookspecs import hookimpl
from vocable.providers import errors
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
from vocable.recording.format import Recording, read


class NoRecordedAnswer(errors.ProviderError):
    code = "no_recorded_answer"


class RecordedSettings(ProviderSettings):
    file: str = Field(description="the recording")
    place: int = Field(default=0, ge=0, description="the provider's place in its recorded chain")


class RecordedSTTSettings(RecordedSettings):
    interim_results: bool = True
    sample_rates: list[int] = Field(default_factory=lambda: [16000])
    endpointing: bool = False


class RecordedTTSSettings(RecordedSettings):
    sample_rate: int = 16000
    streaming_input: bool = False


def _error(end: str) -> Exception:
    """The exception a recorded ``end: "error: <code>: <message>"`` stands for (the same class, by its code)."""
    _, code, message = (end.split(": ", 2) + ["", ""])[:3]
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.ProviderError) and value.code == code:
            return value(f"(recorded) {message}")
    return errors.ServiceUnavailable(f"(recorded) {message or end}")


class _Answers:
    """One provider's recorded streams or requests, handed out in order."""

    def __init__(self, kind: str, settings: RecordedSettings) -> None:
        self.kind = kind
        self.settings = settings
        self.recording: Recording | None = None
        self.served = 0

    def load(self) -> None:
        if self.recording is None:
            self.recording = read(self.settings.file)

    def next(self) -> list[dict[str, Any]]:
        self.load()
        assert self.recording is not None
        n, self.served = self.served, self.served + 1
        lines = self.recording.outputs(self.kind, self.settings.place).get(n)
        if lines is None:
            raise NoRecordedAnswer(f"the recording has no {self.kind} request {n + 1} for place {self.settings.place}")
        return lines


async def _until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    delay = when - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _ended(end: str) -> None:
    """How a recorded stream ended: ``ok`` returns, ``closed`` waits to be closed, an error is raised."""
    if end == "closed":
        await asyncio.Event().wait()
    elif end != "ok":
        raise _error(end)


class RecordedSTT(STT):
    name = "recorded"
    Settings = RecordedSTTSettings

    def __init__(self, settings: RecordedSTTSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        self.capabilities = STTCapabilities(True, s.interim_results, tuple(s.sample_rates), s.endpointing)
        self.answers = _Answers("stt", s)

    async def start(self) -> None:
        self.answers.load()

    async def transcribe(self, audio: AsyncIterable[bytes | Flush], *, sample_rate: int) -> AsyncIterator[TranscriptEvent]:
        lines = self.answers.next()
        outputs = deque(line for line in lines if "text" in line)
        end = next((line["end"] for line in lines if "end" in line), "closed")
        loop = asyncio.get_running_loop()
        waiting: deque[tuple[float, dict[str, Any]]] = deque()  # outputs the provider took time for, when due
        source = aiter(audio)
        reading: asyncio.Future[Any] | None = None
        flushes = size = 0
        try:
            while True:
                while waiting and waiting[0][0] <= loop.time():
                    yield _transcript(waiting.popleft()[1])
                if waiting:  # the next audio, or the time of the next output, whichever comes first
                    reading = reading or asyncio.ensure_future(anext(source, _END))
                    await asyncio.wait({reading}, timeout=waiting[0][0] - loop.time())
                    if not reading.done():
                        continue
                    item, reading = reading.result(), None
                else:
                    item = await anext(source, _END)
                if item is _END:
                    break
                if isinstance(item, Flush):
                    flushes, size = flushes + 1, 0
                else:
                    size += len(item)
                while outputs and (flushes, size) >= tuple(outputs[0]["at"][:2]):
                    line = outputs.popleft()
                    if line.get("s") or waiting:  # it took the provider time (or an earlier one is pending)
                        due = loop.time() + max(0.0, line["t"] - line["at"][2])
                        waiting.append((max(due, waiting[-1][0]) if waiting else due, line))
                    else:
                        yield _transcript(line)
            for due, line in waiting:
                await _until(loop, due)
                yield _transcript(line)
            if end not in ("ok", "closed"):
                raise _error(end)
        finally:
            if reading is not None:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)


_END = object()


def _transcript(line: dict[str, Any]) -> TranscriptEvent:
    return TranscriptEvent(line["text"], final=line["final"], speech_final=line.get("speech_final", False))


async def _paced(lines: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """A request's recorded lines at their times from its start, waiting only where the provider had waited
    (``s``): items it produced in one go come in one go."""
    loop = asyncio.get_running_loop()
    start, t0 = loop.time(), lines[0]["t"]
    for line in lines[1:]:
        if line.get("s"):
            await asyncio.sleep(max(0.0, start + line["t"] - t0 - loop.time()))
        yield line


class RecordedLLM(LLM):
    name = "recorded"
    Settings = RecordedSettings
    capabilities: ClassVar[LLMCapabilities] = LLMCapabilities(streaming=True, tools=True)

    def __init__(self, settings: RecordedSettings | None = None) -> None:
        super().__init__(settings)
        self.answers = _Answers("llm", self.settings)

    async def start(self) -> None:
        self.answers.load()

    async def stream(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> AsyncIterator[LLMChunk]:
        async for line in _paced(self.answers.next()):
            if "text" in line:
                yield TextDelta(line["text"])
            elif "tool_call" in line:
                yield ToolCall(**line["tool_call"])
            elif "usage" in line:
                yield Usage(*line["usage"])
            elif "end" in line:
                await _ended(line["end"])
                return
        await _ended("closed")


class RecordedTTS(TTS):
    name = "recorded"
    Settings = RecordedTTSSettings

    def __init__(self, settings: RecordedTTSSettings | None = None) -> None:
        super().__init__(settings)
        self.capabilities = TTSCapabilities(self.settings.sample_rate, streaming_input=self.settings.streaming_input)
        self.answers = _Answers("tts", self.settings)

    async def start(self) -> None:
        self.answers.load()

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        async for chunk in self._replay(self.answers.next()):
            yield chunk

    async def speak(self, text: AsyncIterable[str]) -> AsyncIterator[AudioChunk]:
        if not self.settings.streaming_input:
            async for chunk in super().speak(text):
                yield chunk
            return

        async def drain() -> None:  # the text is taken as it comes, as a streaming TTS does
            async for _ in text:
                pass

        reader = asyncio.create_task(drain(), name="recorded-tts-reader")
        try:
            async for chunk in self._replay(self.answers.next()):
                yield chunk
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _replay(self, lines: list[dict[str, Any]]) -> AsyncIterator[AudioChunk]:
        async for line in _paced(lines):
            if "audio" in line:
                size, rate = line["audio"]
                yield AudioChunk(bytes(size), rate, line.get("text"))
            elif "end" in line:
                await _ended(line["end"])
                return
        await _ended("closed")


@hookimpl
def register_providers(register: Any) -> None:
    register(RecordedSTT)
    register(RecordedLLM)
    register(RecordedTTS)
