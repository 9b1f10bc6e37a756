"""Engine-added latency per turn, vocable against Pipecat, on the same instant fake providers.

The same scripted turn runs in both engines, one process, one after the other:
speech ends -> the STT gives its final transcript -> the LLM streams the reply word by word -> sentence
aggregation -> the TTS makes the first sentence's audio -> the first audio frame reaches the transport.
The providers take no time at all (``--scenario instant``) or fixed times (``--scenario timed``: LLM first
token 20 ms, 5 ms a token, TTS first audio 20 ms), so every other microsecond is the engine's own.

The span measured is the same in both: from the moment the STT hands over its final transcript (stamped
inside the fake STT, just before it yields/pushes it) to the moment the first reply audio frame is picked
up where the transport would take it (vocable: dequeued from the session's event channel, as the WebSocket
writer does; Pipecat: processed by a sink in the output transport's place). With providers taking
``provider_ms``, engine-added latency = span - the same span through the bare chain (the same fake
providers called by hand, nothing between them: this also removes the timer overshoot of their sleeps).

Pipecat side (``_pipecat_fakes``): STTService, LLMService and TTSService subclasses with the same fakes,
LLMContextAggregatorPair with its user turn controller, TTSService's sentence aggregation and audio
contexts, PipelineWorker. Pipecat runs lean (no RTVI, no turn tracking, no idle watchdog, logs at WARNING,
as vocable's) so the comparison favours it; ``pipecat_defaults`` repeats it with PipelineWorker defaults.

Prints a table, then a JSON object of all figures as the last line.
Usage: python benchmarks/pipecat_turn_overhead.py [--turns 200] [--scenario instant|timed]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, pct, table

from vocable import Engine
from vocable.engine.events import AudioOut, MetricsEvent
from vocable.plugins.hookspecs import hookimpl
from vocable.testing.fakes import ScriptedLLM, ScriptedSTT, ScriptedTTS, tone
from vocable.testing.speech import silence

now = time.perf_counter
REPLY = "Sure, here is the answer. It has a second sentence too, and a third part after it."
TRANSCRIPT = "what is the weather like"
SCENARIOS = {
    # first_token_ms, token_delay_ms, first_audio_ms
    "instant": (0.0, 0.0, 0.0),
    "timed": (20.0, 5.0, 20.0),
}


def provider_ms(scenario: str) -> float:
    """Time the providers themselves spend before the first audio exists (the floor of the span)."""
    first_token, per_token, first_audio = SCENARIOS[scenario]
    words_in_first_sentence = len(REPLY.split(".")[0].split(" "))
    return first_token + per_token * (words_in_first_sentence - 1) + first_audio


# ------------------------------------------------------------------------------------------ vocable


class StampingSTT(ScriptedSTT):
    """vocable's scripted STT, stamping the clock just before it yields each final transcript."""

    name = "bench-scripted"
    stamps: ClassVar[list[float]] = []

    async def transcribe(self, audio, *, sample_rate):  # type: ignore[override]
        async for event in super().transcribe(audio, sample_rate=sample_rate):
            if event.final and event.text:
                StampingSTT.stamps.append(now())
            yield event


class _BenchPlugin:
    @hookimpl
    def register_providers(self, register: Callable[[type], None]) -> None:
        register(StampingSTT)


async def vocable_turns(n: int, scenario: str) -> dict[str, list[float]]:
    first_token, per_token, first_audio = SCENARIOS[scenario]
    config = {
        "transports": {},
        "pipeline": {
            "vad": {"provider": "energy"},
            "turn": {"provider": "silence", "hangover_ms": 200},
            "stt": {"provider": "bench-scripted", "transcripts": [TRANSCRIPT], "interim_every_ms": 100},
            "llm": {"provider": "scripted", "reply": REPLY, "first_token_ms": first_token,
                    "token_delay_ms": per_token},
            "tts": {"provider": "scripted", "chunk_ms": 20, "first_audio_ms": first_audio},
        },
        "metrics": [],
        "server": {"idle_timeout_s": None},
    }
    engine = Engine.from_dict(config, autoload=False,
                              plugins=["vocable.plugins.core", "vocable.testing.plugin", _BenchPlugin()])
    await engine.start()
    StampingSTT.stamps.clear()
    spans, internal = [], []
    clip = silence(60) + tone(400, 16000) + silence(300)
    step = 640
    async with engine.conversation(pace=False) as conv:
        events = conv.session.events
        firsts: list[float] = []
        done: asyncio.Queue[MetricsEvent] = asyncio.Queue()

        async def read() -> None:
            """The transport's writer: drains the session's events as they come."""
            first_seen = False
            while (event := await events.get()) is not None:
                if not first_seen and isinstance(event, AudioOut):
                    firsts.append(now())
                    first_seen = True
                elif isinstance(event, MetricsEvent):
                    first_seen = False
                    done.put_nowait(event)

        reader = asyncio.create_task(read())
        for _ in range(n + 10):
            for i in range(0, len(clip), step):
                await conv.send_audio(clip[i : i + step])
                await asyncio.sleep(0)  # frames arrive as separate socket reads: the loop runs between them
            event = await asyncio.wait_for(done.get(), 10)
            spans.append((firsts[-1] - StampingSTT.stamps[-1]) * 1000)
            internal.append(event.figures["engine_overhead_ms"])
        reader.cancel()
    await engine.stop()
    return {"span": spans[10:], "internal_overhead": internal[10:]}


async def bare_turns(n: int, scenario: str) -> list[float]:
    """The same providers chained by hand, nothing between them: the floor of the span (timer overshoot
    of the timed scenario's sleeps included), subtracted from both engines' spans."""
    from vocable.providers.base import Message, TextDelta, split_sentences

    first_token, per_token, first_audio = SCENARIOS[scenario]
    llm = ScriptedLLM(ScriptedLLM.Settings(reply=REPLY, first_token_ms=first_token, token_delay_ms=per_token))
    tts = ScriptedTTS(ScriptedTTS.Settings(chunk_ms=20, first_audio_ms=first_audio))
    spans = []
    for _ in range(n + 10):
        start = now()
        buffer, first = "", 0.0
        async for chunk in llm.stream([Message("user", TRANSCRIPT)]):
            if isinstance(chunk, TextDelta):
                buffer += chunk.text
                sentences, buffer = split_sentences(buffer)
                if sentences:
                    async for audio in tts.synthesize(sentences[0]):
                        first = now()
                        break
                    break
        spans.append((first - start) * 1000)
    return spans[10:]


# ------------------------------------------------------------------------------------------ Pipecat


async def pipecat_turns(n: int, scenario: str, *, lean: bool = True) -> dict[str, list[float]]:
    from _pipecat_fakes import (
        EndOfSpeechAndFinalTranscript,
        FirstAudioSink,
        ScriptedLLMService,
        ScriptedSTTService,
        ScriptedTTSService,
    )
    from pipecat.frames.frames import (
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.turns.user_start import (
        TranscriptionUserTurnStartStrategy,
        VADUserTurnStartStrategy,
    )
    from pipecat.turns.user_turn_strategies import UserTurnStrategies
    from pipecat.workers.runner import WorkerRunner

    first_token, per_token, first_audio = SCENARIOS[scenario]

    class TimedLLM(ScriptedLLMService):
        async def _push_llm_text(self, text: str) -> None:
            delay = first_token if not text.startswith(" ") else per_token
            if delay:
                await asyncio.sleep(delay / 1000)
            await super()._push_llm_text(text)

    class TimedTTS(ScriptedTTSService):
        async def run_tts(self, text: str, context_id: str) -> AsyncIterator:  # type: ignore[override]
            if first_audio:
                await asyncio.sleep(first_audio / 1000)
            async for frame in super().run_tts(text, context_id):
                yield frame

    class Source(FrameProcessor):
        """Where the input transport would be: the benchmark pushes the user's VAD events from here."""

        async def process_frame(self, frame, direction):  # type: ignore[no-untyped-def]
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    source = Source()
    stt = ScriptedSTTService(transcript=TRANSCRIPT)
    context = LLMContext([{"role": "system", "content": "You are a concise, friendly voice assistant."}])
    strategies = UserTurnStrategies(
        start=[VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()],
        stop=[EndOfSpeechAndFinalTranscript()],
    )
    pair = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(user_turn_strategies=strategies))
    llm = TimedLLM(reply=REPLY)
    tts = TimedTTS(chunk_ms=20)
    sink = FirstAudioSink()
    pipeline = Pipeline([source, stt, pair.user(), llm, tts, sink, pair.assistant()])
    params = PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=16000)
    extra = {"enable_rtvi": False, "enable_turn_tracking": False, "idle_timeout_secs": None} if lean else {}
    worker = PipelineWorker(pipeline, params=params, **extra)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker, _frame):  # type: ignore[no-untyped-def]
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    await asyncio.wait_for(started.wait(), 10)

    spans = []
    for _ in range(n + 10):
        sink.arm()
        count = len(sink.first_audio)
        await source.push_frame(VADUserStartedSpeakingFrame(start_secs=0.06))
        await asyncio.sleep(0.005)  # the user speaks (interims would flow here)
        await source.push_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        async with asyncio.timeout(10):
            while len(sink.first_audio) == count:
                await asyncio.sleep(0.0005)
        spans.append((sink.first_audio[-1] - stt.final_stamps[-1]) * 1000)
        await asyncio.sleep(0.03)  # let the rest of the reply drain before the next turn
    await worker.cancel()
    await asyncio.wait_for(running, 10)
    return {"span": spans[10:]}


# ------------------------------------------------------------------------------------------ main


def summarize(name: str, values: list[float], floor: list[float]) -> dict[str, float]:
    """Span percentiles, and added latency: span minus the bare chain's span at the same percentile."""
    return {
        f"{name}_span_p50_ms": round(pct(values, 50), 3),
        f"{name}_span_p95_ms": round(pct(values, 95), 3),
        f"{name}_added_p50_ms": round(max(0.0, pct(values, 50) - pct(floor, 50)), 3),
        f"{name}_added_p95_ms": round(max(0.0, pct(values, 95) - pct(floor, 95)), 3),
    }


def run(turns: int, scenario: str) -> dict[str, object]:
    import structlog
    from _pipecat_fakes import quiet_pipecat_logs

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    quiet_pipecat_logs()
    gc.collect()
    floor = asyncio.run(bare_turns(turns, scenario))
    gc.collect()
    voc = asyncio.run(vocable_turns(turns, scenario))
    gc.collect()
    pc = asyncio.run(pipecat_turns(turns, scenario, lean=True))
    gc.collect()
    pcd = asyncio.run(pipecat_turns(turns, scenario, lean=False))
    figures: dict[str, object] = {"turns": turns, "scenario": scenario, "provider_ms": provider_ms(scenario),
                                  "bare_span_p50_ms": round(pct(floor, 50), 3),
                                  "bare_span_p95_ms": round(pct(floor, 95), 3)}
    figures.update(summarize("vocable", voc["span"], floor))
    figures.update(summarize("pipecat", pc["span"], floor))
    figures.update(summarize("pipecat_defaults", pcd["span"], floor))
    figures["vocable_internal_overhead_p50_ms"] = round(pct(voc["internal_overhead"], 50), 3)
    figures["vocable_internal_overhead_p95_ms"] = round(pct(voc["internal_overhead"], 95), 3)
    for q in ("p50", "p95"):
        figures[f"ratio_{q}"] = round(
            figures[f"vocable_added_{q}_ms"] / max(figures[f"pipecat_added_{q}_ms"], 1e-6), 3)  # type: ignore[operator]
    figures["goal"] = "vocable added latency <= 0.5 x Pipecat's (p50 and p95)"
    figures["goal_met"] = figures["ratio_p50"] <= 0.5 and figures["ratio_p95"] <= 0.5  # type: ignore[operator]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="instant")
    args = parser.parse_args()
    f = run(max(100, args.turns), args.scenario)
    rows = [
        ("vocable", f["vocable_added_p50_ms"], f["vocable_added_p95_ms"]),
        ("pipecat (lean worker)", f["pipecat_added_p50_ms"], f["pipecat_added_p95_ms"]),
        ("pipecat (worker defaults)", f["pipecat_defaults_added_p50_ms"], f["pipecat_defaults_added_p95_ms"]),
        ("ratio vocable/pipecat", f["ratio_p50"], f["ratio_p95"]),
    ]
    print(f"engine-added latency, final transcript -> first audio at the transport "
          f"({f['turns']} turns, scenario {f['scenario']}, providers {f['provider_ms']} ms, "
          f"bare chain p50 {f['bare_span_p50_ms']} ms, subtracted)")
    print(table(("engine", "p50 ms", "p95 ms"), rows))
    emit(f)


if __name__ == "__main__":
    main()
