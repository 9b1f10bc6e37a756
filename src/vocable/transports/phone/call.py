"""One phone call as plugins and tools see it: who called, the digits pressed, and a way to hang up.

The phone transports set ``current_call()`` for the whole session: every task the session starts (its STT
task, each reply, each tool call) inherits it, so a tool handler that runs during a phone call finds the
call with no argument passed, and ``None`` elsewhere (a WebSocket or Python session).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_CURRENT: contextvars.ContextVar[PhoneCall | None] = contextvars.ContextVar("vocable_phone_call", default=None)


def current_call() -> PhoneCall | None:
    """The phone call of the session this code runs for (in a tool handler, an observer), or None."""
    return _CURRENT.get()


def mask_number(number: str | None) -> str | None:
    """A phone number with all but its last 4 digits hidden: ``+14155550123`` -> ``*******0123``."""
    if not number:
        return number
    digits = sum(c.isdigit() for c in number)
    if digits <= 4:
        return "*" * len(number)
    keep, out = 4, []
    for c in reversed(number):
        if c.isdigit() and keep > 0:
            out.append(c)
            keep -= 1
        else:
            out.append("*" if c.isalnum() or c == "+" else c)
    return "".join(reversed(out))


@dataclass(eq=False)
class PhoneCall:
    """A call on one carrier: its ids, numbers and the parameters the webhook passed to the stream."""

    carrier: str  # "twilio", "telnyx", "plivo"
    call_id: str  # Twilio's CallSid, Telnyx's call_control_id, Plivo's CallUUID
    stream_id: str
    caller: str | None = None  # the From number
    callee: str | None = None  # the To number
    parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "mulaw"
    digits: list[str] = field(default_factory=list)  # every DTMF digit pressed, in order
    ending: bool = False  # ``end_call`` was asked: hang up once the reply in progress has been heard
    ended: bool = False
    _hangup: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    _digit_waiters: list[asyncio.Future[None]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """What ``/sessions`` shows: the numbers masked to their last 4 digits."""
        return {"carrier": self.carrier, "call_id": self.call_id, "caller": mask_number(self.caller),
                "callee": mask_number(self.callee)}

    def add_digit(self, digit: str) -> None:
        self.digits.append(digit)
        for waiter in self._digit_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._digit_waiters.clear()

    async def wait_digits(self, count: int, timeout_s: float = 10.0, *, since: int = 0) -> str:
        """The digits pressed after the first ``since``, once there are ``count`` of them or ``#`` ends them
        (whatever has come when ``timeout_s`` runs out): what a tool collecting a PIN awaits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            got = self.digits[since:]
            if len(got) >= count or "#" in got or loop.time() >= deadline:
                return "".join(got).split("#", 1)[0]
            waiter: asyncio.Future[None] = loop.create_future()
            self._digit_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, deadline - loop.time())
            except TimeoutError:
                pass

    async def hangup(self) -> None:
        """End the call through the carrier's REST API (once)."""
        if self.ended or self._hangup is None:
            return
        self.ended = True
        await self._hangup()


def bind(call: PhoneCall) -> contextvars.Token[PhoneCall | None]:
    return _CURRENT.set(call)


def unbind(token: contextvars.Token[PhoneCall | None]) -> None:
    _CURRENT.reset(token)
