"""The ``deepgram`` TTS (Aura) through ``deepgram-sdk`` against the Deepgram stand-in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import structlog
from standins import DeepgramStandin
from standins.deepgram_standin import tone_pcm
from vendor_support import API_KEY, collect, engine_stream, through_engine

from vocable.providers.base import AudioChunk
from vocable.providers.deepgram import DeepgramTTS, DeepgramTTSSettings
from vocable.providers.errors import AuthenticationError, ProviderTimeout, RateLimited, ServiceUnavailable

pytestmark = pytest.mark.usefixtures("no_leaks")

SENTENCE = "The weather in Paris is mild today."


def make_tts(standin: DeepgramStandin, **overrides: object) -> DeepgramTTS:
    values: dict[str, object] = {
        "api_key": API_KEY,
        "base_url": standin.url,
        "request_timeout_s": 2.0,
    }
    values.update(overrides)
    return DeepgramTTS(DeepgramTTSSettings.model_validate(values))


async def synthesize(tts: DeepgramTTS, text: str = SENTENCE, retries: int = 2) -> list[AudioChunk]:
    """One sentence as the engine asks for it: the provider only maps errors, the engine's policy retries."""
    await tts.start()
    try:
        return await through_engine(lambda: tts.synthesize(text), retries=retries)
    finally:
        await tts.aclose()


def expected_pcm(standin: DeepgramStandin, text: str, rate: int) -> bytes:
    return tone_pcm(len(text) * standin.ms_per_char / 1000, rate)


async def test_normal_sentence_streams_linear16(deepgram: DeepgramStandin) -> None:
    chunks = await synthesize(make_tts(deepgram))
    assert len(chunks) > 1, "audio must stream in pieces"
    assert all(c.sample_rate == 24000 and len(c.pcm) % 2 == 0 for c in chunks)
    assert b"".join(c.pcm for c in chunks) == expected_pcm(deepgram, SENTENCE, 24000)
    request = deepgram.log[0]
    assert request["body"] == {"text": SENTENCE}
    assert request["query"] == {
        "model": "aura-2-thalia-en",
        "encoding": "linear16",
        "container": "none",
        "sample_rate": "24000",
    }
    assert deepgram.attempts == 1


async def test_sample_rate_and_model_come_from_settings(deepgram: DeepgramStandin) -> None:
    tts = make_tts(deepgram, sample_rate=16000, model="aura-2-orion-en")
    assert tts.sample_rate == 16000
    chunks = await synthesize(tts)
    assert {c.sample_rate for c in chunks} == {16000}
    assert deepgram.log[0]["query"]["model"] == "aura-2-orion-en"


async def test_speak_aggregates_sentences_and_marks_them(deepgram: DeepgramStandin) -> None:
    async def pieces() -> AsyncIterator[str]:
        for piece in ["The weather ", "in Paris is mild. ", "Take a light ", "jacket with you."]:
            yield piece

    tts = make_tts(deepgram)
    await tts.start()
    try:
        chunks = await collect(tts.speak(pieces()))
    finally:
        await tts.aclose()
    assert [c.text for c in chunks if c.text] == ["The weather in Paris is mild.", "Take a light jacket with you."]
    assert [r["body"]["text"] for r in deepgram.log] == [
        "The weather in Paris is mild.",
        "Take a light jacket with you.",
    ]


async def test_401_fails_at_once(deepgram: DeepgramStandin) -> None:
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthenticationError) as info:
        await synthesize(make_tts(deepgram, api_key="dg-bad-key-98765"))
    assert deepgram.attempts == 1
    assert "dg-bad-key-98765" not in str(info.value) and "dg-bad-key-98765" not in repr(logs)


async def test_429_is_retried_then_raised(deepgram: DeepgramStandin) -> None:
    deepgram.set_mode("429")
    with pytest.raises(RateLimited):
        await synthesize(make_tts(deepgram))
    assert deepgram.attempts == 3


async def test_429_then_success(deepgram: DeepgramStandin) -> None:
    deepgram.set_mode("429", times=2)
    chunks = await synthesize(make_tts(deepgram))
    assert b"".join(c.pcm for c in chunks) == expected_pcm(deepgram, SENTENCE, 24000)
    assert deepgram.attempts == 3


async def test_500_becomes_service_unavailable(deepgram: DeepgramStandin) -> None:
    deepgram.set_mode("500")
    with pytest.raises(ServiceUnavailable):
        await synthesize(make_tts(deepgram), retries=1)
    assert deepgram.attempts == 2


async def test_hang_times_out(deepgram: DeepgramStandin) -> None:
    deepgram.set_mode("hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await synthesize(make_tts(deepgram, request_timeout_s=0.3), retries=1)
    assert deepgram.attempts == 2 and time.monotonic() - started < 3


async def test_drop_mid_stream_does_not_repeat_audio(deepgram: DeepgramStandin) -> None:
    deepgram.set_mode("drop")
    tts = make_tts(deepgram)
    await tts.start()
    received = b""
    try:
        with pytest.raises(ServiceUnavailable):
            async for chunk in engine_stream(lambda: tts.synthesize(SENTENCE), retries=2):
                received += chunk.pcm
    finally:
        await tts.aclose()
    full = expected_pcm(deepgram, SENTENCE, 24000)
    assert 0 < len(received) < len(full) and full.startswith(received)
    assert deepgram.attempts == 1, "audio was already yielded: a retry would repeat it"
