"""One reply: LLM stream -> sentences -> TTS stream -> paced audio out, all cancellable at once.

Three tasks run side by side in a TaskGroup so the TTS works on sentence two while sentence one plays:
the LLM pump writes text into a ``TextFeed``, the TTS pump turns it into audio chunks in a bounded queue,
and the player cuts them into frames and hands them to the session at real time plus a small lead.
Cancelling the reply task cancels all three, and ``aclosing`` closes every provider stream.

About 400 lines: the reply in progress (``AgentReply``), its pumps and its player belong together, since the
player's hot loop and the segment accounting read the same state frame by frame.
"""

from __future__ import annotations

import asyncio
from copy import copy
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from vocable.engine.audio import Framer, Resampler
from vocable.engine.channel import Channel
from vocable.engine.events import AudioOut, Event, Reply, ToolCallEvent
from vocable.engine.fallback import ServedBy, fallback_stream
from vocable.engine.metrics import TurnMetrics, now
from vocable.engine.pacer import Pacer
from vocable.engine.textfeed import TextFeed
from vocable.engine.tools import Fillers, ToolCalls, ToolOutcome
from vocable.providers.base import AudioChunk, Message, TextDelta, ToolCall, Usage, split_sentences

if TYPE_CHECKING:
    from vocable.config.model import OutputConfig
    from vocable.engine.runtime import Runtime

log = structlog.get_logger("vocable.reply")

MAX_TOOL_ROUNDS = 4
LLM_STALL_S = 20.0
TTS_STALL_S = 30.0
FIRST_PIECE_MIN_CHARS = 16  # the first audio may start at a clause of this length rather than a sentence
BREAK = "\u2029"  # in the reply text: all there is for a while (a filler while a tool runs), speak it now


@dataclass(slots=True)
class Segment:
    """A piece of reply text and how much of its audio went out (for memory after a barge-in)."""

    text: str | None
    start_byte: int
    end_byte: int | None = None


@dataclass(slots=True)
class AgentReply:
    """The agent's reply to one user turn, as it is produced and played: its text, which audio each piece of
    text became, how much audio went out, and whether its output is paused. (The user's side of the exchange
    is a turn: ``turn_id``, ``TurnMetrics``, ``TurnRecord``; the end-of-turn detector decides when it ends.)"""

    id: str  # the turn's id: one reply per user turn
    user_text: str | None
    metrics: TurnMetrics
    reply_text: str = ""
    segments: list[Segment] = field(default_factory=list)
    emitted_bytes: int = 0
    interrupted: bool = False
    error: str | None = None
    started_at: float = 0.0
    finished: bool = False
    tool_calls: list[ToolCall] = field(default_factory=list)  # calls this reply started, in order
    paused: bool = False  # the player waits before its next frame (a barge-in not decided yet)
    heard_bytes: int | None = None  # reply audio the listener had heard when the output paused
    _resumed: asyncio.Event = field(default_factory=asyncio.Event)

    def pause(self) -> None:
        self.paused = True
        self._resumed.clear()

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    async def wait_resumed(self) -> None:
        while self.paused:
            await self._resumed.wait()

    def spoken_text(self, played_bytes: int) -> str:
        """The reply as far as it was heard: whole segments, then the heard share of the current one."""
        if not self.segments or all(s.text is None for s in self.segments):
            if self.emitted_bytes <= 0:
                return ""
            return _leading_words(self.reply_text, played_bytes / self.emitted_bytes)
        spoken = ""
        for segment in self.segments:
            if segment.text is None or played_bytes <= segment.start_byte:
                continue
            end = segment.end_byte if segment.end_byte is not None else self.emitted_bytes
            fraction = (played_bytes - segment.start_byte) / max(1, end - segment.start_byte)
            if fraction >= 1.0:
                spoken += segment.text
            else:
                spoken += _leading_words(segment.text, fraction)
                break
        return " ".join(spoken.split())


def _leading_words(text: str, fraction: float) -> str:
    words = text.split()
    if fraction >= 1.0:
        return text.strip()
    return " ".join(words[: int(len(words) * max(0.0, fraction))])


class Player:
    """Cuts audio into frames and paces them at real time plus ``lead_ms``."""

    def __init__(self, output: OutputConfig, sample_rate: int, pace: bool) -> None:
        self.sample_rate = sample_rate
        self.pace = pace
        self.lead_s = output.lead_ms / 1000.0
        self.framer = Framer(sample_rate * output.frame_ms // 1000)
        self._resamplers: dict[int, Resampler] = {}
        self._t0: float | None = None
        self.sent_s = 0.0
        self.pacer = Pacer.current()  # shared timers: one per 20 ms frame would cost more

    def convert(self, chunk: AudioChunk) -> list[bytes]:
        resampler = self._resamplers.get(chunk.sample_rate)
        if resampler is None:
            resampler = self._resamplers[chunk.sample_rate] = Resampler(chunk.sample_rate, self.sample_rate)
        return self.framer.push(chunk.pcm if resampler.passthrough else resampler(chunk.pcm))

    def tail(self) -> list[bytes]:
        rest = self.framer.rest()
        if not rest:
            return []
        return [rest + b"\x00" * (self.framer.frame_bytes - len(rest))]

    def delay(self, frame: bytes) -> float:
        """Seconds to wait before ``frame`` may be sent (0: now), counting it as sent.

        A TTS underrun restarts the clock rather than bursting. Synchronous, so the player awaits only
        the sleep itself: one coroutine less to resume for every 20 ms frame of every session.
        """
        if not self.pace:
            return 0.0
        clock = now()
        if self._t0 is None:
            self._t0 = clock
        ahead = self.sent_s - (clock - self._t0)
        if ahead < 0:
            self._t0 -= ahead
            ahead = 0.0
        self.sent_s += len(frame) / 2 / self.sample_rate
        return ahead - self.lead_s if ahead > self.lead_s else 0.0

    def remaining_s(self) -> float:
        if not self.pace or self._t0 is None:
            return 0.0
        return max(0.0, self.sent_s - (now() - self._t0))


class ReplyRunner:
    """Produces one reply; owned by a session's ``Replies``, which gives it ways to emit events."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        output: OutputConfig,
        output_sample_rate: int,
        emit: Callable[[Event], Awaitable[None]],
        on_speaking: Callable[[str], Awaitable[None]],
        tools: ToolCalls,
        fillers: Fillers,
        pace: bool,
        queue_chunks: int,
        log_context: dict[str, Any],
    ) -> None:
        self.runtime = runtime
        self.output = output
        self.output_sample_rate = output_sample_rate
        self.emit = emit
        self.on_speaking = on_speaking
        self.tools = tools
        self.fillers = fillers
        self.pace = pace
        self.queue_chunks = queue_chunks
        self.log = log.bind(**log_context)
        self.release: asyncio.Event | None = None
        self._held: list[Event] = []
        self._emit_now = emit

    async def run(
        self, reply: AgentReply, messages: list[Message] | None, fixed_text: str | None = None,
        release: asyncio.Event | None = None, prelude: tuple[Event, ...] = (),
    ) -> float:
        """Produce the reply; return how many seconds of audio are still ahead of the listener.

        With a ``release`` (a speculative reply, started before the user's turn surely ended) everything is
        prepared but nothing reaches the client until the release opens; ``prelude`` goes out first then.
        """
        if release is not None and not release.is_set():
            runner = copy(self)
            runner.release = release
            runner._held = list(prelude)
            runner._emit_now = self.emit
            runner.emit = runner._held_emit
            return await runner._run(reply, messages, fixed_text)
        return await self._run(reply, messages, fixed_text)

    async def _held_emit(self, event: Event) -> None:
        """Events of a held reply wait for the release, then go out in order ahead of anything newer."""
        if self.release is not None and not self.release.is_set():
            self._held.append(event)
            return
        await self._flush_held()
        await self._emit_now(event)

    async def _flush_held(self) -> None:
        while self._held:
            await self._emit_now(self._held.pop(0))

    async def _run(self, reply: AgentReply, messages: list[Message] | None, fixed_text: str | None) -> float:
        feed = TextFeed()
        audio: Channel[AudioChunk | str | None] = Channel(self.queue_chunks)
        player = Player(self.output, self.output_sample_rate, self.pace)
        async with asyncio.TaskGroup() as group:
            if fixed_text is None:
                assert messages is not None
                group.create_task(self._pump_llm(reply, messages, feed))
            else:
                feed.push(fixed_text)
                feed.close()
                reply.reply_text = fixed_text
                reply.metrics.stamp("llm_request")
                reply.metrics.stamp("llm_first_token")
            group.create_task(self._pump_tts(reply, feed, audio))
            # the player is a task of its own, so each frame's wake-up resumes only its short chain
            group.create_task(self._play(reply, audio, player))
        return player.remaining_s()

    # ------------------------------------------------------------------------------------------- LLM

    async def _pump_llm(self, reply: AgentReply, messages: list[Message], feed: TextFeed) -> None:
        metrics = reply.metrics
        tools = [spec.tool for spec in self.tools.specs.values()]
        served = ServedBy()
        try:
            metrics.stamp("llm_request")
            for _round in range(MAX_TOOL_ROUNDS):
                calls: list[ToolCall] = []
                stream = fallback_stream(
                    "llm", self.runtime.llm, lambda p: p.stream(messages, tools=tools),
                    served=served, stall_timeout_s=LLM_STALL_S, turn_id=reply.id,
                )
                async with aclosing(stream):
                    async for chunk in stream:
                        if isinstance(chunk, TextDelta):
                            if not chunk.text:
                                continue
                            metrics.stamp("llm_first_token")
                            reply.reply_text += chunk.text
                            feed.push(chunk.text)
                            await self.emit(Reply(chunk.text, False, reply.id))
                        elif isinstance(chunk, ToolCall):
                            calls.append(chunk)
                        elif isinstance(chunk, Usage):
                            metrics.prompt_tokens = (metrics.prompt_tokens or 0) + chunk.prompt_tokens
                            metrics.completion_tokens = (metrics.completion_tokens or 0) + chunk.completion_tokens
                metrics.llm_provider = served.name
                if not calls:
                    break
                if self.release is not None:  # a speculative reply runs no tool before the user's turn ends
                    await self.release.wait()
                messages = messages + [Message("assistant", reply.reply_text, tool_calls=tuple(calls))]
                for call in calls:
                    await self.emit(ToolCallEvent(reply.id, call.id, call.name, call.arguments))
                reply.tool_calls.extend(calls)
                outcomes = await self._await_tools(reply, [self.tools.start(reply.id, call) for call in calls], feed)
                messages.extend(Message("tool", o.content, tool_call_id=o.call.id, name=o.call.name) for o in outcomes)
            await self.emit(Reply("", True, reply.id))
        finally:
            feed.close()

    async def _await_tools(self, reply: AgentReply, running: list[asyncio.Task[ToolOutcome]], feed: TextFeed
                           ) -> list[ToolOutcome]:
        """The calls' outcomes, speaking a filler phrase if they take long. Shielded: cancelling the reply
        (an interruption) does not cancel the calls; ``ToolCalls`` decides that per tool."""
        together = asyncio.shield(asyncio.gather(*running))
        after = self.fillers.after_s
        if after > 0:
            done, _ = await asyncio.wait({together}, timeout=after)
            if not done and (phrase := self.fillers.next()):
                reply.reply_text += phrase + " "
                feed.push(phrase + BREAK)  # short ("One moment."), but nothing follows until the tool ends
                await self.emit(Reply(phrase + " ", False, reply.id))
        return list(await together)

    # ------------------------------------------------------------------------------------------- TTS

    async def _pump_tts(self, reply: AgentReply, feed: TextFeed, audio: Channel[AudioChunk | str | None]) -> None:
        chain = self.runtime.tts
        metrics = reply.metrics
        try:
            if chain and chain[0].provider.capabilities.streaming_input:
                served = ServedBy()
                stream = fallback_stream(
                    "tts", chain, lambda p: p.speak(feed.read()),
                    served=served, stall_timeout_s=TTS_STALL_S, turn_id=reply.id,
                )
                async with aclosing(stream):
                    async for chunk in stream:
                        first = metrics.tts_request is None
                        if first:
                            metrics.first_text_ready = metrics.llm_first_token
                            metrics.tts_request = feed.first_read
                        metrics.stamp("tts_first_audio")
                        await audio.put(chunk)
                        if first or len(audio) == 1:  # the player is waiting for it: let it send now
                            await asyncio.sleep(0)
                metrics.tts_provider = served.name
                return
            buffer = ""
            async for piece in feed.read():
                buffer += piece
                first = not reply.segments and metrics.tts_request is None
                sentences, buffer = split_sentences(buffer, min_chars=FIRST_PIECE_MIN_CHARS if first else 12,
                                                    clauses=first)
                for sentence in sentences:
                    await self._speak_sentence(reply, sentence.replace(BREAK, " "), audio)
                if BREAK in buffer:  # too short to be a sentence by the rules above, yet complete: speak it
                    if rest := buffer.replace(BREAK, " ").strip():
                        await self._speak_sentence(reply, rest, audio)
                    buffer = ""
            if buffer.strip():
                await self._speak_sentence(reply, buffer.strip(), audio)
        except BaseException:
            audio.close()  # cancelled or failed: the player stops after what is queued; never wait for room
            raise
        finally:
            if not audio.closed:
                await audio.put(None)

    async def _speak_sentence(self, reply: AgentReply, sentence: str, audio: Channel[AudioChunk | str | None]) -> None:
        metrics = reply.metrics
        metrics.stamp("first_text_ready")
        await audio.put(sentence)
        served = ServedBy()
        metrics.stamp("tts_request")
        stream = fallback_stream(
            "tts", self.runtime.tts, lambda p: p.synthesize(sentence),
            served=served, stall_timeout_s=TTS_STALL_S, turn_id=reply.id,
        )
        first = True
        async with aclosing(stream):
            async for chunk in stream:
                metrics.stamp("tts_first_audio")
                await audio.put(chunk)
                # the player is waiting for it (behind this sentence's marker, for the first chunk): let it
                # send now, even if the TTS has more; once it is busy, yielding per chunk would only cost
                if first or len(audio) == 1:
                    first = False
                    await asyncio.sleep(0)
        metrics.tts_provider = metrics.tts_provider or served.name

    # ---------------------------------------------------------------------------------------- player

    async def _play(self, reply: AgentReply, audio: Channel[AudioChunk | str | None], player: Player) -> None:
        if self.release is not None:
            await self.release.wait()
            await self._flush_held()
        emit, rate, metrics = self.emit, self.output_sample_rate, reply.metrics
        while True:
            item = await audio.get()
            if item is None:
                frames = player.tail()
            elif isinstance(item, str):
                self._start_segment(reply, item + " ")  # a whole sentence: segments concatenate
                continue
            else:
                if item.text is not None:
                    self._start_segment(reply, item.text)
                frames = player.convert(item)
            # the hot loop, one pass per 20 ms frame of every talking session: kept inline and flat
            for frame in frames:
                if (wait := player.delay(frame)) > 0:
                    await player.pacer.sleep(wait)
                if reply.paused:  # resumed from this very frame: nothing repeated, nothing skipped
                    await reply.wait_resumed()
                if metrics.first_audio_out is None:
                    metrics.stamp("first_audio_out")
                    await self.on_speaking(reply.id)
                reply.emitted_bytes += len(frame)
                await emit(AudioOut(frame, rate, reply.id))
            if item is None:
                break
        if reply.segments and reply.segments[-1].end_byte is None:
            reply.segments[-1].end_byte = reply.emitted_bytes

    def _start_segment(self, reply: AgentReply, text: str) -> None:
        if reply.segments and reply.segments[-1].end_byte is None:
            reply.segments[-1].end_byte = reply.emitted_bytes
        reply.segments.append(Segment(text, reply.emitted_bytes))
