"""The engine's one retry policy: exponential backoff with jitter, honouring a vendor's ``Retry-After``.

Providers only map their failures to ``ProviderError``s (``retryable``, plus ``retry_after_s`` when the
vendor said how long to wait). The fallback runner (``vocable.engine.fallback``) decides whether and when to
try again, per provider of a chain (``retries`` and ``retry_delay_s`` beside ``provider:``), and only before
a stream's first output: a restart after that would repeat what the user heard. Deepgram's live STT spaces
its reconnects with the same policy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from vocable.providers.errors import ProviderError

DEFAULT_RETRY_DELAY_S = 0.25
MAX_RETRY_DELAY_S = 2.0  # a voice turn cannot wait longer than this for one retry


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` more attempts of a retryable failure, ``base_delay_s * 2**attempt`` apart, capped.

    Each delay is scaled by a random factor in [0.5, 1.0] so that sessions hit by the same outage do not
    retry in lockstep. A vendor's ``Retry-After`` makes the wait at least that long, up to ``max_delay_s``
    (never less than ``base_delay_s``).
    """

    retries: int = 0
    base_delay_s: float = DEFAULT_RETRY_DELAY_S
    max_delay_s: float = MAX_RETRY_DELAY_S
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)  # in [0, 1)

    def allows(self, error: BaseException, attempt: int) -> bool:
        """Whether the failure of attempt ``attempt`` (0: the first) may be tried again."""
        return isinstance(error, ProviderError) and error.retryable and attempt < self.retries

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after the failure of attempt ``attempt`` before the next one."""
        cap = max(self.max_delay_s, self.base_delay_s)
        backoff = min(cap, self.base_delay_s * 2**attempt) * (0.5 + 0.5 * self.jitter())
        retry_after = getattr(error, "retry_after_s", None)
        if isinstance(retry_after, (int, float)) and retry_after > 0:
            backoff = max(backoff, min(float(retry_after), cap))
        return backoff
