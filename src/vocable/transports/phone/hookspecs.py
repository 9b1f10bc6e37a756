"""The phone transports' own hook: DTMF digits, for plugins (added to an engine's plugin manager by them).

```python
from vocable import hookimpl

@hookimpl
def phone_dtmf(session, call, digit):
    if digit == "0":
        return session.say("Transferring you to a person.")   # an awaitable is awaited
```
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import pluggy
import structlog

if TYPE_CHECKING:
    from vocable.engine.session import Session
    from vocable.plugins.manager import PluginHost
    from vocable.transports.phone.call import PhoneCall

hookspec = pluggy.HookspecMarker("vocable")
log = structlog.get_logger("vocable.phone")


@hookspec
def phone_dtmf(session: Session, call: PhoneCall, digit: str) -> Any:
    """The caller pressed a key (``0``-``9``, ``*``, ``#``, ``A``-``D``) during a phone call.

    ``call.digits`` holds every digit so far. May return an awaitable, which is awaited; one failing plugin
    is logged and does not affect the others or the call.
    """


def add_to(host: PluginHost) -> None:
    """Declare the hook on ``host`` (once, however many phone transports an engine runs)."""
    caller = getattr(host.pm.hook, "phone_dtmf", None)
    if caller is None or not caller.has_spec():
        host.pm.add_hookspecs(__import__(__name__, fromlist=["phone_dtmf"]))


async def notify_dtmf(host: PluginHost, **kwargs: Any) -> None:
    """Call every ``phone_dtmf`` implementation in pluggy's order, awaiting each; a failure stays local."""
    for impl in reversed(host.pm.hook.phone_dtmf.get_hookimpls()):
        try:
            result = impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.exception("observer_failed", hook="phone_dtmf", plugin=impl.plugin_name, error=str(exc))
