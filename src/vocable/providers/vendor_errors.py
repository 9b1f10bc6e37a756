"""Vendor failures mapped once, for every hosted provider. Providers map; the engine retries.

Each vendor SDK raises its own exceptions (Fern's ``ApiError``, Groq's ``APIStatusError``, httpx transport
errors, websockets handshake and close errors). The engine must not care which vendor failed, only how, so
``map_error`` turns all of them into the classes of ``vocable.providers.errors``:

- 401/403 -> ``AuthenticationError`` (never retried: a bad key must not become a reconnect loop);
- 429 -> ``RateLimited``; 5xx, refused or dropped connections -> ``ServiceUnavailable``;
- timeouts (ours or the SDK's) -> ``ProviderTimeout``; other 4xx -> ``ConfigurationError``.

A vendor's ``Retry-After`` (header, ``retry-after-ms``, or "try again in 7.5s" in its error text) becomes the
error's ``retry_after_s``. Nothing here retries: ``mapped_stream`` runs one attempt, and the engine's policy
(``vocable.engine.retry``, applied by the fallback runner before a stream's first output) decides the rest,
so a failure is never retried by two layers at once.

The mapping reads attributes (``status_code``, ``response.status_code``, close codes) and class names rather
than importing SDKs, so it works whichever subset of vendor packages is installed.

Messages are built from status codes, close codes and short vendor error text only, and every configured
secret is scrubbed from them. Mapped errors are raised ``from None``: an SDK exception's own text may carry
request headers, so it is never chained into a traceback.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from email.utils import parsedate_to_datetime
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
    retry_after_s: float | None = None,
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
    error.retry_after_s = retry_after_s
    error.status = status  # type: ignore[attr-defined]  # for logs; not part of the ProviderError interface
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


_TRY_AGAIN_IN = re.compile(r"try again in\s+(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)(ms|s))?", re.IGNORECASE)


def _header(headers: Any, name: str) -> Any:
    """A header from httpx, websockets or a plain dict (whatever its case)."""
    try:
        value = headers.get(name) if headers is not None else None
    except (AttributeError, TypeError):
        return None
    if value is None and isinstance(headers, Mapping):
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return value


def retry_after_s(headers: Any = None, detail: str = "") -> float | None:
    """How long the vendor asked us to wait, in seconds, or None if it did not say.

    ``Retry-After`` in seconds or as an HTTP date, ``retry-after-ms`` (OpenAI-style APIs), else the
    "Please try again in 1m2.5s" / "in 450ms" of Groq's error text.
    """
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = _header(headers, name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except (TypeError, ValueError):
            pass
        try:
            return max(0.0, parsedate_to_datetime(str(value)).timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
    match = _TRY_AGAIN_IN.search(detail or "")
    if match and any(match.groups()):
        hours, minutes, amount, unit = match.groups()
        seconds = float(amount or 0) * (0.001 if unit == "ms" else 1.0)
        return int(hours or 0) * 3600 + int(minutes or 0) * 60 + seconds
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
            detail = _detail_from_body(getattr(response, "body", b"") or b"")
            return status_error(
                status,
                provider=provider,
                detail=detail,
                retry_after_s=retry_after_s(getattr(response, "headers", None), detail),
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
        detail = _detail_from_body(getattr(exc, "body", None))
        return status_error(
            status,
            provider=provider,
            detail=detail,
            retry_after_s=retry_after_s(headers, detail),
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


# -------------------------------------------------------------------------------------------- one attempt


async def mapped_stream(
    stream: AsyncIterator[T],
    *,
    provider: str,
    idle_timeout_s: float | None = None,
    secrets: Iterable[str] = (),
    passthrough: tuple[type[Exception], ...] = (),
) -> AsyncIterator[T]:
    """Iterate one attempt's ``stream``, every failure raised as a mapped ``ProviderError``; never retried.

    ``idle_timeout_s`` bounds the wait for each item, so a vendor that stops answering becomes
    ``ProviderTimeout`` rather than a stalled turn. Exceptions of the ``passthrough`` types are not the
    vendor's (say, the text source failed): they propagate unchanged. The stream is closed however it ends,
    and when the consumer stops early. Whether to try again is the engine's decision (before the first
    output only: after it, a restart would repeat what the user heard).
    """
    secrets = tuple(secrets)
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
        if yielded and error.retryable:
            log.warning("vendor.stream_failed_midway", provider=provider, error=error.code)
        raise error from None
    finally:
        await _aclose(stream)


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
