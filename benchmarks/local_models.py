"""Load time and per-call latency of each offline model, as the engine calls them.

Figures (milliseconds unless said otherwise), medians over ``--runs``:
- ``*_load_s``: start() of each provider (model load plus warm-up), seconds;
- ``whisper_final_ms``: FLUSH -> final transcript of a ~2 s question fed in real time with a 600 ms pause,
  as the engine does; ``whisper_final_unpaced_ms``: all at once, no pause; ``whisper_decode_ms``: one decode;
- ``smollm_ttft_ms`` and ``smollm_tokens_per_s``: first token and decode speed of a short reply;
- ``piper_first_audio_ms`` / ``espeak_first_audio_ms``: request -> first audio chunk of one sentence;
- ``silero_frame_us`` / ``webrtcvad_frame_us``: one VAD frame; ``smart_turn_ms``: one end-of-turn decision.

Prints a table, then a JSON object of all figures as the last line.
Usage: python benchmarks/local_models.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from vocable.providers.base import FLUSH, Flush, Message, Provider, TextDelta
from vocable.providers.errors import ProviderUnavailable
from vocable.providers.local import EspeakTTS, PiperTTS, SileroVAD, SmartTurn, SmolLM, WebRTCVAD, WhisperSTT
from vocable.testing.speech import espeak_pcm, silence

QUESTION = "What is the capital of France?"
SENTENCE = "The weather today is sunny with a light breeze."


async def timed_start(provider: Provider) -> float:
    began = time.perf_counter()
    await provider.start()
    return time.perf_counter() - began


async def median_ms(runs: int, once: Callable[[], Awaitable[float]]) -> float:
    return round(statistics.median([await once() for _ in range(runs)]) * 1000, 1)


async def whisper_figures(runs: int, figures: dict[str, Any]) -> None:
    stt = WhisperSTT()
    figures["whisper_load_s"] = round(await timed_start(stt), 3)
    pcm = espeak_pcm(QUESTION)

    async def final_latency(pace: float, pause_ms: int) -> float:
        """FLUSH -> final, for the question followed by ``pause_ms`` of silence (the end-of-turn hangover)."""
        clip = pcm + silence(pause_ms)
        stamp = [0.0]

        async def audio() -> AsyncIterator[bytes | Flush]:
            for i in range(0, len(clip), 640):
                yield clip[i : i + 640]
                if pace:
                    await asyncio.sleep(0.02 * pace)
            stamp[0] = time.perf_counter()
            yield FLUSH

        async with aclosing(stt.transcribe(audio(), sample_rate=16000)) as stream:
            async for event in stream:
                if event.final:
                    return time.perf_counter() - stamp[0]
        raise RuntimeError("no final transcript")

    async def decode() -> float:
        began = time.perf_counter()
        await asyncio.to_thread(stt.decode, pcm, 16000)
        return time.perf_counter() - began

    # As the engine feeds it: real time, with a 600 ms pause before the end of turn (the pause decode is ready).
    figures["whisper_final_ms"] = await median_ms(runs, lambda: final_latency(1.0, 600))
    # Worst case: the audio arrives all at once and the flush follows the last word (a decode after the flush).
    figures["whisper_final_unpaced_ms"] = await median_ms(runs, lambda: final_latency(0.0, 0))
    figures["whisper_decode_ms"] = await median_ms(runs, decode)
    await stt.aclose()


async def smollm_figures(runs: int, figures: dict[str, Any]) -> None:
    llm = SmolLM()
    figures["smollm_load_s"] = round(await timed_start(llm), 3)
    ttfts, speeds = [], []
    for i in range(runs):
        # A different question each run, so llama.cpp's prompt cache does not flatter the first token.
        messages = [Message("system", "You are a concise, friendly voice assistant."),
                    Message("user", f"Give me tip number {i + 1} for sleeping well.")]
        began = time.perf_counter()
        first, tokens = 0.0, 0
        async with aclosing(llm.stream(messages)) as stream:
            async for chunk in stream:
                if isinstance(chunk, TextDelta):
                    tokens += 1
                    first = first or time.perf_counter()
        ttfts.append(first - began)
        if tokens > 1:
            speeds.append((tokens - 1) / (time.perf_counter() - first))
    figures["smollm_ttft_ms"] = round(statistics.median(ttfts) * 1000, 1)
    figures["smollm_tokens_per_s"] = round(statistics.median(speeds), 1)
    await llm.aclose()


async def tts_figures(runs: int, figures: dict[str, Any], tts: PiperTTS | EspeakTTS, key: str) -> None:
    figures[f"{key}_load_s"] = round(await timed_start(tts), 3)

    async def first_audio() -> float:
        began = time.perf_counter()
        async with aclosing(tts.synthesize(SENTENCE)) as stream:
            async for _ in stream:
                return time.perf_counter() - began
        raise RuntimeError("no audio")

    figures[f"{key}_first_audio_ms"] = await median_ms(runs, first_audio)
    await tts.aclose()


async def vad_figures(figures: dict[str, Any]) -> None:
    for vad, key in ((SileroVAD(), "silero"), (WebRTCVAD(), "webrtcvad")):
        figures[f"{key}_load_s"] = round(await timed_start(vad), 4)
        stream = vad.open()
        frame = espeak_pcm("Hello")[: vad.capabilities.frame_samples * 2]
        began = time.perf_counter()
        for _ in range(1000):
            stream.probability(frame)
        figures[f"{key}_frame_us"] = round((time.perf_counter() - began) / 1000 * 1e6, 1)
        await vad.aclose()


async def smart_turn_figures(runs: int, figures: dict[str, Any]) -> None:
    detector = SmartTurn()
    try:
        figures["smart_turn_load_s"] = round(await timed_start(detector), 3)
    except ProviderUnavailable as exc:
        figures["smart_turn"] = f"skipped: {exc}"
        return
    utterance = espeak_pcm(QUESTION) + silence(200)

    async def decide() -> float:
        began = time.perf_counter()
        await asyncio.to_thread(detector.probability, utterance, 16000)
        return time.perf_counter() - began

    figures["smart_turn_ms"] = await median_ms(runs, decide)
    await detector.aclose()


async def main(runs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"runs": runs}
    await whisper_figures(runs, figures)
    await smollm_figures(runs, figures)
    await tts_figures(runs, figures, PiperTTS(), "piper")
    await tts_figures(runs, figures, EspeakTTS(), "espeak")
    await vad_figures(figures)
    await smart_turn_figures(runs, figures)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    result = asyncio.run(main(parser.parse_args().runs))
    for name, value in result.items():
        print(f"{name:24} {value}")
    print(json.dumps(result))
