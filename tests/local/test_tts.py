"""The ``piper`` and ``espeak`` voices: real synthesis, checked by ear (Whisper) and by energy."""

from __future__ import annotations

import time
from contextlib import aclosing

import pytest

from local.localkit import words
from vocable.engine.audio import resample_pcm
from vocable.providers.base import AudioChunk
from vocable.providers.errors import CapacityExceeded
from vocable.providers.local import EspeakTTS, PiperTTS, WhisperSTT
from vocable.testing.contract import TTSContract
from vocable.testing.speech import espeak_available, rms

pytestmark = pytest.mark.slow

SENTENCE = "The quick brown fox jumps over the lazy dog."
needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


async def speak(tts: PiperTTS | EspeakTTS, text: str) -> list[AudioChunk]:
    async with aclosing(tts.synthesize(text)) as stream:
        return [chunk async for chunk in stream]


async def test_piper_speech_comes_back_through_whisper(piper: PiperTTS, whisper: WhisperSTT) -> None:
    chunks = await speak(piper, SENTENCE)
    assert {c.sample_rate for c in chunks} == {22050}
    pcm = b"".join(c.pcm for c in chunks)
    assert 1.0 < len(pcm) / 2 / 22050 < 6.0
    text, _ = whisper.decode(resample_pcm(pcm, 22050, 16000), 16000)
    assert {"quick", "brown", "fox", "lazy", "dog"} <= words(text), text


async def test_piper_chunks_are_bounded(piper: PiperTTS) -> None:
    chunks = await speak(piper, SENTENCE)
    limit = 22050 * piper.settings.chunk_ms // 1000 * 2
    assert len(chunks) > 1 and all(0 < len(c.pcm) <= limit and len(c.pcm) % 2 == 0 for c in chunks)


async def test_piper_speak_marks_each_sentence(piper: PiperTTS) -> None:
    async def pieces():
        for piece in ("Hello there, my friend. ", "How are ", "you doing today?"):
            yield piece

    async with aclosing(piper.speak(pieces())) as stream:
        chunks = [chunk async for chunk in stream]
    assert [c.text for c in chunks if c.text] == ["Hello there, my friend.", "How are you doing today?"]


async def test_piper_close_frees_the_worker(piper: PiperTTS) -> None:
    stream = piper.synthesize("One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten.")
    await anext(stream)
    began = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - began < 1.0
    chunks = await speak(piper, "Still here.")
    assert rms(b"".join(c.pcm for c in chunks)) > 500


@needs_espeak
async def test_espeak_yields_audio_with_energy() -> None:
    tts = EspeakTTS()
    EspeakTTS.check_installed()
    await tts.start()
    chunks = await speak(tts, "-Hello, this is the fallback voice.")  # a leading dash is not an option
    pcm = b"".join(c.pcm for c in chunks)
    assert {c.sample_rate for c in chunks} == {22050}
    assert len(pcm) / 2 / 22050 > 1.0
    assert rms(pcm) > 500


@needs_espeak
async def test_espeak_speech_comes_back_through_whisper(whisper: WhisperSTT) -> None:
    pcm = b"".join(c.pcm for c in await speak(EspeakTTS(), "Please open the window."))
    text, _ = whisper.decode(resample_pcm(pcm, 22050, 16000), 16000)
    assert {"open", "window"} <= words(text), text


class TestPiperContract(TTSContract):
    def make_provider(self) -> PiperTTS:
        return PiperTTS()


@needs_espeak
class TestEspeakContract(TTSContract):
    def make_provider(self) -> EspeakTTS:
        return EspeakTTS()


@needs_espeak
async def test_espeak_close_kills_the_process_and_frees_its_slot() -> None:
    tts = EspeakTTS(EspeakTTS.Settings(max_processes=1))
    await tts.start()
    stream = tts.synthesize("This sentence is long enough to still be speaking when we interrupt it. " * 5)
    await anext(stream)
    with pytest.raises(CapacityExceeded, match="max_processes=1"):
        await speak(tts, "Meanwhile, another session.")
    await stream.aclose()
    assert rms(b"".join(c.pcm for c in await speak(tts, "Again."))) > 500  # the one slot is free again
