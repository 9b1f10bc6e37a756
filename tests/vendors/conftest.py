"""Fixtures for the vendor tests: one fresh stand-in per test, and a task-leak check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from standins import DeepgramStandin, ElevenLabsStandin, GroqStandin, OpenAIStandin
from vendor_support import API_KEY


@pytest.fixture
async def deepgram() -> AsyncIterator[DeepgramStandin]:
    async with DeepgramStandin(api_key=API_KEY) as standin:
        yield standin


@pytest.fixture
async def groq() -> AsyncIterator[GroqStandin]:
    async with GroqStandin(api_key=API_KEY) as standin:
        yield standin


@pytest.fixture
async def elevenlabs() -> AsyncIterator[ElevenLabsStandin]:
    async with ElevenLabsStandin(api_key=API_KEY) as standin:
        yield standin


@pytest.fixture
async def openai_standin() -> AsyncIterator[OpenAIStandin]:
    async with OpenAIStandin(api_key=API_KEY) as standin:
        yield standin


def _server_side(task: asyncio.Task[Any]) -> bool:
    """Tasks of the stand-in servers (uvicorn connection handlers) are not the provider's to clean up."""
    code = getattr(task.get_coro(), "cr_code", None)
    filename = getattr(code, "co_filename", "")
    return any(part in filename for part in ("uvicorn", "starlette", "/standins/"))


@pytest.fixture
async def no_leaks() -> AsyncIterator[None]:
    """Fail the test if it leaves tasks running (beyond the stand-in's own server)."""
    before = set(asyncio.all_tasks())
    yield
    deadline = asyncio.get_running_loop().time() + 2.0
    while True:
        current = asyncio.current_task()
        leftover = [
            t for t in asyncio.all_tasks() - before if not t.done() and t is not current and not _server_side(t)
        ]
        if not leftover:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"tasks left running: {[t.get_name() for t in leftover]}")
        await asyncio.sleep(0.02)
