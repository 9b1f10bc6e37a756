"""The provider interfaces: typed async streams for every slot of the pipeline.

Every provider is a class registered through a plugin hook. The class declares:

- ``name``: what users write after ``provider:`` in YAML;
- ``Settings``: a pydantic model of its own keys (``extra="forbid"``, so a typo is an error with a path);
- ``capabilities``: what the engine may rely on (sample rates, streaming, interim results);
- ``requires``: the import names it needs and the extra that brings them, so a missing package is an
  install hint rather than an ImportError at start-up.

One instance is created per Engine and shared by every session (models load once per process). Per-session
state lives in the stream objects the provider returns, never on the provider itself.

Audio is always signed 16-bit little-endian mono PCM (``bytes``). Frames and tokens never go through pluggy:
the engine calls these async methods directly on the hot path.
"""

from __future__ import annotations

import importlib.util
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from vocable.providers.errors import ProviderUnavailable

Kind = Literal["stt", "llm", "tts", "vad", "turn", "interruption", "metrics"]


class ProviderSettings(BaseModel):
    """Base of every provider's settings model: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Requirement:
    """An importable module a provider needs, and the ``pip install`` that brings it."""

    module: str
    install: str

    def missing(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is None
        except (ImportError, ValueError):
            return True


class Provider(ABC):
    """Common life cycle of every provider: construct cheaply, ``start`` loads, ``aclose`` releases."""

    kind: ClassVar[Kind]
    name: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings
    requires: ClassVar[tuple[Requirement, ...]] = ()

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    @classmethod
    def check_installed(cls) -> None:
        """Raise ProviderUnavailable naming the install command when a required package is absent."""
        missing = [r for r in cls.requires if r.missing()]
        if missing:
            installs = sorted({r.install for r in missing})
            modules = ", ".join(r.module for r in missing)
            raise ProviderUnavailable(
                f"{cls.kind} provider {cls.name!r} needs {modules}: run " + " and ".join(installs)
            )

    async def start(self) -> None:
        """Load models or open pools. Called once, before any session; may take seconds."""

    async def aclose(self) -> None:
        """Release everything ``start`` acquired."""


# ---------------------------------------------------------------------------------------------- STT


@dataclass(frozen=True, slots=True)
class Flush:
    """End of an utterance: the STT must emit its final transcript for the audio it has."""


FLUSH = Flush()


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """An interim (``final=False``) or final transcript of the current utterance.

    ``speech_final`` is set by STTs that detect the end of the user's turn themselves (Deepgram's
    ``speech_final`` / ``UtteranceEnd``); the engine may use it as its end-of-turn signal.
    """

    text: str
    final: bool
    speech_final: bool = False
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class STTCapabilities:
    streaming: bool
    interim_results: bool
    sample_rates: tuple[int, ...] = (16000,)
    endpointing: bool = False


class STT(Provider):
    """Speech-to-text: consumes audio frames and Flush markers, yields transcripts.

    The engine opens one ``transcribe`` stream per session and keeps it for the session's life, sending
    only the user's speech (with a little pre-roll) followed by ``FLUSH`` at each end of turn. A streaming
    STT forwards frames as they come; a batch STT (Whisper) buffers them and decodes at the flush. After the
    flush the stream must yield exactly one final transcript (possibly empty text) for that utterance.
    """

    kind = "stt"
    capabilities: ClassVar[STTCapabilities] = STTCapabilities(streaming=False, interim_results=False)

    @abstractmethod
    def transcribe(
        self, audio: AsyncIterable[bytes | Flush], *, sample_rate: int
    ) -> AsyncIterator[TranscriptEvent]:
        """Return an async iterator of transcripts; ends when ``audio`` ends."""


# ---------------------------------------------------------------------------------------------- LLM


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the LLM may call: JSON-Schema ``parameters`` as in the OpenAI-style tool APIs."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


LLMChunk = TextDelta | ToolCall | Usage


@dataclass(frozen=True, slots=True)
class LLMCapabilities:
    streaming: bool = True
    tools: bool = False


class LLM(Provider):
    """A chat model: messages (and tools) in, a stream of text deltas, tool calls and usage out."""

    kind = "llm"
    capabilities: ClassVar[LLMCapabilities] = LLMCapabilities()

    @abstractmethod
    def stream(self, messages: Sequence[Message], *, tools: Sequence[Tool] = ()) -> AsyncIterator[LLMChunk]:
        """Return an async iterator of chunks. Closing it (``aclose``) must stop generation promptly."""


# ---------------------------------------------------------------------------------------------- TTS

_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[.!?;:,])[\"')\]]*\s+|\n+|\s+[-\u2013\u2014]\s+")


def split_sentences(buffer: str, *, min_chars: int = 12, clauses: bool = False) -> tuple[list[str], str]:
    """Cut complete sentences off the front of ``buffer``; return them and the unfinished rest.

    Short fragments ("Hi.") are merged into the next sentence so the TTS is not asked for tiny clips.
    With ``clauses`` a comma or a dash also ends a piece: the engine uses it for the first piece of a
    reply, so the first audio does not wait for a long sentence to be written and synthesized.
    """
    sentences: list[str] = []
    start = 0
    for match in (_CLAUSE_END if clauses else _SENTENCE_END).finditer(buffer):
        end = match.end()
        if len(buffer[start:end].strip()) >= min_chars:
            sentences.append(buffer[start:end].strip())
            start = end
    return sentences, buffer[start:]


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """TTS output audio.

    ``text``, when set, is the text this chunk starts speaking: the engine keeps, after a barge-in, only the
    text whose audio was heard. Sentence TTS leaves it unset (the engine knows its sentences); a streaming
    TTS sets it on the first chunk of each piece it can align (a word, some characters). Pieces are
    concatenated as given, so include their spaces.
    """

    pcm: bytes
    sample_rate: int
    text: str | None = None


class WholeSamples:
    """Cuts raw PCM16, as it arrives in network-sized pieces, at sample boundaries: an odd byte waits for the
    next piece, so no ``AudioChunk`` ever splits a 16-bit sample."""

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = b""

    def take(self, data: bytes) -> bytes:
        """The whole samples of what has arrived so far (possibly empty)."""
        data = self._carry + data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        return data[:usable]


@dataclass(frozen=True, slots=True)
class TTSCapabilities:
    sample_rate: int
    streaming_input: bool = False  # accepts text as it streams (websocket TTS) instead of sentences


class TTS(Provider):
    """Text-to-speech. Sentence TTS implements ``synthesize``; streaming-text TTS also overrides ``speak``."""

    kind = "tts"
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(sample_rate=16000)

    @property
    def sample_rate(self) -> int:
        return self.capabilities.sample_rate

    @abstractmethod
    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Speak one sentence; chunks at ``sample_rate``."""

    async def speak(self, text: AsyncIterable[str]) -> AsyncIterator[AudioChunk]:
        """Speak text that arrives in pieces (LLM deltas).

        The default aggregates sentences and calls ``synthesize`` for each, marking each sentence's first
        chunk with its text. Websocket TTS providers override this to send the pieces as they come.
        """
        buffer = ""
        async for piece in text:
            buffer += piece
            sentences, buffer = split_sentences(buffer)
            for sentence in sentences:
                async for chunk in self._marked(sentence):
                    yield chunk
        if buffer.strip():
            async for chunk in self._marked(buffer.strip()):
                yield chunk

    async def _marked(self, sentence: str) -> AsyncIterator[AudioChunk]:
        first = True
        async for chunk in self.synthesize(sentence):
            if first:
                chunk = AudioChunk(chunk.pcm, chunk.sample_rate, sentence)
                first = False
            yield chunk


# ---------------------------------------------------------------------------------------------- VAD


@dataclass(frozen=True, slots=True)
class VADCapabilities:
    sample_rate: int = 16000
    frame_samples: int = 512


class VADStream(ABC):
    """Per-session VAD state. ``probability`` is synchronous: it costs ~0.1 ms, less than a thread hop."""

    @abstractmethod
    def probability(self, frame: bytes) -> float:
        """Speech probability of one frame of ``frame_samples`` samples."""

    def reset(self) -> None:
        """Forget state between utterances (optional)."""


class VAD(Provider):
    kind = "vad"
    capabilities: ClassVar[VADCapabilities] = VADCapabilities()

    @abstractmethod
    def open(self) -> VADStream:
        """A new detector for one session."""


# ---------------------------------------------------------------------------------------- end of turn


class TurnStream(ABC):
    """Per-session end-of-turn state, driven by audio time so that it behaves the same faster than real time.

    The engine calls ``on_pause`` for every frame of silence after the user spoke, with the utterance audio
    and how long the pause has lasted (audio milliseconds). Returning True ends the user's turn. A detector
    that runs a model starts it in the background on the first call it cares about and answers on later calls.
    """

    @abstractmethod
    def on_pause(self, utterance: bytes, pause_ms: float, sample_rate: int) -> bool: ...

    def on_speech(self) -> None:
        """The user spoke again: drop any pending decision."""

    def on_words(self, text: str) -> None:
        """The transcript of the utterance up to the current pause (the engine's speculative final, reported
        while the pause lasts). A detector may weigh it: "a table for" has not ended. Optional."""

    def expect_words(self, expected: bool) -> None:
        """Told once by the engine: will ``on_words`` come during pauses (``turn_taking.speculative_ms`` on)?"""

    async def aclose(self) -> None:
        """Cancel any background work."""


class TurnDetector(Provider):
    kind = "turn"

    @abstractmethod
    def open(self) -> TurnStream: ...


# -------------------------------------------------------------------------------------- interruption


class InterruptionClassifier(Provider):
    """Decides what words the user said over the agent's reply mean (``pipeline.interruption``).

    While a barge-in has paused the reply, the engine asks about each transcript of the user's words: True
    commits the interruption, False calls them a backchannel ("uh-huh", "right") so the reply resumes and the
    words start no turn of their own, None waits for more words. Without a classifier the engine's word rule
    decides (``turn_taking.min_words``). Called on the event loop for every interim: keep it fast.
    """

    kind = "interruption"

    @abstractmethod
    def is_interruption(self, text: str) -> bool | None: ...


# ------------------------------------------------------------------------------------------- metrics


class MetricsSink(Provider):
    """Receives one record per finished turn (a ``vocable.engine.metrics.TurnMetrics``)."""

    kind = "metrics"

    @abstractmethod
    def record(self, metrics: Any) -> None:
        """Must not block: a sink that writes to the network queues and returns."""
