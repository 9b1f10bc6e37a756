"""Phone calls: the Twilio, Telnyx and Plivo media-stream transports (docs/telephony.md)."""

from __future__ import annotations

from collections.abc import Callable

from vocable.plugins.hookspecs import hookimpl
from vocable.transports.phone.call import PhoneCall, current_call, mask_number

__all__ = ["PhoneCall", "current_call", "mask_number"]


@hookimpl
def register_transports(register: Callable[[type], None]) -> None:
    from vocable.transports.phone.plivo import PlivoTransport
    from vocable.transports.phone.telnyx import TelnyxTransport
    from vocable.transports.phone.twilio import TwilioTransport

    register(TwilioTransport)
    register(TelnyxTransport)
    register(PlivoTransport)
