"""Vendor failures mapped once, and the one bounded retry loop every hosted provider uses.

Each vendor SDK raises its own exceptions (Fern's ``ApiError``, Groq's ``APIStatusError``, httpx transport
errors, websockets handshake and close errors). The engine must not care which vendor failed, only how, so
``map_error`` turns all of them into the classes of ``vocable.providers.errors``:

- 401/403 -> ``AuthenticationError`` (never retried: a bad key must not become a reconnect loop);
- 429 -> ``RateLimited``; 5xx, refused or dropped connections -> ``ServiceUnavailable``;
- timeouts (ours or the SDK's) -> ``ProviderTimeout``; other 4xx -> ``ConfigurationError``.

The mapping reads attributes (``status_code``, ``response.status_code``, close codes) and class names rather
than importing SDKs, so it works whichever subset of vendor packages is installed.

Messages are built from status codes, close codes and short vendor error text only, and every configured
secret is scrubbed from them. Mapped errors are raised ``from None``: an SDK exception's own text may carry
request headers, so it is never chained into a traceback.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from vocable.providers.errors import (
    AuthenticationError,
    ConfigurationError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServiceUnavailable,
)

log = structlog.get_logger("vocable.providers")

T = TypeVar("T")

_MAX_DETAIL = 200


# -------------------------------------------------------------------------------------------- mapping


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove every secret from ``text`` and cut it short: vendor error bodies are echoed to users."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _detail_from_body(body: Any) -> str:
    """The human part of a vendor error body: ``{"error": {"message"}}``, ``{"detail": {...}}``, ``err_msg``..."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        return body
    if isinstance(body, Mapping):
        for key in ("message", "err_msg", "description", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, Mapping):
                inner = _detail_from_body(value)
                if inner:
                    return inner
    return ""


def status_error(
    status: int,
    *,
    provider: str,
    detail: str = "",
    retry_after: float | None = None,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """Map an HTTP status (of a request or of a refused websocket upgrade) to a provider error."""
    detail = redact(detail, secrets)
    suffix = f": {detail}" if detail else ""
    error: ProviderError
    if status in (401, 403):
        error = AuthenticationError(
            f"credentials rejected (HTTP {status}){suffix}; check the api_key", provider=provider
        )
    elif status == 429:
        error = RateLimited(f"rate limited (HTTP 429){suffix}", provider=provider)
    elif status in (408, 504):
        error = ProviderTimeout(f"timed out (HTTP {status}){suffix}", provider=provider)
    elif status >= 500:
        error = ServiceUnavailable(f"service error (HTTP {status}){suffix}", provider=provider)
    else:
        error = ConfigurationError(f"request refused (HTTP {status}){suffix}", provider=provider)
    # Extra facts for the retry loop and for logs; not part of the ProviderError interface.
    error.__dict__.update(status=status, retry_after=retry_after)
    return error


def close_error(code: int | None, reason: str = "", *, provider: str, secrets: Iterable[str] = ()) -> ProviderError:
    """Map a websocket close (code and reason) to a provider error.

    1006 (no close frame) is a dropped connection; 1008 (policy violation) is how vendors close on a bad key
    or quota; 1013 (try again later) is a rate limit; anything else that is not a normal close is a service
    fault. Deepgram closes idle streams with 1011 ``NET-0001``.
    """
    reason = redact(reason or "", secrets)
    text = f"websocket closed ({code}{', ' + reason if reason else ''})"
    lowered = reason.lower()
    if code == 1008 and any(w in lowered for w in ("auth", "api key", "api_key", "credential", "unauthori")):
        return AuthenticationError(text, provider=provider)
    if code == 1008 and ("quota" in lowered or "limit" in lowered):
        return RateLimited(text, provider=provider)
    if code == 1013:
        return RateLimited(text, provider=provider)
    if code == 1008:
        return ConfigurationError(text, provider=provider)
    return ServiceUnavailable(text, provider=provider)


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def map_error(exc: BaseException, *, provider: str, secrets: Iterable[str] = ()) -> ProviderError:
    """Turn any exception raised while talking to a vendor into a ``ProviderError`` (idempotent)."""
    if isinstance(exc, ProviderError):
        return exc
    names = _class_names(exc)
    secrets = tuple(secrets)

    # Timeouts first: httpx's TimeoutException and Groq's APITimeoutError are also "connection" errors.
    if isinstance(exc, TimeoutError) or names & {"TimeoutException", "APITimeoutError"}:
        return ProviderTimeout(f"no answer in time ({type(exc).__name__})", provider=provider)

    # A refused websocket upgrade: websockets' InvalidStatus (new) / InvalidStatusCode (legacy).
    response = getattr(exc, "response", None)
    if names & {"InvalidStatus", "InvalidStatusCode"}:
        status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
        if isinstance(status, int):
            body = getattr(response, "body", b"") or b""
            return status_error(
                status,
                provider=provider,
                detail=_detail_from_body(body),
                retry_after=_retry_after(getattr(response, "headers", None)),
                secrets=secrets,
            )

    # Websocket closed: ConnectionClosed carries the received close frame (None when the TCP link dropped).
    if "ConnectionClosed" in names:
        rcvd = getattr(exc, "rcvd", None)
        code = getattr(rcvd, "code", None) if rcvd is not None else 1006
        reason = getattr(rcvd, "reason", "") if rcvd is not None else "connection dropped"
        return close_error(code, reason, provider=provider, secrets=secrets)

    # SDK HTTP errors: Fern's ApiError (status_code, body, headers), Groq's APIStatusError (status_code, body).
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        headers = getattr(exc, "headers", None) or getattr(getattr(exc, "response", None), "headers", None)
        return status_error(
            status,
            provider=provider,
            detail=_detail_from_body(getattr(exc, "body", None)),
            retry_after=_retry_after(headers),
            secrets=secrets,
        )

    # Transport failures: refused, reset, truncated bodies, bad handshakes.
    if isinstance(exc, (OSError, EOFError)) or names & {
        "TransportError",  # httpx: ConnectError, ReadError, RemoteProtocolError...
        "APIConnectionError",  # groq
        "InvalidHandshake",  # websockets
        "InvalidMessage",
        "WebSocketException",
    }:
        return ServiceUnavailable(f"connection failed ({type(exc).__name__})", provider=provider)

    # Not a vendor failure we know: most likely a bug. Keep the traceback for whoever debugs it.
    log.error("vendor.unexpected_error", provider=provider, error=type(exc).__name__, exc_info=exc)
    return ProviderError(f"unexpected failure ({type(exc).__name__})", provider=provider)


# -------------------------------------------------------------------------------------------- retrying


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times a retryable failure is tried again, and how long to wait in between.

    Exponential backoff with jitter, capped: ``base_delay_s * 2**n`` scaled by a random factor in
    [0.5, 1.0] so that many sessions hitting the same outage do not retry in lockstep. A 429's
    ``Retry-After`` is honoured up to ``max_delay_s``.
    """

    retries: int = 2
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0

    def delay(self, attempt: int, error: ProviderError | None = None) -> float:
        backoff = min(self.max_delay_s, self.base_delay_s * (2**attempt)) * random.uniform(0.5, 1.0)
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > 0:
            backoff = max(backoff, min(float(retry_after), self.max_delay_s))
        return backoff


def should_retry(error: ProviderError, attempt: int, policy: RetryPolicy) -> bool:
    """Retry only what may succeed later, and only a bounded number of times."""
    return error.retryable and attempt < policy.retries


async def retry_call(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    provider: str,
    secrets: Iterable[str] = (),
) -> T:
    """Await ``call()``, retrying retryable failures with backoff; raise the mapped error at the end."""
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            error = map_error(exc, provider=provider, secrets=secrets)
            if not should_retry(error, attempt, policy):
                raise error from None
        await _backoff(error, attempt, policy, provider)
        attempt += 1


async def retry_stream(
    open_stream: Callable[[], AsyncIterator[T]],
    *,
    policy: RetryPolicy,
    provider: str,
    idle_timeout_s: float | None = None,
    secrets: Iterable[str] = (),
    passthrough: tuple[type[Exception], ...] = (),
) -> AsyncIterator[T]:
    """Iterate a fresh stream from ``open_stream()``, retrying only while nothing has been yielded.

    Once an item has gone out (audio played, text shown) a failure is raised instead of restarting,
    because a restart would repeat what the user already heard. ``idle_timeout_s`` bounds the wait for
    each item, so a vendor that stops answering becomes ``ProviderTimeout`` rather than a stalled turn.
    Exceptions of the ``passthrough`` types are not the vendor's (say, the text source failed): they
    propagate unchanged and are never retried. Each attempt's stream is closed before the next one
    opens, and when the consumer stops early.
    """
    secrets = tuple(secrets)
    attempt = 0
    while True:
        stream = open_stream()
        yielded = False
        try:
            while True:
                try:
                    async with asyncio.timeout(idle_timeout_s):
                        item = await anext(stream)
                except StopAsyncIteration:
                    return
                yielded = True
                yield item
        except passthrough:
            raise
        except Exception as exc:
            error = map_error(exc, provider=provider, secrets=secrets)
            if yielded or not should_retry(error, attempt, policy):
                if yielded and error.retryable:
                    log.warning("vendor.stream_failed_midway", provider=provider, error=error.code)
                raise error from None
        finally:
            await _aclose(stream)
        await _backoff(error, attempt, policy, provider)
        attempt += 1


async def _backoff(error: ProviderError, attempt: int, policy: RetryPolicy, provider: str) -> None:
    delay = policy.delay(attempt, error)
    log.info("vendor.retry", provider=provider, error=error.code, attempt=attempt + 1, delay_s=round(delay, 3))
    await asyncio.sleep(delay)


async def _aclose(stream: AsyncIterator[Any]) -> None:
    """Close an async generator or SDK stream, whichever spelling it has; never raise while cleaning up."""
    close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
    if close is None:
        return
    try:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    except Exception:  # noqa: BLE001 - cleanup of an already failed stream
        log.debug("vendor.close_failed", exc_info=False)
