"""End of user speech to first reply audio on the offline default, over the pause set, at real time.

The pause set (``benchmarks/data``, made by ``make_pause_set.py``): 40 utterances spoken by Piper and
espeak-ng, half complete questions, half with a 300-900 ms pause mid-sentence. Each is fed at real time, as a
microphone would (20 ms frames, each on its own wall-clock slot), to two engines side by side in one process,
utterance by utterance, alternating which goes first:

- ``dynamic``: the offline default (``default.yaml``): the ``dynamic`` end of turn (Smart Turn and the words of
  the pause after 200 ms, at most 1200 ms), whisper's pause decode, a speculative reply from 120 ms;
- ``fixed``: the same with the old end of turn, a fixed 500 ms of silence (``silence``, ``hangover_ms: 500``).

Figures per engine, each utterance in a session of its own:

- ``voice_to_voice`` p50/p95: end of the utterance's speech (the last frame of the clip sent) -> first reply
  audio handed to the transport, over the utterances whose turn was not cut;
- ``cut_off_rate``: a cut-off is a turn that ends inside the pause (a final transcript before the speaker has
  finished); over the paused utterances and over all 40;
- ``end_of_turn`` p50/p95: end of speech -> the turn's final transcript (the end-of-turn decision releases it);
- the engine's own per-turn figures (``stt``, ``llm_ttft``, ``tts_ttfb``, ``text_to_voice``) p50, to see where
  the time goes;
- the machine's load (1-minute load average before and after, the machine's CPU busy % over the run).

Prints a table, then a JSON object of every figure as the last line.
Usage: python benchmarks/local_voice_to_voice.py [--limit N] [--snr DB] [--no-nice]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import yaml

from vocable import Engine
from vocable.engine.events import AudioOut, MetricsEvent, Transcript
from vocable.testing.speech import read_wav, silence

DATA = Path(__file__).parent / "data"
LEAD_MS, TAIL_MS = 300, 1600  # silence before each utterance, and after it (more than max_silence_ms)
FRAME_MS = 20
HANGOVER_MS = 500


def config(turn: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load(resources.files("vocable.config").joinpath("default.yaml").read_text())
    data.update(storage={"url": None}, metrics=[], transports={})
    data["server"]["idle_timeout_s"] = 600
    data["pipeline"]["turn"] = turn
    data["pipeline"]["llm"] = {"provider": "smollm", "max_tokens": 40}
    return data


def configs() -> dict[str, dict[str, Any]]:
    default = yaml.safe_load(resources.files("vocable.config").joinpath("default.yaml").read_text())
    return {
        "dynamic": config(default["pipeline"]["turn"]),
        "fixed": config({"provider": "silence", "hangover_ms": HANGOVER_MS}),
        "words": config({**default["pipeline"]["turn"], "model": False}),  # --with words: the model's part
    }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 1)


def noise_for(pcm: bytes, snr_db: float, seed: int) -> np.ndarray:
    """Pink-ish background noise at ``snr_db`` below the speech's RMS (generated, never downloaded)."""
    speech = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rng = np.random.default_rng(seed)
    white = rng.normal(0.0, 1.0, speech.size)
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))  # 1/f power: like a room's hum and hiss
    noise = np.fft.irfft(spectrum, n=speech.size)
    loud = speech[np.abs(speech) > 200]
    speech_rms = float(np.sqrt(np.mean(loud**2))) if loud.size else 1000.0
    return noise * (speech_rms / 10 ** (snr_db / 20) / float(np.sqrt(np.mean(noise**2))))


class CPU:
    """The machine's CPU busy share between two readings of /proc/stat."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def busy_percent(self) -> float:
        busy, total = self._read()
        return round(100.0 * (busy - self.start[0]) / max(1, total - self.start[1]), 1)


async def one_utterance(engine: Engine, entry: dict[str, Any], pcm: bytes, noise: np.ndarray | None) -> dict[str, Any]:
    """Feed one utterance at real time in a fresh session; what happened, timed on the loop's clock."""
    loop = asyncio.get_running_loop()
    audio = silence(LEAD_MS) + pcm + silence(TAIL_MS)
    if noise is not None:
        mixed = np.frombuffer(audio, dtype="<i2").astype(np.float64) + noise[: len(audio) // 2]
        audio = np.clip(mixed, -32768, 32767).astype("<i2").tobytes()
    events: list[tuple[float, Any]] = []
    async with engine.conversation() as conv:

        async def read() -> None:
            while (event := await conv.session.events.get()) is not None:
                events.append((loop.time(), event))

        reader = asyncio.create_task(read())
        step = 16000 * FRAME_MS // 1000 * 2
        began = loop.time()
        speech_end = began + (LEAD_MS + len(pcm) / 32) / 1000
        for n, i in enumerate(range(0, len(audio), step)):
            await conv.send_audio(audio[i : i + step])
            delay = began + (n + 1) * FRAME_MS / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        # the reply's first audio, then stop it (its length is not what is measured) and let the session settle
        deadline = loop.time() + 60
        while loop.time() < deadline and not any(isinstance(e, AudioOut) and t > speech_end for t, e in events):
            await asyncio.sleep(0.02)
        await conv.interrupt()
        quiet_since = loop.time()
        while loop.time() - quiet_since < 0.5 and loop.time() < deadline:
            count = len(events)
            await asyncio.sleep(0.1)
            if len(events) != count or conv.session.state != "listening":
                quiet_since = loop.time()
        reader.cancel()
    finals = [(t, e) for t, e in events if isinstance(e, Transcript) and e.final]
    early = [t for t, _ in finals if t < speech_end - 0.02]
    early_text = [e.text for t, e in finals if t < speech_end - 0.02]
    last_final = finals[-1] if finals else None
    first_audio = next((t for t, e in events if isinstance(e, AudioOut) and t > speech_end
                        and (last_final is None or e.turn_id == last_final[1].turn_id)), None)
    metrics = next((e.figures for _, e in events
                    if isinstance(e, MetricsEvent) and last_final is not None and e.turn_id == last_final[1].turn_id), {})
    return {
        "file": entry["file"], "kind": entry["kind"], "voice": entry["voice"], "pause_ms": entry.get("pause_ms"),
        "cut": bool(early), "finals": len(finals), "heard": last_final[1].text if last_final else None,
        "cut_at": early_text[0] if early_text else None,
        "voice_to_voice_ms": round((first_audio - speech_end) * 1000, 1) if first_audio and not early else None,
        "end_of_turn_ms": round((last_final[0] - speech_end) * 1000, 1) if last_final and not early else None,
        **{k: metrics.get(k) for k in ("stt_ms", "eot_ms", "llm_ttft_ms", "tts_ttfb_ms", "text_to_voice_ms")},
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str, kind: str | None = None) -> list[float]:
        return [r[key] for r in rows if r.get(key) is not None and (kind is None or r["kind"] == kind)]

    paused = [r for r in rows if r["kind"] == "paused"]
    out: dict[str, Any] = {
        "utterances": len(rows),
        "cut_offs": sum(r["cut"] for r in rows),
        "cut_off_rate_paused": round(sum(r["cut"] for r in paused) / len(paused), 3) if paused else None,
        "cut_off_rate": round(sum(r["cut"] for r in rows) / len(rows), 3) if rows else None,
        "answered": len(col("voice_to_voice_ms")),
    }
    for key in ("voice_to_voice_ms", "end_of_turn_ms"):
        name = key[:-3]
        out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = pct(col(key), 50), pct(col(key), 95)
        out[f"{name}_complete_p50_ms"] = pct(col(key, "complete"), 50)
    for key in ("stt_ms", "eot_ms", "llm_ttft_ms", "tts_ttfb_ms", "text_to_voice_ms"):
        out[f"engine_{key[:-3]}_p50_ms"] = pct(col(key), 50)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    manifest = json.loads((DATA / "manifest.json").read_text())
    entries = manifest["utterances"][: args.limit or None]
    clips = [read_wav(str(DATA / e["file"]))[0] for e in entries]
    engines = {name: Engine.from_dict(data) for name, data in configs().items()
               if name in ("dynamic", "fixed") or name in args.also}
    for engine in engines.values():
        await engine.start()
    modes = {name: getattr(engine.runtime.turn[0].provider, "mode", None) for name, engine in engines.items()}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    order = list(engines)
    load_before, cpu, began = os.getloadavg()[0], CPU(), time.time()
    try:
        for i, (entry, pcm) in enumerate(zip(entries, clips)):
            noise = noise_for(silence(LEAD_MS) + pcm + silence(TAIL_MS), args.snr, i) if args.snr is not None else None
            for name in order if i % 2 == 0 else reversed(order):
                row = await one_utterance(engines[name], entry, pcm, noise)
                rows[name].append(row)
                print(f"{name:<8} {row['file']:<16} cut={row['cut']!s:<5} v2v={row['voice_to_voice_ms']!s:>7} "
                      f"eot={row['end_of_turn_ms']!s:>7} heard={row['heard']!r}"
                      + (f" cut after {row['cut_at']!r}" if row["cut"] else ""), file=sys.stderr, flush=True)
    finally:
        for engine in engines.values():
            await engine.stop()
    results: dict[str, Any] = {name: summarise(r) for name, r in rows.items()}
    complete = [e["file"] for e in entries if e["kind"] == "complete"]
    by_file = {name: {r["file"]: r for r in r_} for name, r_ in rows.items()}
    for name in rows:  # paired against the fixed hangover, utterance by utterance: what the noise cannot fake
        if name != "fixed":
            diffs = [by_file[name][f]["voice_to_voice_ms"] - by_file["fixed"][f]["voice_to_voice_ms"] for f in complete
                     if by_file[name][f]["voice_to_voice_ms"] is not None
                     and by_file["fixed"][f]["voice_to_voice_ms"] is not None]
            results[name]["complete_paired_minus_fixed_p50_ms"] = pct(diffs, 50)
    dynamic, fixed = results["dynamic"], results["fixed"]
    results["ratio_voice_to_voice_p50"] = (round(dynamic["voice_to_voice_p50_ms"] / fixed["voice_to_voice_p50_ms"], 2)
                                           if dynamic["voice_to_voice_p50_ms"] and fixed["voice_to_voice_p50_ms"] else None)
    results["turn_detector_mode"] = modes["dynamic"]
    results["snr_db"] = args.snr
    results["machine"] = {
        "cpus": os.cpu_count(), "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2),
        "cpu_busy_percent": cpu.busy_percent(), "minutes": round((time.time() - began) / 60, 1), "nice": os.nice(0),
    }
    results["goals"] = {"voice_to_voice_p50_ms": 600, "voice_to_voice_p95_ms": 900, "cut_off_rate": 0.10}
    results["per_utterance"] = rows
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="only the first N utterances of the set")
    parser.add_argument("--snr", type=float, default=None, help="mix generated background noise at this SNR (dB)")
    parser.add_argument("--no-nice", action="store_true", help="do not raise this process's priority (nice -10)")
    parser.add_argument("--also", nargs="*", default=[], choices=["words"],
                        help="more engines side by side: words = dynamic without Smart Turn (the words alone)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not args.no_nice:
        try:
            os.nice(-10)  # the machine is shared: other work should not decide the figures (as the capacity runs)
        except PermissionError:
            pass
    results = asyncio.run(run(args))
    names = [n for n in ("dynamic", "fixed", *args.also) if n in results]
    print(f"{'figure':<34}" + "".join(f"{n:>14}" for n in names))
    for key in ("voice_to_voice_p50_ms", "voice_to_voice_p95_ms", "voice_to_voice_complete_p50_ms",
                "cut_off_rate", "cut_off_rate_paused", "cut_offs", "answered", "end_of_turn_p50_ms",
                "end_of_turn_p95_ms", "engine_stt_p50_ms", "engine_eot_p50_ms", "engine_llm_ttft_p50_ms",
                "engine_tts_ttfb_p50_ms", "engine_text_to_voice_p50_ms", "complete_paired_minus_fixed_p50_ms"):
        print(f"{key:<34}" + "".join(f"{results[n].get(key)!s:>14}" for n in names))
    print(f"machine: {results['machine']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
