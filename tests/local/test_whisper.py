"""The ``whisper`` STT on the real Whisper tiny.en model, with speech made by espeak-ng."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import numpy as np
import pytest

from local.localkit import frames, words
from vocable.providers.base import FLUSH, Flush, TranscriptEvent
from vocable.providers.errors import CapacityExceeded
from vocable.providers.local import WhisperSTT
from vocable.testing.contract import STTContract
from vocable.testing.speech import espeak_pcm, silence

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
LONG = "The weather today is sunny with a light breeze, and tomorrow it will rain in the afternoon."


async def collect(whisper: WhisperSTT, *clips, pace: float = 0.0) -> list[TranscriptEvent]:
    async with aclosing(whisper.transcribe(frames(*clips, pace=pace), sample_rate=16000)) as stream:
        return [event async for event in stream]


async def test_transcribes_a_question(whisper: WhisperSTT) -> None:
    events = await collect(whisper, espeak_pcm(QUESTION), FLUSH)
    finals = [e for e in events if e.final]
    assert len(finals) == 1
    assert {"capital", "france"} <= words(finals[0].text), finals[0].text


async def test_interim_transcripts_come_before_the_final(whisper: WhisperSTT) -> None:
    # Real-time pacing, as from a microphone: interims re-decode the growing audio every ~400 ms.
    events = await collect(whisper, espeak_pcm(LONG), FLUSH, pace=1.0)
    interims = [e for e in events if not e.final]
    assert interims, "no interim transcript during a 5 s utterance"
    assert events[-1].final and sum(e.final for e in events) == 1
    assert all(e.text for e in interims)
    assert {"sunny", "tomorrow", "rain", "afternoon"} <= words(events[-1].text), events[-1].text


async def test_empty_flush_gives_one_empty_final(whisper: WhisperSTT) -> None:
    events = await collect(whisper, FLUSH)
    assert events == [TranscriptEvent("", final=True)]


async def test_each_flush_starts_a_new_utterance(whisper: WhisperSTT) -> None:
    events = await collect(
        whisper, espeak_pcm("Good morning."), FLUSH, espeak_pcm("Turn on the kitchen lights."), FLUSH
    )
    finals = [e.text for e in events if e.final]
    assert len(finals) == 2
    assert "morning" in words(finals[0]) and "kitchen" not in words(finals[0])
    assert "kitchen" in words(finals[1]) and "morning" not in words(finals[1])


async def test_other_input_rates_are_resampled(whisper: WhisperSTT) -> None:
    pcm = espeak_pcm(QUESTION, sample_rate=48000)
    async with aclosing(whisper.transcribe(frames(pcm, FLUSH, rate=48000), sample_rate=48000)) as stream:
        events = [event async for event in stream]
    assert {"capital", "france"} <= words(events[-1].text)


async def test_concurrent_sessions_share_the_model(whisper: WhisperSTT) -> None:
    clips = [espeak_pcm(QUESTION), espeak_pcm("Turn on the kitchen lights."), espeak_pcm("Good morning.")]
    results = await asyncio.gather(*(collect(whisper, clip, silence(200), FLUSH) for clip in clips))
    finals = [r[-1].text for r in results]
    assert "france" in words(finals[0])
    assert "kitchen" in words(finals[1])
    assert "morning" in words(finals[2])


async def test_the_decode_started_in_the_pause_is_the_final(whisper: WhisperSTT) -> None:
    # The engine keeps sending audio through the pause that ends a turn; a decode started in that pause
    # already holds every word, so the FLUSH should be answered at once rather than after a new decode.
    flushed_at = 0.0
    speech = espeak_pcm(QUESTION)
    began = time.perf_counter()
    await asyncio.to_thread(whisper.decode, speech, 16000)
    decode_s = time.perf_counter() - began  # how loaded this machine is right now

    async def audio() -> AsyncIterator[bytes | Flush]:
        nonlocal flushed_at
        async for frame in frames(speech, silence(600)):
            yield frame
        await asyncio.sleep(max(2.5, 5 * decode_s))  # time for an interim and then the pause decode
        flushed_at = time.perf_counter()
        yield FLUSH

    async with aclosing(whisper.transcribe(audio(), sample_rate=16000)) as stream:
        finals = [event async for event in stream if event.final]
        latency = time.perf_counter() - flushed_at
    final = finals[0]
    assert {"capital", "france"} <= words(final.text)
    assert latency < 0.25, f"the final took {latency:.2f} s after the flush"


async def test_words_after_the_pause_are_not_lost(whisper: WhisperSTT) -> None:
    # A pause decode finishes, then the user speaks again before the turn ends: it must not be reused.
    clips = (espeak_pcm(QUESTION), silence(600))
    async def audio() -> AsyncIterator[bytes | Flush]:
        async for frame in frames(*clips):
            yield frame
        await asyncio.sleep(2.0)
        async for frame in frames(espeak_pcm("And what about Germany?"), FLUSH):
            yield frame
    async with aclosing(whisper.transcribe(audio(), sample_rate=16000)) as stream:
        finals = [event.text async for event in stream if event.final]
    assert len(finals) == 1
    assert {"france", "germany"} <= words(finals[0]), finals[0]


class TestWhisperContract(STTContract):
    words = ("capital", "France")

    def speech(self) -> bytes:
        return espeak_pcm(QUESTION)

    def make_provider(self) -> WhisperSTT:
        return WhisperSTT()


async def test_a_full_queue_is_a_clear_error() -> None:
    whisper = WhisperSTT(WhisperSTT.Settings(max_queue=1, interim_interval_ms=0))
    await whisper.start()
    try:
        clip = espeak_pcm(QUESTION)
        results = await asyncio.gather(
            *(collect(whisper, clip, FLUSH) for _ in range(3)), return_exceptions=True
        )
    finally:
        await whisper.aclose()
    refused = [r for r in results if isinstance(r, CapacityExceeded)]
    served = [r for r in results if isinstance(r, list)]
    assert refused and served, results
    assert "max_pending=1" in str(refused[0]) and refused[0].retryable
    assert "france" in words(served[0][-1].text)


def test_a_short_window_hears_what_the_whole_window_hears(whisper: WhisperSTT) -> None:
    # Clips under 9 s are encoded in a 10 s window instead of Whisper's 30 s (about 10 x less encoder work).
    for text in ("Turn on the kitchen lights.", LONG):
        clip = silence(300) + espeak_pcm(text) + silence(200)
        samples = np.frombuffer(clip, dtype="<i2").astype(np.float32) / 32768.0
        short = whisper._decode_short(samples, 1, 10.0)
        assert short is not None  # no repetition loop, no fallback to the whole window
        segments, _ = whisper._model.transcribe(samples, language="en", beam_size=1, temperature=0.0,
                                                condition_on_previous_text=False, without_timestamps=True,
                                                vad_filter=False)  # faster-whisper's own 30 s window
        whole = words(" ".join(s.text for s in segments))
        assert len(words(short[0]) & whole) >= 0.8 * len(whole), (short[0], whole)
