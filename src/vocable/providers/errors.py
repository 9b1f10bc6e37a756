"""Provider errors, mapped once for every provider.

The engine decides what to do from the class alone: ``AuthenticationError`` and ``ConfigurationError``
are never retried; ``RateLimited``, ``ServiceUnavailable`` and ``ProviderTimeout`` are retried a bounded
number of times with backoff (``vocable.engine.retry``), then the next provider of a fallback chain takes
over. Providers only raise these; they never retry themselves. ``retry_after_s`` carries a vendor's own
``Retry-After`` when it gave one. Messages never carry secrets: providers build them from status codes and
vendor error text only.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every provider failure. ``retryable`` tells the fallback runner whether to try again."""

    retryable: bool = False
    code: str = "provider_error"

    def __init__(self, message: str, *, provider: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.retry_after_s = retry_after_s  # how long the vendor asked us to wait before trying again

    def __str__(self) -> str:
        base = super().__str__()
        return f"{self.provider}: {base}" if self.provider else base


class ProviderUnavailable(ProviderError):
    """The provider's package is not installed or its model cannot be found."""

    code = "provider_unavailable"


class ConfigurationError(ProviderError):
    code = "configuration_error"


class AuthenticationError(ProviderError):
    """Bad or missing credentials: fatal at once, never retried."""

    code = "authentication_failed"


class RateLimited(ProviderError):
    retryable = True
    code = "rate_limited"


class ServiceUnavailable(ProviderError):
    """5xx, refused or dropped connections."""

    retryable = True
    code = "service_unavailable"


class ProviderTimeout(ProviderError):
    retryable = True
    code = "timeout"


class CapacityExceeded(ProviderError):
    """A local model's queue is full: refused at once rather than stalling the session."""

    retryable = True
    code = "capacity_exceeded"
