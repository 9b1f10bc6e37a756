"""``vocable talk``: a spoken WAV file through the whole pipeline, with no network.

By default the whole file is one user turn: the configured end-of-turn detector is swapped for
``input-end`` (``InputEndTurn``), which never ends a turn on a pause and ends it when told, after the last
frame of the file. With ``turns=True`` the configured detector decides, as it would live, so each pause may
end a turn; the file is then fed as a caller who waits for each answer before going on, so no reply is cut
off by the next phrase.

Every reply is read to its end (its ``metrics`` event) before the session closes, and all of its audio, every
frame in order, goes to the output file.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vocable.config.model import ProviderRef, VocableConfig
from vocable.engine.events import AudioOut, ErrorEvent, Event, MetricsEvent, Reply, StateChanged, Transcript
from vocable.plugins.hookspecs import hookimpl
from vocable.providers.base import TurnDetector, TurnStream
from vocable.audio import read_wav, silence, write_wav

if TYPE_CHECKING:
    from vocable.engine.engine import Engine

FRAME_MS = 20
TAIL_SILENCE_MS = 2000  # after the file: enough quiet for a configured detector to end the last turn


# ------------------------------------------------------------------------------------ end of the input


class _InputEndStream(TurnStream):
    __slots__ = ("ending",)

    def __init__(self) -> None:
        self.ending = False

    def on_pause(self, utterance: bytes | bytearray, pause_ms: float, sample_rate: int) -> bool:
        return self.ending


class InputEndTurn(TurnDetector):
    """``input-end``: a turn ends only after ``end()``, on the next quiet frame; pauses never end it."""

    name = "input-end"

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._streams: weakref.WeakSet[_InputEndStream] = weakref.WeakSet()

    def open(self) -> TurnStream:
        stream = _InputEndStream()
        self._streams.add(stream)
        return stream

    def end(self) -> None:
        for stream in self._streams:
            stream.ending = True


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(InputEndTurn)


def talk_engine(config: VocableConfig, *, turns: bool = False, **engine_args: Any) -> Engine:
    """The Engine ``vocable talk`` runs ``config`` on; ``turns=False``: the end of the input ends the turn.

    Speculative replies are off then too: no pause inside the file ends the turn, so one prepared during a
    pause would only be dropped.
    """
    from vocable.engine.engine import Engine

    if not turns:
        pipeline = config.pipeline
        taking = pipeline.turn_taking.model_copy(update={"speculative_ms": 0})
        turn = [ProviderRef(provider=InputEndTurn.name)]
        pipeline = pipeline.model_copy(update={"turn": turn, "turn_taking": taking})
        config = config.model_copy(update={"pipeline": pipeline})
        engine_args["plugins"] = [*engine_args.get("plugins", ()), __name__]
    return Engine(config, **engine_args)


# ------------------------------------------------------------------------------------ the conversation


@dataclass
class TalkTurn:
    turn_id: str
    transcript: str = ""
    reply: str = ""
    latency: dict[str, Any] = field(default_factory=dict)
    audio: bytearray = field(default_factory=bytearray, repr=False)


@dataclass
class TalkResult:
    turns: list[TalkTurn]  # the user's turns, in order
    sample_rate: int  # of the reply audio

    @property
    def audio_seconds(self) -> float:
        return sum(len(turn.audio) for turn in self.turns) / 2 / self.sample_rate


class _Reader:
    """Reads every event of the session as it comes, keeping each turn's transcript, reply, audio and figures."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.turns: dict[str, TalkTurn] = {}
        self.state = "listening"  # as the events read so far tell it
        self.unfinished: set[str] = set()  # turns with a final transcript whose metrics are not read yet
        self.errors: list[str] = []
        self.ended = False
        self._progress = asyncio.Event()

    async def run(self) -> None:
        try:
            async for event in self.session.iter_events():
                self._take(event)
                self._progress.set()
        finally:
            self.ended = True
            self._progress.set()

    def _take(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            self.state = event.state
            return
        if isinstance(event, ErrorEvent):
            self.errors.append(f"{event.code}: {event.message}")
            return
        turn_id = getattr(event, "turn_id", None)
        if turn_id is None:
            return
        turn = self.turns.get(turn_id)
        if turn is None:
            turn = self.turns[turn_id] = TalkTurn(turn_id)
        if isinstance(event, Transcript) and event.final:
            turn.transcript = event.text
            self.unfinished.add(turn_id)
        elif isinstance(event, Reply):
            turn.reply += event.text
        elif isinstance(event, AudioOut):
            turn.audio += event.pcm
        elif isinstance(event, MetricsEvent):
            turn.latency = {k: v for k, v in event.figures.items() if k.endswith("_ms")}
            self.unfinished.discard(turn_id)

    def _settled(self) -> bool:
        session = self.session
        return session.state == "listening" and self.state == "listening" and not self.unfinished and not session.events

    async def settle(self) -> None:
        """Wait until no turn is in progress and every event of the finished ones has been read."""
        while not self._settled():
            if self.ended:
                raise RuntimeError("the session ended before the reply did")
            self._progress.clear()
            await self._progress.wait()

    def user_turns(self) -> list[TalkTurn]:
        return [turn for turn in self.turns.values() if turn.transcript]  # a greeting has no transcript


async def _send(conv: Any, reader: _Reader, pcm: bytes, step: int, *, until_turn: bool = False) -> None:
    """Feed ``pcm`` frame by frame; when a turn ends, hear its reply out before going on."""
    for i in range(0, len(pcm), step):
        await conv.send_audio(pcm[i : i + step])
        if conv.session.state != "listening":
            await reader.settle()
            if until_turn:
                return


async def run_talk(engine: Engine, wav_in: str, wav_out: str | None, timeout_s: float = 300.0) -> TalkResult:
    """Speak ``wav_in`` to ``engine`` (made by ``talk_engine``); write every reply's audio to ``wav_out``."""
    pcm, rate = read_wav(wav_in)
    if not pcm:
        raise ValueError(f"{wav_in} holds no audio")
    step = rate * FRAME_MS // 1000 * 2
    reading: asyncio.Task[None] | None = None
    await engine.start()
    try:
        async with asyncio.timeout(timeout_s), engine.conversation(pace=False, input_sample_rate=rate) as conv:
            reader = _Reader(conv.session)
            reading = asyncio.create_task(reader.run(), name="vocable-talk-reader")
            await reader.settle()  # a greeting is heard out before the caller speaks
            await _send(conv, reader, pcm, step)
            for detector in engine.runtime.turn:
                if isinstance(detector.provider, InputEndTurn):
                    detector.provider.end()
            await _send(conv, reader, silence(TAIL_SILENCE_MS, rate), step, until_turn=True)
            await reader.settle()
            out_rate = conv.session.output_sample_rate
    except TimeoutError:
        raise TimeoutError(f"no reply within {timeout_s:g} s") from None
    finally:
        if reading is not None:
            await asyncio.gather(reading, return_exceptions=True)  # the closed session ends it
        await engine.stop()
    if reader.errors:
        raise RuntimeError(reader.errors[0])
    result = TalkResult(reader.user_turns(), out_rate)
    if not result.turns:
        raise RuntimeError("no speech was recognised in the input")
    if wav_out:
        write_wav(wav_out, b"".join(turn.audio for turn in result.turns), out_rate)
    return result
