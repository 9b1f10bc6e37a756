"""What the caller has heard: reply audio goes out with marks, and only marks the carrier echoes count.

A carrier buffers seconds of audio, so what the server sent is not what the caller heard. Each outgoing
reply gets a ``mark`` after every piece of its text (and, with ``mark_interval_ms``, every so often within
a piece); the carrier echoes a mark once the audio queued before it has played. ``MarkedPlayout`` keeps,
for the reply in progress, the bytes sent and the offset of the last echoed mark, and is the session's
``PlayoutSource``: ``unplayed_bytes`` is what went out past that mark, so after a barge-in memory keeps the
reply text up to the last acknowledged mark (``Turn.spoken_text``), not what the server happened to send.

``clear`` goes out the moment the output pauses (a possible barge-in) or an interruption is committed. Marks
still pending then are forgotten: the carrier echoes them on a clear, which says nothing about playing. A
paused reply keeps the audio sent past its last echoed mark; when it resumes (a false interruption) that
audio goes out again first, so the caller misses nothing (and hears again at most what was between the
mark and the pause).

Pure and synchronous: each method returns the messages to send, as ``Out`` tuples, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

from vocable.engine.events import AudioOut
from vocable.transports.phone.codec import Encoding, PhoneAudioOut

Out = tuple[Literal["media"], bytes] | tuple[Literal["mark"], str] | tuple[Literal["clear"]]
CLEAR: Out = ("clear",)


class _Reply:
    """The ledger of one reply's audio (session bytes: PCM16 at the session's output rate)."""

    __slots__ = ("turn_id", "sent", "acked", "last_mark", "segment", "items", "held", "done")

    def __init__(self, turn_id: str) -> None:
        self.turn_id = turn_id
        self.sent = 0  # session bytes handed to the carrier
        self.acked = 0  # the offset of the last mark the carrier echoed
        self.last_mark = 0  # the offset of the last mark sent
        self.segment = 0  # the next piece of text whose start is not yet marked
        self.items: deque[tuple[int, bytes | None, str | None]] = deque()  # (offset, frame | None, mark name | None)
        self.held = False  # cleared while paused: ``items`` go out again on resume
        self.done = False  # its last frame and end mark went out


class MarkedPlayout:
    """The session's ``PlayoutSource`` on a phone call: played = acknowledged by the carrier's marks."""

    def __init__(self, output_rate: int, encoding: Encoding = "mulaw", *, mark_interval_ms: int = 0,
                 segments: Callable[[str], Sequence[Any]] = lambda turn_id: ()) -> None:
        """``segments(turn_id)``: the reply's pieces of text, each with the ``start_byte`` of its audio."""
        self.output_rate = output_rate
        self.audio_out = PhoneAudioOut(output_rate, encoding)
        self.interval_bytes = output_rate * 2 * mark_interval_ms // 1000
        self.segments = segments
        self._reply: _Reply | None = None
        self._pending: dict[str, int] = {}  # mark name -> offset, in the order sent
        self._names = 0
        self.heard = asyncio.Event()  # every mark sent has been echoed (nothing left to play)
        self.heard.set()
        self.marks_sent = self.marks_acked = self.marks_ignored = self.clears = 0

    # ------------------------------------------------------------------------------- PlayoutSource

    def unplayed_bytes(self) -> int:
        reply = self._reply
        return reply.sent - reply.acked if reply is not None else 0

    @property
    def turn_id(self) -> str | None:
        return self._reply.turn_id if self._reply is not None else None

    @property
    def acked_bytes(self) -> int:
        return self._reply.acked if self._reply is not None else 0

    # ------------------------------------------------------------------------------- outgoing

    def audio(self, event: AudioOut) -> list[Out]:
        """One frame of the reply: a mark first where a piece of text (or an interval) begins, then media."""
        reply = self._reply
        out: list[Out] = []
        if reply is None or reply.turn_id != event.turn_id:
            if reply is not None and not reply.done:
                out += self.reply_done(reply.turn_id)
            reply = self._reply = _Reply(event.turn_id)
            self._pending.clear()
        offset = reply.sent
        if offset > reply.last_mark:
            segments = self.segments(reply.turn_id)
            boundary = False
            while reply.segment < len(segments) and segments[reply.segment].start_byte <= offset:
                boundary = boundary or segments[reply.segment].start_byte > 0
                reply.segment += 1
            if boundary or (self.interval_bytes and offset - reply.last_mark >= self.interval_bytes):
                out.append(self._mark(reply, offset))
        reply.sent = offset + len(event.pcm)
        for frame in self.audio_out.push(event.pcm):
            reply.items.append((reply.sent, frame, None))
            out.append(("media", frame))
        return out

    def reply_done(self, turn_id: str) -> list[Out]:
        """The reply's last frame went out: the rest of its audio, then a mark at its very end."""
        reply = self._reply
        if reply is None or reply.turn_id != turn_id or reply.done:
            return []
        reply.done = True
        out: list[Out] = []
        for frame in self.audio_out.flush():
            reply.items.append((reply.sent, frame, None))
            out.append(("media", frame))
        if reply.sent > reply.last_mark or not self._pending and reply.sent > reply.acked:
            out.append(self._mark(reply, reply.sent))
        return out

    def pause(self) -> list[Out]:
        """The output paused: clear the carrier's buffer now; keep what it had not acknowledged, for resume."""
        reply = self._reply
        if reply is not None:
            reply.held = True
        return self._clear()

    def resume(self) -> list[Out]:
        """A false interruption: what the clear dropped goes out again (with its marks), then the rest."""
        reply = self._reply
        if reply is None or not reply.held:
            return []
        reply.held = False
        out: list[Out] = []
        items, reply.items = reply.items, deque()
        for offset, frame, name in items:
            if frame is not None:
                reply.items.append((offset, frame, None))
                out.append(("media", frame))
            elif name is not None:
                out.append(self._mark(reply, offset))
        return out

    def interrupt(self, turn_id: str) -> list[Out]:
        """The reply stopped for good: clear the carrier's buffer and forget the reply."""
        reply = self._reply
        if reply is not None and reply.turn_id == turn_id:
            self._reply = None
            self.audio_out.reset()
        return self._clear()

    # ------------------------------------------------------------------------------- incoming

    def acknowledged(self, name: str) -> bool:
        """The carrier echoed mark ``name``: the audio before it has played. False if it counts for nothing
        (sent before a clear, for an earlier reply, or never ours)."""
        offset = self._pending.get(name)
        reply = self._reply
        if offset is None or reply is None:
            self.marks_ignored += 1
            return False
        for pending in list(self._pending):  # the carrier plays in order: earlier marks are heard too
            del self._pending[pending]
            if pending == name:
                break
        self.marks_acked += 1
        reply.acked = max(reply.acked, offset)
        items = reply.items
        while items and items[0][0] <= reply.acked:
            items.popleft()
        if not self._pending:
            self.heard.set()
        return True

    # ------------------------------------------------------------------------------- internals

    def _mark(self, reply: _Reply, offset: int) -> Out:
        self._names += 1
        name = f"m{self._names}"
        self._pending[name] = offset
        reply.last_mark = max(reply.last_mark, offset)
        reply.items.append((offset, None, name))
        self.marks_sent += 1
        self.heard.clear()
        return ("mark", name)

    def _clear(self) -> list[Out]:
        self._pending.clear()  # the carrier echoes them on a clear: not a sign that anything played
        reply = self._reply
        if reply is not None:
            reply.items = deque(item for item in reply.items if item[1] is not None or item[0] > reply.acked)
        self.heard.set()
        self.clears += 1
        return [CLEAR]
