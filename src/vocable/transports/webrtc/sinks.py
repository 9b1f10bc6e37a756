"""Where a peer's JSON events go: its signalling socket, its data channel, or a bounded backlog.

With ``POST /webrtc/offer`` the session starts before the client has opened anything to hear it on, so
events wait in a backlog (bounded: the oldest go first) and are replayed to the first socket that attaches,
after a fresh ``ready``. A data channel gets events too once the client opens one. Sends to the socket are
serialised by a lock so the attach replay and live events never interleave, and each send is bounded in
time: a client that stops reading loses its socket, not the server's memory.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from aiortc import RTCDataChannel
from starlette.websockets import WebSocket
from structlog.typing import FilteringBoundLogger

BACKLOG_EVENTS = 256  # events kept for a client whose socket or data channel is not open yet
CHANNEL_BUFFER_BYTES = 256 * 1024  # past this a data channel is not keeping up: events skip it
SEND_TIMEOUT_S = 5.0


class EventSinks:
    def __init__(self, log: FilteringBoundLogger) -> None:
        self.log = log
        self.socket: WebSocket | None = None
        self.socket_lost_at: float | None = None
        self.channel: RTCDataChannel | None = None
        self._lock = asyncio.Lock()
        self._backlog: deque[dict[str, Any]] = deque(maxlen=BACKLOG_EVENTS)

    async def attach(self, websocket: WebSocket, first: list[dict[str, Any]], now: float) -> bool:
        """Make ``websocket`` the socket: ``first`` (candidates, ``ready``, ``state``), then the backlog.

        False if another socket is attached, or if this one fails while we write to it (which then counts
        as a lost socket, so the disconnect timeout applies).
        """
        async with self._lock:
            if self.socket is not None:
                return False
            replay = [m for m in self._backlog if m.get("type") not in ("ready", "state")]
            self._backlog.clear()
            for message in [*first, *replay]:
                if not await send_socket(websocket, json.dumps(message)):
                    self.socket_lost_at = self.socket_lost_at or now
                    return False
            self.socket = websocket
            self.socket_lost_at = None
        return True

    def detach(self, websocket: WebSocket, now: float) -> bool:
        """Forget ``websocket`` if it is ours; returns whether it was."""
        if self.socket is not websocket:
            return False
        self.socket = None
        self.socket_lost_at = now
        return True

    async def send(self, message: dict[str, Any], now: float) -> None:
        """To every open sink; into the backlog when none is open."""
        text = json.dumps(message)
        delivered = self.send_channel(text)
        async with self._lock:
            socket = self.socket
            if socket is not None:
                if await send_socket(socket, text):
                    delivered = True
                else:
                    self.detach(socket, now)
        if not delivered:
            self._backlog.append(message)

    def send_channel(self, text: str) -> bool:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return False
        if channel.bufferedAmount > CHANNEL_BUFFER_BYTES:
            self.log.warning("webrtc_channel_behind", buffered=channel.bufferedAmount)
            return False
        channel.send(text)
        return True

    async def close(self, code: int, reason: str, last: dict[str, Any] | None = None) -> None:
        """Send ``last`` (a fatal error) if given, then close the socket with ``code``; drop the backlog."""
        socket, self.socket = self.socket, None
        self._backlog.clear()
        if socket is None:
            return
        if last is not None:
            await send_socket(socket, json.dumps(last))
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await socket.close(code, reason)
        except Exception:  # noqa: BLE001 - already closed by the client, or it stopped reading
            self.log.debug("webrtc_socket_close_skipped", code=code)


async def send_socket(socket: WebSocket, text: str) -> bool:
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await socket.send_text(text)
    except Exception:  # noqa: BLE001 - gone, closing or not reading: its own handler notices and detaches
        return False
    return True
