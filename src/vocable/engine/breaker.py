"""A circuit breaker per provider of a chain, so that a dead vendor does not add its timeout to every turn.

Closed, it lets every request through and counts failed attempts in a row. After ``failures`` of them it
opens: the fallback runner skips the provider (straight to the next one of the chain) for ``cooldown_s``.
Then it is half-open: the next request is the probe, alone (others still skip the provider while it runs);
its success closes the breaker, its failure opens it for another ``cooldown_s``.

A breaker belongs to its ``LiveProvider``, which the engine builds once, so its state is per engine (per
process) and shared by every session. ``clock`` is a plain callable so tests can drive time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vocable.providers.errors import CapacityExceeded, ProviderError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
PASS, PROBE = "pass", "probe"  # what ``admit`` grants: an ordinary request, or the one probe of a half-open breaker
BREAKER_KINDS = ("llm", "tts")  # the chains run by the fallback runner, request by request


class Breaker:
    __slots__ = ("failures", "cooldown_s", "clock", "skips", "last_error", "_state", "_count", "_opened_at",
                 "_probing")

    def __init__(self, failures: int = 3, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures  # 0: never opens
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.skips = 0  # requests that skipped the provider because the breaker was open
        self.last_error: BaseException | None = None
        self._state = CLOSED
        self._count = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (the cooldown is over: the next request probes)."""
        if self._state == OPEN and self.clock() >= self._opened_at + self.cooldown_s:
            return HALF_OPEN
        return self._state

    def admit(self) -> str | None:
        """``PASS`` or ``PROBE`` if a request may go to the provider now; None (and one more skip) if not."""
        if self._state == CLOSED:
            return PASS
        if self._probing or self.clock() < self._opened_at + self.cooldown_s:
            self.skips += 1
            return None
        self._state, self._probing = HALF_OPEN, True
        return PROBE

    def succeeded(self) -> bool:
        """The provider produced output (or ended cleanly). True if that closed the breaker."""
        reopened = self._state != CLOSED
        self._state, self._count, self._probing = CLOSED, 0, False
        return reopened

    def failed(self, error: BaseException, ticket: str | None) -> bool:
        """An attempt admitted with ``ticket`` failed before any output. True if that opened the breaker.

        A local model refusing work because its queue is full (``CapacityExceeded``) is busy, not broken,
        and costs no waiting: it counts neither way.
        """
        if isinstance(error, CapacityExceeded):
            self.release(ticket)
            return False
        self.last_error = error
        if self._state == CLOSED:
            self._count += 1
            if not self.failures or self._count < self.failures:
                return False
        elif ticket != PROBE:
            return False  # already open; an attempt begun before it opened changes nothing
        self._state, self._opened_at, self._probing = OPEN, self.clock(), False
        return True

    def release(self, ticket: str | None) -> None:
        """The request gave up without an outcome (cancelled): if it was the probe, the next request probes."""
        if ticket == PROBE:
            self._probing = False


class CircuitOpen(ProviderError):
    """The provider was skipped: its breaker is open. The code is that of the failure that opened it."""

    code = "circuit_open"

    def __init__(self, breaker: Breaker, *, provider: str) -> None:
        last = breaker.last_error
        cause = f" (the last: {Exception.__str__(last) or type(last).__name__})" if last is not None else ""
        super().__init__(f"skipped: circuit open after {breaker.failures} failures in a row{cause}", provider=provider)
        if isinstance(last, ProviderError):
            self.code = last.code


def breaker_board(chains: Mapping[str, Iterable[Any]]) -> dict[str, dict[str, Breaker]]:
    """``{kind: {provider: breaker}}`` for the chains the fallback runner uses (``llm``, ``tts``).

    A provider named twice in one chain is ``name``, then ``name#2``...
    """
    board: dict[str, dict[str, Breaker]] = {}
    for kind in BREAKER_KINDS:
        named: dict[str, Breaker] = {}
        for live in chains.get(kind, ()):
            key, n = live.name, 1
            while key in named:
                n += 1
                key = f"{live.name}#{n}"
            named[key] = live.breaker
        board[kind] = named
    return board
