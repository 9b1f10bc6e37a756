"""The one mapping of vendor failures, the one retry loop, and the plugin surface of the three providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from vocable.providers.errors import (
    AuthenticationError,
    ConfigurationError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServiceUnavailable,
)
from vocable.providers.vendor_errors import (
    RetryPolicy,
    close_error,
    map_error,
    redact,
    retry_call,
    retry_stream,
    status_error,
)

FAST = RetryPolicy(retries=2, base_delay_s=0.001, max_delay_s=0.01)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (403, AuthenticationError),
        (429, RateLimited),
        (500, ServiceUnavailable),
        (503, ServiceUnavailable),
        (504, ProviderTimeout),
        (408, ProviderTimeout),
        (400, ConfigurationError),
        (404, ConfigurationError),
    ],
)
def test_status_mapping(status: int, cls: type[ProviderError]) -> None:
    error = status_error(status, provider="x")
    assert type(error) is cls and str(status) in str(error)


def test_sdk_exceptions_are_mapped_by_shape() -> None:
    class ApiError(Exception):  # Fern's shape (Deepgram, ElevenLabs)
        def __init__(self) -> None:
            self.status_code = 429
            self.headers = {"retry-after": "3"}
            self.body = {"detail": {"status": "too_many_concurrent_requests", "message": "slow down"}}

    error = map_error(ApiError(), provider="elevenlabs")
    assert isinstance(error, RateLimited) and "slow down" in str(error) and error.retry_after == 3.0  # type: ignore[attr-defined]
    assert isinstance(map_error(httpx.ReadTimeout("t"), provider="x"), ProviderTimeout)
    assert isinstance(map_error(httpx.ConnectError("refused"), provider="x"), ServiceUnavailable)
    assert isinstance(map_error(httpx.RemoteProtocolError("incomplete chunked read"), provider="x"), ServiceUnavailable)
    assert isinstance(map_error(ConnectionRefusedError(), provider="x"), ServiceUnavailable)
    assert isinstance(map_error(TimeoutError(), provider="x"), ProviderTimeout)
    original = RateLimited("r", provider="x")
    assert map_error(original, provider="y") is original


def test_websocket_closes_are_mapped() -> None:
    from websockets.exceptions import ConnectionClosedError
    from websockets.frames import Close

    dropped = ConnectionClosedError(None, None)
    assert isinstance(map_error(dropped, provider="x"), ServiceUnavailable)
    assert "1006" in str(map_error(dropped, provider="x"))
    assert isinstance(close_error(1008, "Invalid API key", provider="x"), AuthenticationError)
    assert isinstance(close_error(1008, "quota exceeded", provider="x"), RateLimited)
    assert isinstance(close_error(1013, "", provider="x"), RateLimited)
    assert isinstance(close_error(1011, "NET-0001", provider="x"), ServiceUnavailable)
    rejected = ConnectionClosedError(Close(1008, "unauthorized"), None)
    assert isinstance(map_error(rejected, provider="x"), AuthenticationError)


def test_secrets_never_reach_messages() -> None:
    secret = "sk-live-abcdef123456"
    error = status_error(401, provider="x", detail=f"key {secret} is invalid", secrets=(secret,))
    assert secret not in str(error) and "***" in str(error)
    assert len(redact("word " * 500)) <= 200


async def test_retry_stream_never_restarts_after_yielding() -> None:
    opened = 0

    def open_stream() -> AsyncIterator[str]:
        async def stream() -> AsyncIterator[str]:
            nonlocal opened
            opened += 1
            yield "first"
            raise httpx.RemoteProtocolError("dropped")

        return stream()

    received: list[str] = []
    with pytest.raises(ServiceUnavailable) as info:
        async for item in retry_stream(open_stream, policy=FAST, provider="x"):
            received.append(item)
    assert received == ["first"] and opened == 1
    assert info.value.__cause__ is None


async def test_retry_stream_retries_before_output_and_never_retries_auth() -> None:
    failures = [status_error(503, provider="x"), status_error(429, provider="x")]
    opened = 0

    def open_stream() -> AsyncIterator[str]:
        async def stream() -> AsyncIterator[str]:
            nonlocal opened
            opened += 1
            if failures:
                raise failures.pop(0)
            yield "ok"

        return stream()

    assert [x async for x in retry_stream(open_stream, policy=FAST, provider="x")] == ["ok"] and opened == 3

    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise status_error(401, provider="x")

    with pytest.raises(AuthenticationError):
        await retry_call(refused, policy=FAST, provider="x")
    assert calls == 1


async def test_retry_stream_idle_timeout() -> None:
    def open_stream() -> AsyncIterator[str]:
        async def stream() -> AsyncIterator[str]:
            await asyncio.sleep(10)
            yield "never"

        return stream()

    with pytest.raises(ProviderTimeout):
        await anext(retry_stream(open_stream, policy=RetryPolicy(retries=0), provider="x", idle_timeout_s=0.05))


def test_backoff_is_bounded_and_honours_retry_after() -> None:
    policy = RetryPolicy(retries=5, base_delay_s=0.5, max_delay_s=2.0)
    assert all(0.25 <= policy.delay(n) <= 2.0 for n in range(10))
    limited = status_error(429, provider="x", retry_after=1.5)
    assert policy.delay(0, limited) >= 1.5
    assert RetryPolicy(max_delay_s=2.0).delay(0, status_error(429, provider="x", retry_after=60)) <= 2.0


# ------------------------------------------------------------------------------------------ plugins


def test_plugins_register_their_providers_with_settings_and_requirements() -> None:
    from vocable.providers import deepgram, elevenlabs, groq

    registered: list[Any] = []
    for module in (deepgram, groq, elevenlabs):
        module.register_providers(registered.append)
    assert [(c.kind, c.name) for c in registered] == [
        ("stt", "deepgram"),
        ("tts", "deepgram"),
        ("llm", "groq"),
        ("tts", "elevenlabs"),
    ]
    for cls in registered:
        assert cls.requires and all(not r.missing() for r in cls.requires)
        assert "vocable[" in cls.requires[0].install
        with pytest.raises(ValidationError):
            cls.Settings(api_key="k", no_such_key=1)  # extra="forbid": a typo is an error
        with pytest.raises(ValidationError, match="api_key is empty"):
            cls.Settings(api_key="  ")
        settings = cls.Settings(api_key="sk-secret-value-1")
        assert "sk-secret-value-1" not in repr(settings) and "sk-secret-value-1" not in str(settings.model_dump())


def test_vendor_sdks_are_imported_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, vocable.providers.deepgram, vocable.providers.groq, vocable.providers.elevenlabs;"
        "print([m for m in ('deepgram', 'groq', 'elevenlabs', 'websockets') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
