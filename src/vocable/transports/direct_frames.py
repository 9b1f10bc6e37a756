"""uvicorn's WebSocket protocol plus one ASGI extension: audio frames in and out without the ASGI queue.

Under plain ASGI every message a client sends becomes a dict on an ``asyncio.Queue``; uvicorn stops reading
the socket until the app's ``receive`` has taken it (two libuv calls) and the app's reader task wakes to take
it. Every message the app sends is a coroutine through ``send``. A voice session carries a 20 ms frame each
way fifty times a second, so at a few hundred sessions this hand-off costs more than vocable's own work on
the frame.

``DirectFramesProtocol`` is uvicorn's websockets-sansio protocol, unchanged but for one extension in the
scope, ``scope["extensions"]["vocable.direct_frames"]``: a ``DirectFrames`` object through which the app may

- take binary messages by a synchronous callback (``receiver``), called from the protocol as the frame is
  parsed, but only while nothing is queued for ``receive`` (so nothing is reordered); the callback may
  decline a frame (it then goes the ASGI way) or return an awaitable, which reaches ``receive`` as a
  ``vocable.direct_frames.await`` message to be awaited before the next message, in order;
- take whole text messages the same way (``text_receiver``, given the raw UTF-8): what it declines goes to
  the protocol library, which checks it as before (the phone transports hear their carriers' media here);
- send a message synchronously (``send``) when the socket can take it now; when it cannot (write buffer
  full, closing, not yet open), ``send`` returns False and the app uses ASGI ``send`` as usual.

It also parses the client's plain binary frames itself (``data_received``): the protocol library's
generator-based parser costs more per 20 ms frame than hearing it (a fifth of the server's CPU at a few
hundred sessions). A complete, final, masked binary frame is unmasked (the library's C ``apply_mask``) and
handed on here; every other frame (text, ping, close, fragments, reserved bits, anything too large or
unmasked) is given to the library whole, so its parser is always at a frame boundary and decides as before.

The handshake, text messages, pings, close, backpressure and errors stay uvicorn's. An app that does not
use the extension, or runs under a server that does not offer it, sees plain ASGI (vocable's WebSocket
transport works either way). ``vocable serve`` runs uvicorn with this protocol (``SERVE_OPTIONS``).

It relies on names uvicorn and the websockets library do not document (``NEEDS``). pyproject bounds uvicorn
(``<0.56``), and ``SERVE_OPTIONS`` is decided on first use: when a name in ``NEEDS`` is gone
(``transports/uvicorn_internals.py`` checks), it names uvicorn's own protocol instead, plain ASGI with the
same results, and one warning (``direct_frames_unavailable``) says so.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from websockets.exceptions import InvalidState, ProtocolError
from websockets.protocol import State

from vocable.transports.uvicorn_internals import find, missing, unavailable

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

DIRECT_FRAMES = "vocable.direct_frames"  # the extension's key in ``scope["extensions"]``
AWAIT_MESSAGE = "vocable.direct_frames.await"  # a receive message: {"type": ..., "awaitable": ...}
DIRECT_FRAMES_PROTOCOL = "vocable.transports.direct_frames:DirectFramesProtocol"
UVICORN_PROTOCOL = "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol"

# What this module uses and neither library documents: uvicorn's protocol, its websockets connection
# (``conn``) and that connection's reader.
NEEDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (UVICORN_PROTOCOL, ("data_received", "handle_connect", "send_receive_event_to_app", "connection_lost", "conn",
                        "transport", "scope", "queue", "frames", "curr_msg_data_type", "read_paused", "logger",
                        "close_sent", "disconnected", "handshake_initiated", "handshake_complete",
                        "initial_response", "writable")),
    ("websockets.server:ServerProtocol", ("state", "extensions", "expect_continuation_frame", "debug", "reader",
                                          "current_size", "parser_exc", "max_message_size", "send_binary",
                                          "send_text", "data_to_send")),
    ("websockets.streams:StreamReader", ("buffer",)),
)

if TYPE_CHECKING:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as _Base
else:
    _Base = find(UVICORN_PROTOCOL) or object  # gone: the class below is never chosen (``serve_ws_options``)

SERVE_OPTIONS: dict[str, Any]  # ``serve_ws_options()``, made on first use (``__getattr__`` below)


def serve_ws_options() -> dict[str, Any]:
    """What ``vocable serve`` passes to uvicorn for WebSockets (``SERVE_OPTIONS``, decided once a process).

    ``DirectFramesProtocol`` when this uvicorn has everything in ``NEEDS``; otherwise uvicorn's own protocol
    and one warning naming what is missing.
    """
    ws = DIRECT_FRAMES_PROTOCOL
    lacking = direct_frames_missing()
    if lacking:
        ws = "websockets-sansio" if find(UVICORN_PROTOCOL) is not None else "auto"
        unavailable("direct_frames", lacking, f"uvicorn's {ws} WebSocket protocol: every frame through plain ASGI")
    return {
        "ws": ws,
        "ws_max_size": 1 << 20,
        # browsers offer permessage-deflate, and PCM does not repay it: measured on noisy speech-like 20 ms
        # frames, zlib (uvicorn's settings) saves 2 % of the bytes (640 -> 626) for ~49 us of CPU per frame,
        # more than the rest of the frame's path; so the server declines it
        "ws_per_message_deflate": False,
        "lifespan": "on",
    }


def direct_frames_missing() -> list[str]:
    """The names in ``NEEDS`` this uvicorn and websockets no longer have (none: direct frames can run)."""
    return missing(*NEEDS)


def __getattr__(name: str) -> Any:
    if name == "SERVE_OPTIONS":  # decided on first use, not on import: a worker process never needs it
        options = globals()["SERVE_OPTIONS"] = serve_ws_options()
        return options
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Receiver = Callable[[bytes], "bool | Awaitable[Any]"]

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked, final, uncompressed frame (RFC 6455 5.2), as a server sends it."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return _PACK_16(first, 126, length)
    return _PACK_64(first, 127, length)


class DirectFrames:
    """The extension object one connection offers its app (see the module docstring)."""

    __slots__ = ("_protocol", "receiver", "text_receiver")

    def __init__(self, protocol: DirectFramesProtocol) -> None:
        self._protocol = protocol
        self.receiver: Receiver | None = None
        # text messages' raw (UTF-8) payloads, on the same terms as ``receiver``; what it declines (False) goes
        # to the protocol library, which checks the UTF-8 and hands it to ``receive`` as usual (the phone
        # transports take their carriers' media messages here, 50 a second per call)
        self.text_receiver: Receiver | None = None

    def send(self, data: bytes | str) -> bool:
        """Write one message now if the socket can take it; False means use ASGI ``send`` instead.

        Without a negotiated extension (permessage-deflate) the frame header is written here: the
        payload goes out as it is, in one write. With one, the protocol library frames it.
        """
        protocol = self._protocol
        if (protocol.close_sent or protocol.disconnected or not protocol.handshake_complete
                or protocol.initial_response is not None or not protocol.writable.is_set()):
            return False
        conn = protocol.conn
        binary = not isinstance(data, str)
        payload = data if binary else data.encode()  # type: ignore[union-attr]
        if conn.extensions or conn.expect_continuation_frame or conn.state is not State.OPEN or conn.debug:
            try:
                if binary:
                    conn.send_binary(payload)
                else:
                    conn.send_text(payload)
            except (InvalidState, ProtocolError):
                return False
            protocol.transport.write(b"".join(conn.data_to_send()))
            return True
        protocol.transport.write(frame_header(0x2 if binary else 0x1, len(payload)) + payload)
        return True


class DirectFramesProtocol(_Base):
    """uvicorn's websockets-sansio protocol offering the ``vocable.direct_frames`` extension."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct = DirectFrames(self)
        self._fast: bool | None = None  # parse binary frames here (None: not decided until the socket is open)
        self._rest = b""  # the start of a frame that has not fully arrived
        self._max_size: int | None = None

    def data_received(self, data: bytes) -> None:
        fast = self._fast
        if fast is None:
            fast = self._fast = self._can_parse()
        if not fast:
            return super().data_received(data)
        conn = self.conn
        buf = self._rest + data if self._rest else data
        self._rest = b""
        if self.close_sent or conn.state is not State.OPEN:
            self._fast = False  # closing: the library's rules for what still counts
            return super().data_received(buf)
        n, i, max_size = len(buf), 0, self._max_size
        while n - i >= 2:
            first, second = buf[i], buf[i + 1]
            length, head = second & 0x7F, i + 2
            if length == 126:
                if n - i < 4:
                    break
                length, head = int.from_bytes(buf[i + 2 : i + 4], "big"), i + 4
            elif length == 127:
                if n - i < 10:
                    break
                length, head = int.from_bytes(buf[i + 2 : i + 10], "big"), i + 10
            if not second & 0x80 or (max_size is not None and length > max_size):
                self._fast = False  # unmasked (1002) or too large (1009): the library closes, on every byte from here
                return super().data_received(buf[i:])
            start = head + 4
            end = start + length
            if end > n:
                break
            if first == 0x82 and conn.current_size is None:  # FIN, no reserved bits, binary, not inside a fragmented message
                self.curr_msg_data_type = "bytes"
                self.frames = [apply_mask(buf[start:end], buf[head:start])]
                self.send_receive_event_to_app()
            elif first == 0x81 and conn.current_size is None and self._hear_text(apply_mask(buf[start:end], buf[head:start])):
                pass  # a whole text frame the app's text receiver took
            else:
                super().data_received(buf[i:end])  # one whole frame: the library's parser stays at a boundary
                if self.close_sent or conn.state is not State.OPEN or conn.parser_exc is not None:
                    self._fast = False
                    if end < n:
                        super().data_received(buf[end:])
                    return
            i = end
        if i < n:
            self._rest = buf[i:]

    def _can_parse(self) -> bool | None:
        """Whether to parse frames here; None while the upgrade request is still the library's to parse."""
        if not self.handshake_initiated:
            return None  # uvicorn hands the upgrade request over in one piece: this is it
        if not self.handshake_complete:
            return False  # frames before the 101 (a client must not send them): every byte to the library
        conn = self.conn
        self._max_size = getattr(conn, "max_message_size", None)
        return (not conn.extensions and conn.state is State.OPEN and not conn.reader.buffer
                and conn.current_size is None and hasattr(conn, "max_message_size"))

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:  # the app's task has not run yet: it sees the extension
            scope["extensions"][DIRECT_FRAMES] = self.direct

    def send_receive_event_to_app(self) -> None:
        receiver = self.direct.receiver
        if (receiver is None or self.curr_msg_data_type != "bytes" or len(self.frames) != 1
                or self.close_sent or not self.queue.empty()):
            return super().send_receive_event_to_app()
        try:
            outcome = receiver(self.frames[0])
        except Exception:  # the app's bug: detach it, and this frame and the rest go the ASGI way
            self.logger.exception("vocable direct_frames receiver failed; falling back to ASGI receive")
            self.direct.receiver = None
            return super().send_receive_event_to_app()
        if outcome is False:
            return super().send_receive_event_to_app()
        self.frames = []
        if outcome is not True:  # something to await before the next message: it queues like one
            self.queue.put_nowait({"type": AWAIT_MESSAGE, "awaitable": outcome})  # type: ignore[typeddict-item]
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()

    def _hear_text(self, payload: bytes) -> bool:
        """Offer a whole text frame to the app's ``text_receiver``; False: the library's (and ASGI's) to take."""
        receiver = self.direct.text_receiver
        if receiver is None or self.close_sent or not self.queue.empty():
            return False
        try:
            outcome = receiver(payload)
        except Exception:  # the app's bug: detach it, and this frame and the rest go the ASGI way
            self.logger.exception("vocable direct_frames text receiver failed; falling back to ASGI receive")
            self.direct.text_receiver = None
            return False
        if outcome is False:
            return False
        if outcome is not True:  # something to await before the next message: it queues like one
            self.queue.put_nowait({"type": AWAIT_MESSAGE, "awaitable": outcome})  # type: ignore[typeddict-item]
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.direct.receiver = None
        self.direct.text_receiver = None
        super().connection_lost(exc)
