"""Recording proxies in front of the engine's STT, LLM and TTS providers (``storage.record``).

One proxy per provider of each chain, put in its place once by the ``Recorder`` (same breaker, same settings;
everything but the stream methods is the provider's own). A stream of a session being recorded is written to
its file: when it opens, each item it produces, whether the provider let the event loop run before the item
(``Probe``: a replay waits only there), and how it ended. Other sessions' streams go through untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from vocable.providers.base import Flush, TextDelta, ToolCall, Usage

if TYPE_CHECKING:
    from vocable.engine.runtime import Runtime
    from vocable.recording.recorder import Recorder, SessionRecording


def install_proxies(runtime: Runtime, recorder: Recorder) -> None:
    """Put a recording proxy in front of every STT, LLM and TTS provider (same breaker, same settings)."""
    for kind, proxy in (("stt", STTProxy), ("llm", LLMProxy), ("tts", TTSProxy)):
        chain = getattr(runtime, kind)
        for place, live in enumerate(chain):
            if not isinstance(live.provider, Proxy):
                chain[place] = dataclasses.replace(live, provider=proxy(live.provider, recorder, place))


class Proxy:
    """Delegates everything to the provider; the stream methods also write what it produces."""

    kind = ""

    def __init__(self, inner: Any, recorder: Recorder, place: int) -> None:
        self._inner = inner
        self._recorder = recorder
        self._place = place

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _open(self, **item: Any) -> tuple[SessionRecording, Callable[..., None]] | None:
        recording = self._recorder.current()
        if recording is None:
            return None
        head = {"p": self._place, "n": recording.number(self.kind, self._place)}

        def write(**fields: Any) -> None:
            recording.line(**{self.kind: {**head, **fields}})

        write(open=True, **item)
        return recording, write

    async def _through(self, opened: tuple[SessionRecording, Callable[..., None]] | None,
                       open_stream: Callable[[], AsyncIterator[Any]], note: Callable[[Any], dict[str, Any]]
                       ) -> AsyncIterator[Any]:
        """The provider's stream, written down when its session is being recorded."""
        stream = open_stream()
        if opened is None:
            async with aclosing(stream):
                async for item in stream:
                    yield item
            return
        async for item in self._relay(stream, opened[1], note):
            yield item

    async def _relay(self, stream: AsyncIterator[Any], write: Callable[..., None],
                     note: Callable[[Any], dict[str, Any]], probe: Probe | None = None) -> AsyncIterator[Any]:
        """Yield ``stream``'s items, writing each (``note``), whether the provider let the event loop run before
        it (``s``: a replay waits for its time only then), and how the stream ended."""
        probe = probe if probe is not None else Probe()
        end = "closed"
        try:
            async with aclosing(stream):
                while True:
                    probe.reset()
                    try:
                        item = await probe.run(stream.__anext__())
                    except StopAsyncIteration:
                        break
                    write(**note(item), **probe.flag())
                    yield item
            end = "ok"
        except Exception as exc:
            end = f"error: {getattr(exc, 'code', type(exc).__name__)}: {exc}"
            raise
        finally:
            write(end=end, **probe.flag())


class Probe:
    """Counts the times an awaitable suspends (lets the event loop run something else) before it is done.

    A provider that yields several items without suspending (a burst of buffered tokens) must replay as such:
    the time between them in the recording is the machine's, not the provider's.
    """

    __slots__ = ("count", "mark")

    def __init__(self) -> None:
        self.count = 0
        self.mark = 0  # ``count`` when the provider last read its input (the STT's audio)

    def reset(self) -> None:
        self.count = self.mark = 0

    def flag(self) -> dict[str, bool]:
        return {"s": True} if self.count > self.mark else {}

    def run(self, awaitable: Awaitable[Any]) -> Awaitable[Any]:
        return _Probed(awaitable, self)


class _Probed:
    __slots__ = ("awaitable", "probe")

    def __init__(self, awaitable: Awaitable[Any], probe: Probe) -> None:
        self.awaitable = awaitable
        self.probe = probe

    def __await__(self) -> Any:
        inner = self.awaitable.__await__()
        try:
            sent = inner.send(None)
        except StopIteration as done:
            return done.value
        while True:
            self.probe.count += 1
            try:
                value = yield sent
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - delegated to the awaitable, as ``yield from`` does
                try:
                    sent = inner.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    sent = inner.send(value)
                except StopIteration as done:
                    return done.value


class STTProxy(Proxy):
    kind = "stt"

    async def transcribe(self, audio: AsyncIterable[bytes | Flush], *, sample_rate: int) -> AsyncIterator[Any]:
        opened = self._open(sample_rate=sample_rate)
        if opened is None:
            async for event in self._inner.transcribe(audio, sample_rate=sample_rate):
                yield event
            return
        recording, write = opened
        recording.adopt()  # the replies this STT's finals start are this session's too
        read = [0, 0, 0.0]  # flushes, bytes since the last flush, when the last item was read
        probe = Probe()

        async def counted() -> AsyncIterator[bytes | Flush]:
            async for item in audio:
                if isinstance(item, Flush):
                    read[0], read[1] = read[0] + 1, 0
                else:
                    read[1] += len(item)
                read[2] = recording.t()
                probe.mark = probe.count  # suspensions from here on are the provider's own (decoding...)
                yield item

        def note(event: Any) -> dict[str, Any]:
            return {"text": event.text, "final": event.final, "speech_final": event.speech_final,
                    "at": [read[0], read[1], read[2]]}

        stream = self._inner.transcribe(counted(), sample_rate=sample_rate)
        async for event in self._relay(stream, write, note, probe):
            yield event


class LLMProxy(Proxy):
    kind = "llm"

    def stream(self, messages: Sequence[Any], *, tools: Sequence[Any] = ()) -> AsyncIterator[Any]:
        return self._through(self._open(), lambda: self._inner.stream(messages, tools=tools), _llm_note)


def _llm_note(chunk: Any) -> dict[str, Any]:
    if isinstance(chunk, TextDelta):
        return {"text": chunk.text}
    if isinstance(chunk, ToolCall):
        return {"tool_call": {"id": chunk.id, "name": chunk.name, "arguments": chunk.arguments}}
    if isinstance(chunk, Usage):
        return {"usage": [chunk.prompt_tokens, chunk.completion_tokens]}
    return {"other": type(chunk).__name__}


class TTSProxy(Proxy):
    kind = "tts"

    def synthesize(self, text: str) -> AsyncIterator[Any]:
        return self._through(self._open(text=text), lambda: self._inner.synthesize(text), _tts_note)

    def speak(self, text: AsyncIterable[str]) -> AsyncIterator[Any]:
        opened = self._open(streaming=True)
        pieces = _written_pieces(text, opened[1]) if opened is not None else text
        return self._through(opened, lambda: self._inner.speak(pieces), _tts_note)


def _tts_note(chunk: Any) -> dict[str, Any]:
    return {"audio": [len(chunk.pcm), chunk.sample_rate], "text": chunk.text}


async def _written_pieces(pieces: AsyncIterable[str], write: Callable[..., None]) -> AsyncIterator[str]:
    async for piece in pieces:
        write(piece=piece)
        yield piece
