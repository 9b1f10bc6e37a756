"""Choose the host addresses aioice offers as ICE candidates, per peer connection.

aioice has no option for this: ``Connection.gather_candidates`` calls the module function
``aioice.ice.get_host_addresses``, which lists every interface and always leaves out 127.0.0.1. We replace
that function once with a dispatcher that reads a context variable: inside ``pinned_host_addresses([...])``
(and in the tasks started there, which copy the context, as aiortc's gathering does) it returns the pinned
list; everywhere else it calls the function it replaced, so other aiortc users in the process see no change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import aioice.ice

_pinned: ContextVar[tuple[str, ...] | None] = ContextVar("vocable_webrtc_host_addresses", default=None)


class _Dispatcher:
    """Stands in for ``aioice.ice.get_host_addresses``; keeps the original to fall back on."""

    def __init__(self, original: Callable[..., list[str]]) -> None:
        self.original = original

    def __call__(self, use_ipv4: bool, use_ipv6: bool) -> list[str]:
        pinned = _pinned.get()
        if pinned is None:
            return self.original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return [a for a in pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def _install() -> None:
    """Idempotent; re-installs if someone (a test's monkeypatch) replaced the dispatcher meanwhile."""
    current = aioice.ice.get_host_addresses
    if not isinstance(current, _Dispatcher):
        aioice.ice.get_host_addresses = _Dispatcher(current)  # type: ignore[assignment]


@contextmanager
def pinned_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Within this block, aiortc peer connections gather host candidates on ``addresses`` only.

    Wrap ``setLocalDescription`` (where aiortc gathers). An empty sequence means: no pinning.
    """
    if not addresses:
        yield
        return
    _install()
    token = _pinned.set(tuple(addresses))
    try:
        yield
    finally:
        _pinned.reset(token)
