"""The one mapping of vendor failures, the engine's one retry loop around it, and the three providers' plugin surface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from vendor_support import engine_stream, through_engine

from vocable.engine.retry import RetryPolicy
from vocable.providers.errors import (
    AuthenticationError,
    ConfigurationError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServiceUnavailable,
)
from vocable.providers.vendor_errors import (
    close_error,
    map_error,
    mapped_stream,
    redact,
    retry_after_s,
    status_error,
)


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
    assert isinstance(error, RateLimited) and "slow down" in str(error) and error.retry_after_s == 3.0
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


@pytest.mark.parametrize(
    ("headers", "detail", "expected"),
    [
        ({"retry-after": "3"}, "", 3.0),
        ({"Retry-After": "1.5"}, "", 1.5),  # a plain dict, whatever the case
        (httpx.Headers({"Retry-After": "2"}), "", 2.0),
        ({"retry-after-ms": "450"}, "", 0.45),
        ({"retry-after": "-4"}, "", 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, "", 0.0),  # a date in the past: now
        ({}, "Rate limit reached for model on tokens per minute (TPM). Please try again in 7.66s.", 7.66),
        (None, "Please try again in 1m2.5s. Visit https://console.groq.com/docs/rate-limits", 62.5),
        (None, "please try again in 450ms", 0.45),
        ({"retry-after": "later"}, "try again in 2s", 2.0),  # an unreadable header: the text still says
        ({}, "Please try again.", None),
        (None, "", None),
    ],
)
def test_retry_after_from_headers_and_vendor_text(headers: Any, detail: str, expected: float | None) -> None:
    got = retry_after_s(headers, detail)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_groq_shaped_429_carries_retry_after() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/openai/v1/chat/completions")

    class APIStatusError(Exception):  # the groq SDK's shape: status_code, body, response
        def __init__(self) -> None:
            self.status_code = 429
            self.response = httpx.Response(429, headers={"retry-after": "4"}, request=request)
            self.body = {"error": {"message": "Please try again in 7.66s.", "type": "tokens"}}

    error = map_error(APIStatusError(), provider="groq")
    assert isinstance(error, RateLimited) and error.retry_after_s == 4.0  # the header wins over the text
    assert status_error(503, provider="x", retry_after_s=9).retry_after_s == 9


def _vendor_stream(opened: list[int], body: Any) -> AsyncIterator[str]:
    """One attempt of a vendor stream: ``body`` is an async generator function run under the mapping."""
    opened.append(1)
    return mapped_stream(body(), provider="x")


async def test_the_engine_never_restarts_after_yielding() -> None:
    opened: list[int] = []

    async def body() -> AsyncIterator[str]:
        yield "first"
        raise httpx.RemoteProtocolError("dropped")

    received: list[str] = []
    with pytest.raises(ServiceUnavailable) as info:
        async for item in engine_stream(lambda: _vendor_stream(opened, body), retries=2):
            received.append(item)
    assert received == ["first"] and len(opened) == 1
    assert info.value.__cause__ is None


async def test_the_engine_retries_before_output_and_never_retries_auth() -> None:
    failures = [status_error(503, provider="x"), status_error(429, provider="x")]
    opened: list[int] = []

    async def body() -> AsyncIterator[str]:
        if failures:
            raise failures.pop(0)
        yield "ok"

    assert await through_engine(lambda: _vendor_stream(opened, body), retries=2) == ["ok"] and len(opened) == 3

    refused: list[int] = []

    async def unauthorized() -> AsyncIterator[str]:
        raise status_error(401, provider="x")
        yield "never"

    with pytest.raises(AuthenticationError):
        await through_engine(lambda: _vendor_stream(refused, unauthorized), retries=2)
    assert len(refused) == 1


async def test_mapped_stream_idle_timeout() -> None:
    async def stream() -> AsyncIterator[str]:
        await asyncio.sleep(10)
        yield "never"

    with pytest.raises(ProviderTimeout):
        await anext(mapped_stream(stream(), provider="x", idle_timeout_s=0.05))


def test_backoff_is_bounded_and_honours_retry_after() -> None:
    policy = RetryPolicy(retries=5, base_delay_s=0.5, max_delay_s=2.0)
    assert all(0.25 <= policy.delay(n) <= 2.0 for n in range(10))
    limited = status_error(429, provider="x", retry_after_s=1.5)
    assert policy.delay(0, limited) >= 1.5
    assert RetryPolicy(max_delay_s=2.0).delay(0, status_error(429, provider="x", retry_after_s=60)) <= 2.0


def test_max_retries_is_refused_naming_its_replacement() -> None:
    from vocable.providers.groq import GroqSettings

    with pytest.raises(ValidationError, match="write retries: N .* beside provider:"):
        GroqSettings(api_key="sk-secret-value-1", max_retries=2)  # type: ignore[call-arg]


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
