"""The ``elevenlabs`` TTS: HTTP streaming through ``AsyncElevenLabs``, and the websocket stream-input API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import structlog
from standins import ElevenLabsStandin
from standins.deepgram_standin import tone_pcm
from vendor_support import API_KEY, collect, engine_stream, through_engine

from vocable.providers.base import AudioChunk
from vocable.providers.elevenlabs import ElevenLabsSettings, ElevenLabsTTS
from vocable.providers.errors import AuthenticationError, ProviderTimeout, RateLimited, ServiceUnavailable

pytestmark = pytest.mark.usefixtures("no_leaks")

SENTENCE = "The weather in Paris is mild today."
REPLY = [
    "The ",
    "weather ",
    "in ",
    "Paris ",
    "is ",
    "mild ",
    "today, ",
    "with ",
    "a ",
    "light ",
    "breeze ",
    "from ",
    "the ",
    "west. ",
    "Take ",
    "a ",
    "jacket ",
    "if ",
    "you ",
    "go ",
    "out ",
    "tonight.",
]


def make_tts(standin: ElevenLabsStandin, **overrides: object) -> ElevenLabsTTS:
    values: dict[str, object] = {
        "api_key": API_KEY,
        "base_url": standin.url,
        "voice_id": "voice-123",
        "request_timeout_s": 2.0,
        "output_format": "pcm_16000",
    }
    values.update(overrides)
    return ElevenLabsTTS(ElevenLabsSettings.model_validate(values))


def pcm_for(standin: ElevenLabsStandin, text: str, rate: int) -> bytes:
    return tone_pcm(len(text) * standin.ms_per_char / 1000, rate, freq=330.0)


async def pieces(items: Sequence[str], delay_s: float = 0.0) -> AsyncIterator[str]:
    for item in items:
        if delay_s:
            await asyncio.sleep(delay_s)
        yield item


async def run_speak(tts: ElevenLabsTTS, text: Callable[[], AsyncIterator[str]], retries: int = 2) -> list[AudioChunk]:
    """A reply spoken as the engine asks for it: each attempt reads the text from its start (``text()``)."""
    await tts.start()
    try:
        return await through_engine(lambda: tts.speak(text()), retries=retries)
    finally:
        await tts.aclose()


async def run_synthesize(tts: ElevenLabsTTS, text: str = SENTENCE, retries: int = 2) -> list[AudioChunk]:
    await tts.start()
    try:
        return await through_engine(lambda: tts.synthesize(text), retries=retries)
    finally:
        await tts.aclose()


# ------------------------------------------------------------------------------------------------ http


@pytest.mark.parametrize("output_format", ["pcm_16000", "pcm_22050", "pcm_24000"])
async def test_http_stream_returns_pcm_at_the_format_rate(elevenlabs: ElevenLabsStandin, output_format: str) -> None:
    tts = make_tts(elevenlabs, mode="http", output_format=output_format)
    rate = int(output_format.split("_")[1])
    assert tts.sample_rate == rate and tts.capabilities.sample_rate == rate and not tts.capabilities.streaming_input
    chunks = await run_synthesize(tts)
    assert len(chunks) > 1 and {c.sample_rate for c in chunks} == {rate}
    assert b"".join(c.pcm for c in chunks) == pcm_for(elevenlabs, SENTENCE, rate)
    request = elevenlabs.log[0]
    assert request["path"] == "/v1/text-to-speech/voice-123/stream"
    assert request["query"]["output_format"] == output_format
    assert request["body"]["text"] == SENTENCE and request["body"]["model_id"] == "eleven_flash_v2_5"


async def test_http_mode_speaks_sentence_by_sentence(elevenlabs: ElevenLabsStandin) -> None:
    chunks = await run_speak(make_tts(elevenlabs, mode="http"), lambda: pieces(REPLY))
    assert [c.text for c in chunks if c.text] == [
        "The weather in Paris is mild today, with a light breeze from the west.",
        "Take a jacket if you go out tonight.",
    ]
    assert elevenlabs.counters["http_stream"] == 2 and elevenlabs.counters["ws_connections"] == 0


async def test_http_401_fails_at_once(elevenlabs: ElevenLabsStandin) -> None:
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthenticationError) as info:
        await run_synthesize(make_tts(elevenlabs, mode="http", api_key="xi-wrong-key-4242"))
    assert elevenlabs.attempts == 1
    assert "xi-wrong-key-4242" not in str(info.value) and "xi-wrong-key-4242" not in repr(logs)
    assert "Invalid API key" in str(info.value)


async def test_http_429_is_retried_then_raised(elevenlabs: ElevenLabsStandin) -> None:
    elevenlabs.set_mode("429")
    with pytest.raises(RateLimited):
        await run_synthesize(make_tts(elevenlabs, mode="http"))
    assert elevenlabs.attempts == 3


async def test_http_500_is_retried_then_raised(elevenlabs: ElevenLabsStandin) -> None:
    elevenlabs.set_mode("500")
    with pytest.raises(ServiceUnavailable):
        await run_synthesize(make_tts(elevenlabs, mode="http"), retries=1)
    assert elevenlabs.attempts == 2


async def test_http_hang_times_out(elevenlabs: ElevenLabsStandin) -> None:
    elevenlabs.set_mode("hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await run_synthesize(make_tts(elevenlabs, mode="http", request_timeout_s=0.3), retries=1)
    assert elevenlabs.attempts == 2 and time.monotonic() - started < 3


async def test_http_drop_does_not_repeat_audio(elevenlabs: ElevenLabsStandin) -> None:
    elevenlabs.set_mode("drop")
    tts = make_tts(elevenlabs, mode="http")
    await tts.start()
    received = b""
    try:
        with pytest.raises(ServiceUnavailable):
            async for chunk in engine_stream(lambda: tts.synthesize(SENTENCE), retries=2):
                received += chunk.pcm
    finally:
        await tts.aclose()
    full = pcm_for(elevenlabs, SENTENCE, 16000)
    assert 0 < len(received) < len(full) and full.startswith(received)
    assert elevenlabs.attempts == 1


# ------------------------------------------------------------------------------------------- websocket


async def test_websocket_sends_text_as_it_streams(elevenlabs: ElevenLabsStandin) -> None:
    tts = make_tts(elevenlabs)
    assert tts.capabilities.streaming_input
    started = time.monotonic()
    chunks = await run_speak(tts, lambda: pieces(REPLY, delay_s=0.03))
    finished_text_at = started + 0.03 * len(REPLY)

    # All the text arrived, in order, ending with the end-of-input message.
    texts = [m["text"] for _, m in elevenlabs.received]
    assert texts[0] == " " and texts[-1] == ""
    assert "".join(texts[1:-1]).split() == "".join(REPLY).split()
    assert all(t.endswith(" ") for t in texts[1:-1])
    init = elevenlabs.received[0][1]
    assert init["generation_config"] == {"chunk_length_schedule": [50, 90, 120, 150]}
    assert "xi_api_key" not in init, "the key goes in the header, not in a message"

    # Text went out while the "LLM" was still writing, and audio came back before it finished.
    assert elevenlabs.received[1][0] < finished_text_at - 0.3
    assert elevenlabs.audio_sent_at[0] < finished_text_at

    audio = b"".join(c.pcm for c in chunks)
    assert audio and len(audio) % 2 == 0 and {c.sample_rate for c in chunks} == {16000}
    spoken = "".join(c.text or "" for c in chunks)
    assert spoken.split() == "".join(REPLY).split()
    query = elevenlabs.log[0]["query"]
    assert query == {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000"}
    assert elevenlabs.log[0]["path"] == "/v1/text-to-speech/voice-123/stream-input"


async def test_websocket_401_at_upgrade_is_one_attempt(elevenlabs: ElevenLabsStandin) -> None:
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthenticationError) as info:
        await run_speak(make_tts(elevenlabs, api_key="xi-wrong-key-4242"), lambda: pieces(REPLY))
    assert elevenlabs.attempts == 1
    assert "xi-wrong-key-4242" not in str(info.value) and "xi-wrong-key-4242" not in repr(logs)


@pytest.mark.parametrize(("mode", "error"), [("429", RateLimited), ("500", ServiceUnavailable)])
async def test_websocket_refused_upgrade_is_retried(
    elevenlabs: ElevenLabsStandin, mode: str, error: type[Exception]
) -> None:
    elevenlabs.set_mode(mode)
    with pytest.raises(error):
        await run_speak(make_tts(elevenlabs), lambda: pieces(REPLY))
    assert elevenlabs.attempts == 3


async def test_websocket_hang_times_out(elevenlabs: ElevenLabsStandin) -> None:
    elevenlabs.set_mode("hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await run_speak(make_tts(elevenlabs, request_timeout_s=0.3), lambda: pieces(REPLY), retries=1)
    assert elevenlabs.attempts == 2 and time.monotonic() - started < 3


async def test_websocket_drop_after_audio_is_not_restarted(elevenlabs: ElevenLabsStandin) -> None:
    elevenlabs.set_mode("drop")
    elevenlabs.drop_after_audio = 1
    tts = make_tts(elevenlabs)
    await tts.start()
    spoken: list[str] = []
    try:
        with pytest.raises(ServiceUnavailable):
            async for chunk in engine_stream(lambda: tts.speak(pieces(REPLY)), retries=2):
                spoken.append(chunk.text or "")
    finally:
        await tts.aclose()
    assert spoken and "".join(REPLY).startswith("".join(spoken).strip())
    assert elevenlabs.attempts == 1


async def test_websocket_drop_before_audio_replays_the_text(elevenlabs: ElevenLabsStandin) -> None:
    elevenlabs.set_mode("drop", times=1)
    elevenlabs.drop_after_audio = 0
    chunks = await run_speak(make_tts(elevenlabs), lambda: pieces(REPLY, delay_s=0.005))
    assert elevenlabs.attempts == 2
    spoken = "".join(c.text or "" for c in chunks)
    assert spoken.split() == "".join(REPLY).split(), "the second attempt must speak everything exactly once"


async def test_websocket_server_error_message_is_mapped(elevenlabs: ElevenLabsStandin) -> None:
    """A key rejected after the upgrade (sent in the first message) closes with 1008: an auth error."""
    tts = make_tts(elevenlabs)
    await tts.start()
    try:
        from websockets.asyncio.client import connect

        async with connect(tts.stream_input_url()) as ws:  # no header: the server reads the first message
            await ws.send(json.dumps({"text": " ", "xi_api_key": "nope"}))
            reply = json.loads(await ws.recv())
        assert reply["error"] == "invalid_api_key"
    finally:
        await tts.aclose()
    from vocable.providers.vendor_errors import close_error

    assert isinstance(close_error(1008, "Invalid API key", provider="elevenlabs"), AuthenticationError)


async def test_websocket_text_source_failure_is_raised_unchanged_and_not_retried(
    elevenlabs: ElevenLabsStandin,
) -> None:
    """When the LLM writing the text fails, the speaker re-raises the LLM's error; it is not a TTS retry."""

    async def failing_llm() -> AsyncIterator[str]:
        yield "The weather "
        raise RateLimited("llm rate limited", provider="groq")

    tts = make_tts(elevenlabs)
    await tts.start()
    try:
        with pytest.raises(RateLimited, match="llm rate limited"):
            await collect(tts.speak(failing_llm()))  # in the engine the text is a TextFeed, which never raises
    finally:
        await tts.aclose()
    assert elevenlabs.attempts == 1
