"""The provider contract kit (``vocable.testing.contract``) run against the stand-ins.

The kit drives each provider the way the engine does, each check in its own event loop, so the stand-ins
run in a thread here (``Standin.run_in_thread``), as they would for any synchronous caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pytest
from standins import DeepgramStandin, ElevenLabsStandin, GroqStandin, Standin
from standins.deepgram_standin import SCRIPT
from vendor_support import API_KEY, speech

from vocable.providers.deepgram import DeepgramSTT, DeepgramSTTSettings, DeepgramTTS, DeepgramTTSSettings
from vocable.providers.elevenlabs import ElevenLabsSettings, ElevenLabsTTS
from vocable.providers.groq import GroqLLM, GroqSettings
from vocable.testing.contract import LLMContract, STTContract, TTSContract

S = TypeVar("S", bound=Standin)

COMMON: dict[str, object] = {"request_timeout_s": 2.0}


def _threaded(cls: type[S]) -> Iterator[S]:
    with cls(api_key=API_KEY).run_in_thread() as standin:
        yield standin


@pytest.fixture(scope="module")
def deepgram_thread() -> Iterator[DeepgramStandin]:
    yield from _threaded(DeepgramStandin)


@pytest.fixture(scope="module")
def groq_thread() -> Iterator[GroqStandin]:
    yield from _threaded(GroqStandin)


@pytest.fixture(scope="module")
def elevenlabs_thread() -> Iterator[ElevenLabsStandin]:
    yield from _threaded(ElevenLabsStandin)


class TestGroqContract(LLMContract):
    @pytest.fixture(autouse=True)
    def _standin(self, groq_thread: GroqStandin) -> None:
        groq_thread.reset()
        self.url = groq_thread.url

    def make_provider(self) -> GroqLLM:
        return GroqLLM(GroqSettings.model_validate({"api_key": API_KEY, "base_url": self.url, **COMMON}))

    def make_unauthorized(self) -> GroqLLM:
        return GroqLLM(GroqSettings.model_validate({"api_key": "wrong", "base_url": self.url, **COMMON}))


class TestDeepgramSTTContract(STTContract):
    words = tuple(SCRIPT[:5])

    @pytest.fixture(autouse=True)
    def _standin(self, deepgram_thread: DeepgramStandin) -> None:
        deepgram_thread.reset()
        self.url = deepgram_thread.url

    def speech(self) -> bytes:
        return speech(1000, self.sample_rate)  # the stand-in hears one scripted word per 200 ms of tone

    def make_provider(self) -> DeepgramSTT:
        return DeepgramSTT(DeepgramSTTSettings.model_validate({"api_key": API_KEY, "base_url": self.url, **COMMON}))

    def make_unauthorized(self) -> DeepgramSTT:
        return DeepgramSTT(DeepgramSTTSettings.model_validate({"api_key": "wrong", "base_url": self.url, **COMMON}))


class TestDeepgramTTSContract(TTSContract):
    @pytest.fixture(autouse=True)
    def _standin(self, deepgram_thread: DeepgramStandin) -> None:
        deepgram_thread.reset()
        self.url = deepgram_thread.url

    def make_provider(self) -> DeepgramTTS:
        return DeepgramTTS(DeepgramTTSSettings.model_validate({"api_key": API_KEY, "base_url": self.url, **COMMON}))

    def make_unauthorized(self) -> DeepgramTTS:
        return DeepgramTTS(DeepgramTTSSettings.model_validate({"api_key": "wrong", "base_url": self.url, **COMMON}))


class TestElevenLabsContract(TTSContract):
    @pytest.fixture(autouse=True)
    def _standin(self, elevenlabs_thread: ElevenLabsStandin) -> None:
        elevenlabs_thread.reset()
        self.url = elevenlabs_thread.url

    def make_provider(self) -> ElevenLabsTTS:
        return ElevenLabsTTS(ElevenLabsSettings.model_validate({"api_key": API_KEY, "base_url": self.url, **COMMON}))

    def make_unauthorized(self) -> ElevenLabsTTS:
        return ElevenLabsTTS(ElevenLabsSettings.model_validate({"api_key": "wrong", "base_url": self.url, **COMMON}))
