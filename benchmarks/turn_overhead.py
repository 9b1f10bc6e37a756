"""Engine overhead per turn with instant scripted providers.

Runs N spoken turns through vocable (audio in -> VAD -> STT -> LLM -> sentence -> TTS -> audio out) and, in
the same run, the same providers chained by hand with nothing in between (the bare baseline). Providers
answer instantly, so every millisecond measured is the engine's own.

Figures:
- engine_overhead_ms: vocable's own time on the path (final transcript -> LLM request, first sentence ->
  TTS request, first TTS audio -> handed to the transport);
- text_to_voice_ms: final transcript -> first reply audio handed to the transport, vocable vs bare chain.

With ``--tracing``, the same turns run again with OpenTelemetry tracing on (``tracing:``, exporting over
OTLP/HTTP to a sink on loopback), and the figures add that run's engine overhead and the time the tracing
hooks take per turn (making the turn's spans, after its ``metrics`` event; goal: overhead p50 <= 0.5 ms).

Prints a table, then a JSON object of all figures as the last line.
Usage: python benchmarks/turn_overhead.py [--turns 200] [--tracing]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from vocable import Engine  # noqa: E402
from vocable.engine.events import MetricsEvent  # noqa: E402
from vocable.providers.base import Message, TextDelta, split_sentences  # noqa: E402
from vocable.testing.fakes import ScriptedLLM, ScriptedTTS, tone  # noqa: E402
from vocable.testing.speech import silence  # noqa: E402

REPLY = "Sure, here is the answer. It has a second sentence too."
CONFIG = {
    "transports": {},
    "pipeline": {
        "vad": {"provider": "energy"},
        "turn": {"provider": "silence", "hangover_ms": 200},
        "stt": {"provider": "scripted", "transcripts": ["what is the weather like"], "interim_every_ms": 100},
        "llm": {"provider": "scripted", "reply": REPLY},
        "tts": {"provider": "scripted", "chunk_ms": 20},
    },
    "metrics": [],
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def vocable_turns(n: int, tracing: dict[str, str] | None = None) -> tuple[list[float], list[float]]:
    config = {**CONFIG, "tracing": tracing} if tracing is not None else CONFIG
    engine = Engine.from_dict(config, autoload=False, plugins=["vocable.plugins.core", "vocable.testing.plugin"])
    await engine.start()
    overhead, t2v = [], []
    clip = silence(60) + tone(400, 16000) + silence(300)
    step = 640
    async with engine.conversation(pace=False) as conv:
        for _ in range(n):
            for i in range(0, len(clip), step):
                await conv.send_audio(clip[i : i + step])
                await asyncio.sleep(0)  # frames arrive as separate socket reads: the loop runs between them
            event = None
            while not isinstance(event, MetricsEvent):
                event = await conv.session.events.get()
            overhead.append(event.figures["engine_overhead_ms"])
            t2v.append(event.figures["text_to_voice_ms"])
    await engine.stop()
    if tracing is not None:  # export what is left while the sink still runs
        from vocable.tracing import Tracing

        for plugin in engine.host.pm.get_plugins():
            if isinstance(plugin, Tracing):
                await asyncio.to_thread(plugin.shutdown)
    return overhead, t2v


async def bare_turns(n: int) -> list[float]:
    """The same providers with nothing between them: the floor for text_to_voice."""
    llm, tts = ScriptedLLM(ScriptedLLM.Settings(reply=REPLY)), ScriptedTTS(ScriptedTTS.Settings(chunk_ms=20))
    out: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
    t2v = []
    for _ in range(n):
        start = time.perf_counter()
        buffer, first = "", None
        async for chunk in llm.stream([Message("user", "what is the weather like")]):
            if isinstance(chunk, TextDelta):
                buffer += chunk.text
                sentences, buffer = split_sentences(buffer)
                if sentences:
                    async for audio in tts.synthesize(sentences[0]):
                        out.put_nowait(audio.pcm)
                        first = time.perf_counter()
                        break
                    break
        t2v.append((first - start) * 1000)
        while not out.empty():
            out.get_nowait()
    return t2v


class _Sink:
    """An OTLP/HTTP endpoint on loopback that takes every export and answers 200, so spans really go out."""

    def __enter__(self) -> str:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def traced_turns(n: int) -> tuple[list[float], list[float]]:
    """Engine overhead per turn with tracing on, and the time the tracing hooks take per turn."""
    from vocable.tracing import spans

    work: list[float] = []
    make = spans.ConversationTrace.turn_metrics

    def timed(self: spans.ConversationTrace, metrics: object) -> None:
        start = time.perf_counter()
        make(self, metrics)  # type: ignore[arg-type]
        work.append((time.perf_counter() - start) * 1000)

    spans.ConversationTrace.turn_metrics = timed  # type: ignore[method-assign]
    with _Sink() as endpoint:
        overhead, _ = asyncio.run(vocable_turns(n, {"endpoint": endpoint}))
    return overhead, work


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--tracing", action="store_true", help="also run the turns with OpenTelemetry tracing on")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    overhead, t2v = asyncio.run(vocable_turns(args.turns))
    bare = asyncio.run(bare_turns(args.turns))
    figures = {
        "turns": args.turns,
        "engine_overhead_p50_ms": round(pct(overhead, 50), 3),
        "engine_overhead_p95_ms": round(pct(overhead, 95), 3),
        "text_to_voice_p50_ms": round(pct(t2v, 50), 3),
        "text_to_voice_p95_ms": round(pct(t2v, 95), 3),
        "bare_text_to_voice_p50_ms": round(pct(bare, 50), 3),
        "bare_text_to_voice_p95_ms": round(pct(bare, 95), 3),
        "text_to_voice_ratio_p50": round(pct(t2v, 50) / max(pct(bare, 50), 1e-6), 2),
        "mean_overhead_ms": round(statistics.mean(overhead), 3),
        "goal_p50_ms": 2.0,
        "goal_p95_ms": 5.0,
    }
    figures["goal_met"] = figures["engine_overhead_p50_ms"] <= 2.0 and figures["engine_overhead_p95_ms"] <= 5.0
    if args.tracing:
        traced, work = traced_turns(args.turns)
        figures.update({
            "traced_engine_overhead_p50_ms": round(pct(traced, 50), 3),
            "traced_engine_overhead_p95_ms": round(pct(traced, 95), 3),
            "tracing_hooks_p50_ms": round(pct(work, 50), 3),
            "tracing_hooks_p95_ms": round(pct(work, 95), 3),
            "tracing_goal_p50_ms": 0.5,
        })
        figures["tracing_goal_met"] = figures["traced_engine_overhead_p50_ms"] <= 0.5
    print(f"{'figure':<28}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'vocable engine overhead':<28}{figures['engine_overhead_p50_ms']:>10}{figures['engine_overhead_p95_ms']:>10}")
    print(f"{'vocable text-to-voice':<28}{figures['text_to_voice_p50_ms']:>10}{figures['text_to_voice_p95_ms']:>10}")
    print(f"{'bare chain text-to-voice':<28}{figures['bare_text_to_voice_p50_ms']:>10}{figures['bare_text_to_voice_p95_ms']:>10}")
    if args.tracing:
        print(f"{'engine overhead, traced':<28}{figures['traced_engine_overhead_p50_ms']:>10}"
              f"{figures['traced_engine_overhead_p95_ms']:>10}")
        print(f"{'tracing hooks per turn':<28}{figures['tracing_hooks_p50_ms']:>10}{figures['tracing_hooks_p95_ms']:>10}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
