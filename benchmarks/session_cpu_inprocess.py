"""vocable's own CPU per session and 4 s turn cycle, in one process with no sockets.

N sessions are fed the capacity benchmark's pattern (silence, a 600 ms tone every 4 s, answered by ~2 s of
reply audio) on uvloop, as ``vocable serve`` runs, into a sink that encodes every JSON event and drops it.
Without the transport's cost (uvicorn's receive and send paths, which the echo pays too) this shows the
engine's own work in seconds, where ``ab_variants.py`` takes minutes; variants from ``_experiments.py``
apply. ``--paced`` feeds audio at real time and paces replies, as in the capacity benchmark; without it,
frames go in as fast as the engine takes them and replies are not paced.

Prints one JSON object: the ms of CPU per session per cycle for each round, and the least of them.
Usage: python benchmarks/session_cpu_inprocess.py [--n 300] [--cycles 2] [--rounds 3] [--paced] [--variant tts_one_chunk]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _instant_fakes  # noqa: F401  (caches the fake TTS's tone, as the capacity servers do)
import uvloop
from ws_capacity import CYCLE_MS, FRAME_BYTES, FRAME_MS, TONE_FROM_MS, TONE_TO_MS, vocable_config

from vocable import Engine
from vocable.engine.events import AudioOut, Event
from vocable.engine.session import Session
from vocable.testing.fakes import tone


class EncodingSink:
    """Takes every event at once; JSON events are encoded as the WebSocket transport does, then dropped."""

    def __init__(self) -> None:
        self.texts = 0

    def can_take(self) -> bool:
        return True

    async def take(self, event: Event) -> None:
        if type(event) is not AudioOut:
            self.texts += 1
            json.dumps(event.to_wire(), separators=(",", ":"), ensure_ascii=False, default=str)


def cycle_frames() -> list[bytes]:
    """One 4 s cycle of 20 ms frames: silence with the tone from TONE_FROM_MS to TONE_TO_MS."""
    silence = b"\0" * FRAME_BYTES
    burst = tone(TONE_TO_MS - TONE_FROM_MS, 16000)
    speech = [burst[i : i + FRAME_BYTES] for i in range(0, len(burst), FRAME_BYTES)]
    frames = []
    for i in range(CYCLE_MS // FRAME_MS):
        ms = i * FRAME_MS
        frames.append(speech[(ms - TONE_FROM_MS) // FRAME_MS] if TONE_FROM_MS <= ms < TONE_TO_MS else silence)
    return frames


async def feed(sessions: list[Session], frames: list[bytes], cycles: int, paced: bool) -> None:
    """Every session gets one frame per step (phases staggered); at real time when ``paced``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    offsets = [(j * 7) % len(frames) for j in range(len(sessions))]
    for step in range(cycles * len(frames)):
        if paced:
            await asyncio.sleep(max(0.0, started + step * FRAME_MS / 1000 - loop.time()))
        for session, offset in zip(sessions, offsets):
            if (rest := session.feed_audio(frames[(step + offset) % len(frames)])) is not None:
                await rest
        for _ in range(3):  # let the STT and reply tasks run, as the loop would between socket reads
            await asyncio.sleep(0)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.variant:
        import _experiments

        _experiments.apply(args.variant)
    config = vocable_config()
    config["transports"] = {}
    engine = Engine.from_dict(config, autoload=False, freeze_gc=True,
                              plugins=["vocable.plugins.core", "vocable.testing.plugin"])
    await engine.start()
    sessions = [await engine.open_session(transport="bench", pace=args.paced) for _ in range(args.n)]
    sinks = [EncodingSink() for _ in sessions]
    drainers = []
    for session, sink in zip(sessions, sinks):
        session.attach_sink(sink)

        async def drain(session: Session = session, sink: EncodingSink = sink) -> None:
            while (event := await session.events.get()) is not None:  # what was queued before the sink
                await sink.take(event)

        drainers.append(asyncio.create_task(drain()))
    frames = cycle_frames()
    try:
        await feed(sessions, frames, 1, args.paced)  # warm-up
        per_cycle_ms = []
        for _ in range(args.rounds):
            cpu = time.process_time()
            await feed(sessions, frames, args.cycles, args.paced)
            per_cycle_ms.append((time.process_time() - cpu) / (args.cycles * args.n) * 1e3)
        cycles_fed = 1 + args.rounds * args.cycles
        return {"variant": args.variant or "baseline", "sessions": args.n, "paced": args.paced,
                "ms_cpu_per_session_cycle": [round(x, 3) for x in per_cycle_ms],
                "least_ms": round(min(per_cycle_ms), 3),
                "json_events_per_cycle": round(sum(s.texts for s in sinks) / (cycles_fed * args.n), 1),
                "turns": sum(s.turns for s in sessions)}
    finally:
        for session in sessions:
            await engine.close_session(session)
        for task in drainers:
            task.cancel()
        await asyncio.gather(*drainers, return_exceptions=True)
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--cycles", type=int, default=2, help="4 s cycles per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced", action="store_true", help="audio at real time, paced replies")
    parser.add_argument("--variant", default="", help="patches from _experiments.py, comma-separated")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(measure(args))))


if __name__ == "__main__":
    main()
