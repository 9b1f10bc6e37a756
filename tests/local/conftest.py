"""Session-wide fixtures for the offline providers: each shared model loads once per test run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from local.localkit import start, stop


@pytest.fixture(scope="session")
def whisper() -> Iterator[Any]:
    from vocable.providers.local import WhisperSTT

    provider = start(WhisperSTT())
    yield provider
    stop(provider)


@pytest.fixture(scope="session")
def piper() -> Iterator[Any]:
    from vocable.providers.local import PiperTTS

    provider = start(PiperTTS())
    yield provider
    stop(provider)
