"""The ``openai`` STT and TTS through the real ``openai`` SDK against the stand-in's audio endpoints.

STT: one multipart upload (a WAV) per flush, exactly one final transcript each, the prompt carrying the
session's recent words. TTS: raw 24 kHz PCM handed on as it arrives, never a split sample. Both: errors mapped
once, a failure after audio never restarted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import structlog
from openai_support import close_after_first, make_stt, make_tts, received_before_a_drop
from standins import OpenAIStandin
from standins.openai_standin import DEFAULT_TRANSCRIPT, PCM_RATE
from vendor_support import API_KEY, collect, frames, silence, speech, through_engine

from vocable.providers.base import FLUSH, AudioChunk, Flush, TranscriptEvent
from vocable.providers.errors import AuthenticationError, ProviderTimeout, RateLimited, ServiceUnavailable
from vocable.providers.openai import OpenAISTT, OpenAITTS
from vocable.providers.openai.stt import prompt_for

pytestmark = pytest.mark.usefixtures("no_leaks")

TEXT = "Hello there, this is a sentence long enough to stream in several pieces of audio."


async def utterances(*clips: bytes, rate: int = 16000) -> AsyncIterator[bytes | Flush]:
    for clip in clips:
        for frame in frames(clip, rate):
            yield frame
        yield FLUSH


async def transcribe(stt: OpenAISTT, *clips: bytes, rate: int = 16000) -> list[TranscriptEvent]:
    await stt.start()
    try:
        return await collect(stt.transcribe(utterances(*clips, rate=rate), sample_rate=rate))
    finally:
        await stt.aclose()


# ------------------------------------------------------------------------------------------------ STT


async def test_each_flush_is_one_upload_and_one_final(openai_standin: OpenAIStandin) -> None:
    events = await transcribe(make_stt(openai_standin), speech(900) + silence(200), silence(400), speech(700))
    assert [(e.text, e.final) for e in events] == [(DEFAULT_TRANSCRIPT, True), ("", True), (DEFAULT_TRANSCRIPT, True)]
    assert openai_standin.attempts == 3
    first = openai_standin.log[0]
    assert first["path"] == "/v1/audio/transcriptions"
    assert first["model"] == "gpt-transcribe" and first["language"] == "en" and first["response_format"] == "json"
    assert first["filename"] == "speech.wav" and first["content_type"] == "audio/wav"
    assert first["sample_rate"] == 16000 and first["seconds"] == pytest.approx(1.1, abs=0.02)
    assert "prompt" not in first, "nothing said yet, no prompt configured"


async def test_the_prompt_carries_recent_context(openai_standin: OpenAIStandin) -> None:
    stt = make_stt(openai_standin, prompt="Vocable, Paris.", context_chars=30, language=None)
    await transcribe(stt, speech(500), speech(500), speech(500))
    prompts = [entry.get("prompt") for entry in openai_standin.log]
    assert prompts[0] == "Vocable, Paris."
    assert prompts[1] == "Vocable, Paris. weather like in Paris today?", "the end of what was said, cut at a word"
    assert prompts[2].startswith("Vocable, Paris. ") and prompts[2].endswith("Paris today?")
    assert "language" not in openai_standin.log[0], "language: null lets the model guess"

    openai_standin.reset()
    await transcribe(make_stt(openai_standin, context_chars=0), speech(500), speech(500))
    assert all("prompt" not in entry for entry in openai_standin.log)


def test_prompt_for_cuts_at_a_word() -> None:
    assert prompt_for(None, "", 100) is None
    assert prompt_for("Names: Ana.", "", 100) == "Names: Ana."
    assert prompt_for(None, "one two three four", 9) == "four"
    assert prompt_for(None, "one two", 100) == "one two"


async def test_too_short_audio_is_an_empty_final_without_a_request(openai_standin: OpenAIStandin) -> None:
    events = await transcribe(make_stt(openai_standin), speech(60), b"")
    assert [(e.text, e.final) for e in events] == [("", True), ("", True)]
    assert openai_standin.attempts == 0


async def test_other_sample_rates_are_uploaded_as_they_are(openai_standin: OpenAIStandin) -> None:
    events = await transcribe(make_stt(openai_standin), speech(600, 24000), rate=24000)
    assert events[0].text == DEFAULT_TRANSCRIPT
    assert openai_standin.log[0]["sample_rate"] == 24000


async def test_stt_on_azure(openai_standin: OpenAIStandin) -> None:
    stt = make_stt(openai_standin, base_url=openai_standin.url, api_version="2024-10-21", deployment="whisper")
    assert (await transcribe(stt, speech(600)))[0].text == DEFAULT_TRANSCRIPT
    assert openai_standin.log[0]["path"] == "/openai/deployments/whisper/audio/transcriptions"
    assert openai_standin.log[0]["query"] == {"api-version": "2024-10-21"}


@pytest.mark.parametrize(
    ("mode", "error"),
    [("401", AuthenticationError), ("429", RateLimited), ("500", ServiceUnavailable), ("hang", ProviderTimeout),
     ("drop", ServiceUnavailable)],
)
async def test_stt_errors_are_mapped(openai_standin: OpenAIStandin, mode: str, error: type[Exception]) -> None:
    openai_standin.set_mode(mode)
    openai_standin.retry_after_s = 2
    with structlog.testing.capture_logs() as logs, pytest.raises(error) as info:
        await transcribe(make_stt(openai_standin, request_timeout_s=0.3), speech(600))
    assert openai_standin.attempts == 1, "the STT does not retry on its own"
    assert API_KEY not in str(info.value) and API_KEY not in repr(logs)
    if mode == "429":
        assert info.value.retry_after_s == 2


# ------------------------------------------------------------------------------------------------ TTS


async def synthesize(tts: OpenAITTS, text: str = TEXT, retries: int = 0) -> list[AudioChunk]:
    await tts.start()
    try:
        return await through_engine(lambda: tts.synthesize(text), retries=retries)
    finally:
        await tts.aclose()


async def test_speech_is_raw_24k_pcm_in_whole_samples(openai_standin: OpenAIStandin) -> None:
    tts = make_tts(openai_standin, voice="coral", speed=1.25, instructions="Cheerful.")
    assert tts.sample_rate == PCM_RATE == 24000
    chunks = await synthesize(tts)
    assert len(chunks) > 3 and all(c.sample_rate == 24000 and len(c.pcm) % 2 == 0 for c in chunks)
    expected = int(len(TEXT) * openai_standin.ms_per_char / 1000 / 1.25 * 24000) * 2
    assert sum(len(c.pcm) for c in chunks) == expected, "every byte, none lost to the odd-sized pieces"
    body = openai_standin.log[0]["body"]
    assert body == {"model": "gpt-4o-mini-tts", "voice": "coral", "input": TEXT, "response_format": "pcm",
                    "speed": 1.25, "instructions": "Cheerful."}
    assert openai_standin.log[0]["path"] == "/v1/audio/speech"


async def test_audio_is_handed_on_as_it_arrives(openai_standin: OpenAIStandin) -> None:
    openai_standin.set_mode("slow", slow_delay_s=0.1)
    tts = make_tts(openai_standin)
    await tts.start()
    started = time.perf_counter()
    arrivals: list[float] = []
    try:
        async for _ in tts.synthesize(TEXT):
            arrivals.append(time.perf_counter() - started)
    finally:
        await tts.aclose()
    assert len(arrivals) > 5
    assert arrivals[0] < 0.5 * arrivals[-1], "the first audio did not wait for the whole sentence"


async def test_sample_rate_setting_declares_another_servers_pcm(openai_standin: OpenAIStandin) -> None:
    tts = make_tts(openai_standin, sample_rate=22050)
    assert tts.sample_rate == 22050 and tts.capabilities.sample_rate == 22050
    assert {c.sample_rate for c in await synthesize(tts)} == {22050}


async def test_tts_on_azure(openai_standin: OpenAIStandin) -> None:
    tts = make_tts(openai_standin, base_url=openai_standin.url, api_version="2025-03-01-preview")
    assert await synthesize(tts)
    assert openai_standin.log[0]["path"] == "/openai/deployments/gpt-4o-mini-tts/audio/speech"


@pytest.mark.parametrize(
    ("mode", "error", "attempts"),
    [("401", AuthenticationError, 1), ("429", RateLimited, 2), ("500", ServiceUnavailable, 2),
     ("hang", ProviderTimeout, 2)],
)
async def test_tts_errors_are_mapped_and_retried_by_the_engine_only(
    openai_standin: OpenAIStandin, mode: str, error: type[Exception], attempts: int
) -> None:
    openai_standin.set_mode(mode)
    with pytest.raises(error) as info:
        await synthesize(make_tts(openai_standin, request_timeout_s=0.3), retries=1)
    assert openai_standin.attempts == attempts
    assert API_KEY not in str(info.value)


async def test_tts_dropped_mid_audio_is_not_restarted(openai_standin: OpenAIStandin) -> None:
    chunks = await received_before_a_drop(make_tts(openai_standin), lambda tts: tts.synthesize(TEXT), openai_standin)
    assert all(isinstance(c, AudioChunk) for c in chunks)


async def test_closing_the_audio_stream_early_stops_the_server(openai_standin: OpenAIStandin) -> None:
    tts = make_tts(openai_standin)
    first, sent = await close_after_first(tts, lambda tts: tts.synthesize(TEXT), openai_standin, "audio_chunks_sent")
    assert isinstance(first, AudioChunk) and sent < 10
