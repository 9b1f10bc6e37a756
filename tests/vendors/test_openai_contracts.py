"""The provider contract kit (``vocable.testing.contract``) for the three ``openai`` providers.

Each check runs its own event loop, so the stand-in serves from a thread (``Standin.run_in_thread``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai_support import make_llm, make_stt, make_tts
from standins import OpenAIStandin
from vendor_support import API_KEY, speech

from vocable.testing.contract import LLMContract, STTContract, TTSContract


@pytest.fixture(scope="module")
def openai_thread() -> Iterator[OpenAIStandin]:
    with OpenAIStandin(api_key=API_KEY).run_in_thread() as standin:
        yield standin


class _OnStandin:
    """``make_provider`` and ``make_unauthorized`` from one of ``openai_support``'s builders."""

    build: Any = None

    @pytest.fixture(autouse=True)
    def _standin(self, openai_thread: OpenAIStandin) -> None:
        openai_thread.reset()
        self.standin = openai_thread

    def make_provider(self) -> Any:
        return type(self).build(self.standin)

    def make_unauthorized(self) -> Any:
        return type(self).build(self.standin, api_key="wrong")


class TestOpenAILLMContract(_OnStandin, LLMContract):
    build = make_llm


class TestOpenAISTTContract(_OnStandin, STTContract):
    build = make_stt
    words = ("weather", "Paris")  # the stand-in hears its scripted transcript in any voiced audio

    def speech(self) -> bytes:
        return speech(1000, self.sample_rate)


class TestOpenAITTSContract(_OnStandin, TTSContract):
    build = make_tts
