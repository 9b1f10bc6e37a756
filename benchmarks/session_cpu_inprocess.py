"""In-process CPU per session and 4 s cycle: N sessions fed the capacity pattern, null sink, uvloop; PACED=1 for real-time pacing.

No sockets, so it isolates the engine's own work (minutes faster than ab_variants.py). Variants from _experiments.py.
Usage: PACED=1 .venv/bin/python benchmarks/session_cpu_inprocess.py 300 2 [variant]
"""
import asyncio, json, sys, time, gc, statistics
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import _instant_fakes  # caches the tone
from ws_capacity import vocable_config, FRAME_BYTES, CYCLE_MS, TONE_FROM_MS, TONE_TO_MS, FRAME_MS
from vocable import Engine
from vocable.engine.events import AudioOut
from vocable.testing.fakes import tone

class Sink:
    def __init__(self): self.n = 0; self.texts = 0
    def can_take(self): return True
    async def take(self, event):
        self.n += 1
        if type(event) is not AudioOut:
            self.texts += 1
            json.dumps(event.to_wire(), separators=(",", ":"), ensure_ascii=False, default=str)

async def main(n, cycles, variant):
    if variant:
        import _experiments; _experiments.apply(variant)
    cfg = vocable_config(); cfg["transports"] = {}
    engine = Engine.from_dict(cfg, autoload=False, freeze_gc=True,
                              plugins=["vocable.plugins.core", "vocable.testing.plugin"])
    await engine.start()
    sessions = [await engine.open_session(transport="bench", pace=PACED) for _ in range(n)]
    sinks = []
    async def drain(s, k):
        while (e := await s.events.get()) is not None:
            await k.take(e)
    drainers = []
    for s in sessions:
        k = Sink(); s.attach_sink(k); sinks.append(k)
        drainers.append(asyncio.create_task(drain(s, k)))
    silence = b"\0" * FRAME_BYTES
    t = tone(TONE_TO_MS - TONE_FROM_MS, 16000)
    speech = [t[i:i+FRAME_BYTES] for i in range(0, len(t), FRAME_BYTES)]
    per_cycle = CYCLE_MS // FRAME_MS
    frames = []
    for i in range(per_cycle):
        ms = i * FRAME_MS
        frames.append(speech[(ms - TONE_FROM_MS)//FRAME_MS] if TONE_FROM_MS <= ms < TONE_TO_MS else silence)
    offsets = [(j * 7) % per_cycle for j in range(n)]
    async def run(cycles):
        loop = asyncio.get_running_loop(); t0 = loop.time()
        for step in range(cycles * per_cycle):
            if PACED:
                await asyncio.sleep(max(0, t0 + step * 0.02 - loop.time()))
            for j, s in enumerate(sessions):
                rest = s.feed_audio(frames[(step + offsets[j]) % per_cycle])
                if rest is not None: await rest
            for _ in range(3): await asyncio.sleep(0)
    await run(1)  # warm-up
    results = []
    for r in range(3):
        c0 = time.process_time(); w0 = time.perf_counter()
        await run(cycles)
        results.append((time.process_time() - c0) / (cycles * n) * 1e3)
    texts = sum(k.texts for k in sinks) / ((3 * cycles + 1) * n)
    print(json.dumps({"variant": variant or "baseline", "ms_cpu_per_session_cycle": [round(x, 3) for x in results],
                      "min": round(min(results), 3), "texts_per_cycle": round(texts, 1),
                      "turns": sum(s.turns for s in sessions)}))
    for s in sessions: await engine.close_session(s)
    await engine.stop()

import os
PACED = bool(os.environ.get("PACED"))
import uvloop
with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
