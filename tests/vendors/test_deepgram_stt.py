"""The ``deepgram`` STT through ``deepgram-sdk``'s live websocket client against the Deepgram stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pytest
import structlog
from standins import DeepgramStandin
from standins.deepgram_standin import SCRIPT
from vendor_support import API_KEY, frames, silence, speech

from vocable.providers.base import FLUSH, Flush, TranscriptEvent
from vocable.providers.deepgram import DeepgramSTT, DeepgramSTTSettings
from vocable.providers.errors import AuthenticationError, ProviderTimeout, RateLimited, ServiceUnavailable

pytestmark = pytest.mark.usefixtures("no_leaks")

Step = bytes | Flush | float  # audio, a flush, or a pause (seconds) with nothing sent


def make_stt(standin: DeepgramStandin, **overrides: object) -> DeepgramSTT:
    values: dict[str, object] = {
        "api_key": API_KEY,
        "base_url": standin.url,
        "request_timeout_s": 1.0,
        "reconnect_delay_s": 0.01,
        "max_reconnects": 2,
        "finalize_timeout_s": 1.0,
        "keepalive_s": 4.0,
    }
    values.update(overrides)
    return DeepgramSTT(DeepgramSTTSettings.model_validate(values))


async def audio(steps: Sequence[Step]) -> AsyncIterator[bytes | Flush]:
    for step in steps:
        if isinstance(step, float):
            await asyncio.sleep(step)
        elif isinstance(step, Flush):
            yield step
        else:
            for frame in frames(step):
                yield frame
                await asyncio.sleep(0)


async def transcribe(stt: DeepgramSTT, steps: Sequence[Step]) -> list[TranscriptEvent]:
    await stt.start()
    try:
        return [event async for event in stt.transcribe(audio(steps), sample_rate=16000)]
    finally:
        await stt.aclose()


def finals(events: list[TranscriptEvent]) -> list[TranscriptEvent]:
    return [e for e in events if e.final]


async def test_normal_turn_interims_then_one_final_at_flush(deepgram: DeepgramStandin) -> None:
    events = await transcribe(make_stt(deepgram), [speech(1000), FLUSH])
    assert [e.text for e in finals(events)] == [" ".join(SCRIPT[:5])]
    interims = [e for e in events if not e.final]
    assert interims and interims[0].text == SCRIPT[0]
    assert events[-1].final and not events[-1].speech_final
    assert deepgram.counters["finalize"] == 1 and deepgram.counters["close_stream"] == 1
    query = deepgram.log[0]["query"]
    assert query["encoding"] == "linear16" and query["sample_rate"] == "16000" and query["model"] == "nova-3"
    assert query["interim_results"] == "true" and query["channels"] == "1"
    assert deepgram.attempts == 1


async def test_speech_final_and_utterance_end_give_one_end_of_turn(deepgram: DeepgramStandin) -> None:
    events = await transcribe(make_stt(deepgram, endpointing_ms=300), [speech(600), silence(1200)])
    assert [(e.text, e.speech_final) for e in finals(events)] == [(" ".join(SCRIPT[:3]), True)]
    sent_types = [m["type"] for m in deepgram.sent]
    assert "UtteranceEnd" in sent_types and "SpeechStarted" in sent_types


async def test_each_flush_gets_exactly_one_final(deepgram: DeepgramStandin) -> None:
    events = await transcribe(make_stt(deepgram), [speech(400), FLUSH, speech(600), FLUSH, FLUSH])
    assert [e.text for e in finals(events)] == [" ".join(SCRIPT[:2]), " ".join(SCRIPT[2:5]), ""]
    assert deepgram.counters["finalize"] == 3


async def test_unanswered_finalize_still_yields_the_final(deepgram: DeepgramStandin) -> None:
    deepgram.answer_finalize = False
    started = time.monotonic()
    events = await transcribe(make_stt(deepgram, finalize_timeout_s=0.3), [speech(1000), FLUSH, 0.6])
    # Four words were finalized by the server (is_final); the fifth was only interim when the flush went unanswered.
    assert [e.text for e in finals(events)][0] == " ".join(SCRIPT[:4])
    assert time.monotonic() - started < 3


async def test_keepalive_during_silence_keeps_the_stream_open(deepgram: DeepgramStandin) -> None:
    deepgram.net_timeout_s = 0.6
    events = await transcribe(make_stt(deepgram, keepalive_s=0.15), [speech(400), 1.5, speech(400), FLUSH])
    assert deepgram.counters["keepalive"] >= 5
    assert deepgram.counters["net_timeouts"] == 0 and deepgram.attempts == 1
    assert [e.text for e in finals(events)] == [" ".join(SCRIPT[:4])]


async def test_idle_close_without_keepalive_reconnects(deepgram: DeepgramStandin) -> None:
    """The control for the test above: Deepgram closes an idle stream (1011 NET-0001), and we reconnect."""
    deepgram.net_timeout_s = 0.3
    events = await transcribe(make_stt(deepgram, keepalive_s=5.0), [speech(400), 0.8, speech(400), FLUSH])
    assert deepgram.counters["net_timeouts"] >= 1 and deepgram.attempts >= 2
    assert " ".join(e.text for e in finals(events)).split()[-2:] == SCRIPT[2:4]


async def test_drop_reconnects_without_repeating_text(deepgram: DeepgramStandin) -> None:
    deepgram.set_mode("drop", times=1)
    deepgram.drop_after_bytes = 16000  # half a second of audio into the first connection
    events = await transcribe(make_stt(deepgram), [speech(2000), FLUSH])
    assert deepgram.attempts == 2 and deepgram.counters["drops"] == 1
    words = " ".join(e.text for e in finals(events)).split()
    assert words, "audio after the reconnect must be transcribed"
    assert len(words) == len(set(words)), f"text repeated after the reconnect: {words}"
    assert words == sorted(words, key=SCRIPT.index), "words out of order"
    assert words[-1] == SCRIPT[deepgram.word_index - 1]


async def test_401_is_fatal_after_exactly_one_attempt(deepgram: DeepgramStandin) -> None:
    stt = make_stt(deepgram, api_key="dg-wrong-key-1234", max_reconnects=5)
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthenticationError) as info:
        await transcribe(stt, [speech(400), FLUSH])
    assert deepgram.attempts == 1
    assert "dg-wrong-key-1234" not in str(info.value) and "dg-wrong-key-1234" not in repr(logs)


@pytest.mark.parametrize(("mode", "error"), [("429", RateLimited), ("500", ServiceUnavailable)])
async def test_refused_upgrade_is_retried_then_raised(
    deepgram: DeepgramStandin, mode: str, error: type[Exception]
) -> None:
    deepgram.set_mode(mode)
    with pytest.raises(error):
        await transcribe(make_stt(deepgram, max_reconnects=2), [speech(400), FLUSH])
    assert deepgram.attempts == 3


async def test_429_once_then_the_turn_goes_through(deepgram: DeepgramStandin) -> None:
    deepgram.set_mode("429", times=1)
    events = await transcribe(make_stt(deepgram), [speech(400), FLUSH])
    assert [e.text for e in finals(events)] == [" ".join(SCRIPT[:2])]
    assert deepgram.attempts == 2


async def test_hang_at_upgrade_times_out(deepgram: DeepgramStandin) -> None:
    deepgram.set_mode("hang")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await transcribe(make_stt(deepgram, request_timeout_s=0.3, max_reconnects=1), [speech(400), FLUSH])
    assert deepgram.attempts == 2
    assert time.monotonic() - started < 3


async def test_silent_server_is_detected(deepgram: DeepgramStandin) -> None:
    """Audio goes out but nothing ever comes back: the link is treated as dead, not waited on forever."""
    deepgram.voice_threshold = 1e9  # hears nothing, so never answers
    deepgram.answer_finalize = False
    with pytest.raises(ProviderTimeout):
        await transcribe(
            make_stt(deepgram, response_timeout_s=0.3, max_reconnects=1, finalize_timeout_s=5.0),
            [speech(200), 2.0, speech(200), 2.0],
        )
    assert deepgram.attempts == 2


async def test_consumer_stopping_early_cleans_up(deepgram: DeepgramStandin) -> None:
    stt = make_stt(deepgram)
    await stt.start()
    stream = stt.transcribe(audio([speech(2000), FLUSH]), sample_rate=16000)
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    await stt.aclose()
    assert not first.final
