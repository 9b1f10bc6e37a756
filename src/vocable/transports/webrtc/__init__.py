"""The WebRTC transport (aiortc): Opus audio both ways, trickle ICE and events over a WebSocket or a data channel.

Enable it with ``transports: {webrtc: {...}}``; it needs ``pip install 'vocable[webrtc]'``. aiortc is
imported when the transport is built, not when the plugin loads, so ``vocable plugins`` works without it.
See docs/webrtc.md.
"""

from __future__ import annotations

from collections.abc import Callable

from vocable.plugins.hookspecs import hookimpl
from vocable.transports.webrtc.settings import IceServer, WebRTCSettings
from vocable.transports.webrtc.transport import WebRTCTransport

__all__ = ["IceServer", "WebRTCSettings", "WebRTCTransport"]


@hookimpl
def register_transports(register: Callable[[type], None]) -> None:
    register(WebRTCTransport)
