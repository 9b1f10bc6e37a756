"""End of user speech to first reply audio on the offline stack (whisper, smollm, piper, silero).

Spoken questions (espeak-ng) are fed at real time, as a microphone would, through ``engine.conversation``.
Two configurations run side by side in one process:

- naive: the final transcript is decoded after the end-of-turn decision, the reply starts after it;
- vocable: whisper decodes during the pause and the engine starts the reply speculatively (held until the
  end of turn, dropped if the user goes on).

Figures per configuration (ms, p50 and p95 over the turns): voice_to_voice (end of speech -> first reply
audio handed to the transport) and after_eot (end-of-turn decision -> first reply audio), plus the
providers' own stt/llm/tts figures. Prints a table, then a JSON object of all figures as the last line.
Usage: python benchmarks/local_voice_to_voice.py [--turns 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from importlib import resources
from typing import Any

import structlog
import yaml

from vocable import Engine
from vocable.engine.events import MetricsEvent
from vocable.testing.speech import espeak_pcm, silence

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Tell me a fun fact about cats.",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "What time zone is Tokyo in?",
    "Can you recommend a good book?",
    "How do bees make honey?",
    "What is the tallest mountain?",
    "Give me a tip for better sleep.",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
]
HANGOVER_MS = 500


def base_config() -> dict[str, Any]:
    text = resources.files("vocable.config").joinpath("default.yaml").read_text()
    data = yaml.safe_load(text)
    data["storage"] = {"url": None}
    data["metrics"] = []
    data["transports"] = {}
    data["server"]["idle_timeout_s"] = 600
    data["pipeline"]["turn"] = {"provider": "silence", "hangover_ms": HANGOVER_MS}
    data["pipeline"]["llm"] = {"provider": "smollm", "max_tokens": 40}
    return data


def configs() -> dict[str, dict[str, Any]]:
    naive = base_config()
    naive["pipeline"]["stt"] = {"provider": "whisper", "reuse_pause_decode": False}
    naive["pipeline"].setdefault("turn_taking", {})["speculative_ms"] = 0
    fast = base_config()
    fast["pipeline"]["stt"] = {"provider": "whisper", "pause_decode_ms": 100}
    fast["pipeline"].setdefault("turn_taking", {})["speculative_ms"] = 120
    return {"naive": naive, "vocable": fast}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 1)


async def run(config: dict[str, Any], clips: list[bytes]) -> list[dict[str, Any]]:
    engine = Engine.from_dict(config)
    await engine.start()
    figures: list[dict[str, Any]] = []
    try:
        async with engine.conversation(pace=True) as conv:
            for clip in clips:
                for i in range(0, len(clip), 640):
                    await conv.send_audio(clip[i : i + 640])
                    await asyncio.sleep(0.02)
                event = None
                while not isinstance(event, MetricsEvent):
                    event = await asyncio.wait_for(conv.session.events.get(), 60)
                    if event is not None and getattr(event, "type", "") == "error":
                        raise RuntimeError(f"turn failed: {event}")
                figures.append(event.figures)
                # let the reply finish playing before the next question (no barge-in)
                while conv.session.state != "listening":
                    await asyncio.sleep(0.05)
                    while len(conv.session.events):
                        await conv.session.events.get()
    finally:
        await engine.stop()
    return figures


def summarise(name: str, turns: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [t[key] for t in turns if t.get(key) is not None]

    after_eot = [t["voice_to_voice_ms"] - t["eot_ms"] for t in turns
                 if t.get("voice_to_voice_ms") is not None and t.get("eot_ms") is not None]
    out: dict[str, Any] = {"turns": len(turns)}
    for key, values in (("voice_to_voice", col("voice_to_voice_ms")), ("after_eot", after_eot),
                        ("stt", col("stt_ms")), ("llm_ttft", col("llm_ttft_ms")), ("tts_ttfb", col("tts_ttfb_ms")),
                        ("engine_overhead", col("engine_overhead_ms"))):
        out[f"{key}_p50_ms"] = pct(values, 50)
        out[f"{key}_p95_ms"] = pct(values, 95)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.turns)]
    clips = [silence(300) + espeak_pcm(q) + silence(HANGOVER_MS + 700) for q in questions]
    results: dict[str, Any] = {}
    for name, config in configs().items():
        results[name] = summarise(name, asyncio.run(run(config, clips)))
    fast, naive = results["vocable"], results["naive"]
    results["after_eot_ratio_p50"] = (
        round(fast["after_eot_p50_ms"] / naive["after_eot_p50_ms"], 2)
        if fast["after_eot_p50_ms"] and naive["after_eot_p50_ms"] else None
    )
    results["goal_after_eot_p50_ms"] = 700
    results["stretch_after_eot_p50_ms"] = 450
    results["hangover_ms"] = HANGOVER_MS
    print(f"{'figure (ms)':<22}{'naive p50':>11}{'naive p95':>11}{'vocable p50':>13}{'vocable p95':>13}")
    for key in ("voice_to_voice", "after_eot", "stt", "llm_ttft", "tts_ttfb", "engine_overhead"):
        print(f"{key:<22}{str(naive[key + '_p50_ms']):>11}{str(naive[key + '_p95_ms']):>11}"
              f"{str(fast[key + '_p50_ms']):>13}{str(fast[key + '_p95_ms']):>13}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
