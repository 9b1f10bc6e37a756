"""How a session's events leave it: in order, bounded, and as few messages as the order allows.

Every event goes into one bounded channel that the transport drains; a client that stops reading makes the
producers wait, so memory stays bounded. Two things make this cheaper than a message per event through a
writer task, without changing what a client sees:

- A transport may attach a sink that sends an event at once while nothing is queued ahead of it (the
  WebSocket transport does): no writer wake-up per event, 50 a second for each talking session's audio.
- Reply text deltas that the LLM yields in one go leave as one ``reply`` event.

A tap (``add_tap``) sees every event as it is emitted, before any merging: tracing and recording use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from vocable.engine.channel import Channel, ChannelClosed
from vocable.engine.events import Event, Reply


class EventSink(Protocol):
    """A transport that can send an event at once, without the session's channel (``Outbox.attach_sink``)."""

    def can_take(self) -> bool:
        """True when nothing the transport was given is still being sent, so order cannot change."""
        ...

    def take(self, event: Event) -> Awaitable[None]:
        """Send ``event`` now (await the result); a client that is gone or too slow is the transport's to
        handle, not an error."""
        ...


class PlayoutSource(Protocol):
    """A transport that knows how much reply audio its listener has not heard yet (``Session.attach_playout``).

    Memory keeps only what was heard, so after a barge-in the session subtracts this from what it sent.
    WebRTC reports its outgoing track's buffer; a transport without a report is counted by the paced
    send clock (the audio sent ahead of real time).
    """

    def unplayed_bytes(self) -> int: ...


class Outbox:
    __slots__ = ("events", "_sink", "_held_reply", "_taps")

    def __init__(self, maxsize: int) -> None:
        self.events: Channel[Event] = Channel(maxsize)
        self._sink: EventSink | None = None
        self._held_reply: Reply | None = None
        self._taps: tuple[Callable[[Event], None], ...] = ()

    def add_tap(self, tap: Callable[[Event], None]) -> None:
        """Call ``tap(event)`` with every event as it is emitted (every audio frame too): synchronous, and
        cheap, since it runs on the hot path. An exception from it propagates to the emitter."""
        self._taps = (*self._taps, tap)

    def attach_sink(self, sink: EventSink) -> None:
        """Let a transport take events directly when nothing is queued ahead of them.

        Every event still goes out in order: it skips the channel only when the channel is empty and the
        sink says nothing of its own is in flight.
        """
        self._sink = sink

    def detach_sink(self, sink: EventSink) -> None:
        """Stop sending through ``sink`` (if it is still the attached one: a resumed session has a new one)."""
        if self._sink is sink:
            self._sink = None

    def emit(self, event: Event) -> Awaitable[None]:
        """Send ``event`` in order, merging reply text deltas that the LLM produced in one go; await it.

        A fast LLM (or a burst of buffered tokens) yields many deltas without the loop turning once; each
        as its own message would cost a JSON encoding and a socket write. The first delta is held and
        released when the loop next turns (``call_soon``), with every delta of the same turn that came
        meanwhile joined to it; any other event releases it first, so nothing is reordered or delayed
        behind the current step.

        Not a coroutine itself: it returns the sink's (or the channel's) awaitable, so an audio frame,
        50 a second for each talking session, does not pay for two more coroutines on its way out.
        """
        for tap in self._taps:
            tap(event)
        if self._held_reply is None and type(event) is not Reply:
            return self._deliver(event)
        return self._emit_held(event)

    async def _emit_held(self, event: Event) -> None:
        held = self._held_reply
        if type(event) is Reply and not event.final:
            if held is not None:
                if held.turn_id == event.turn_id:
                    self._held_reply = Reply(held.text + event.text, False, event.turn_id)
                    return
                self._held_reply = None
                await self._deliver(held)
            self._held_reply = event
            asyncio.get_running_loop().call_soon(self.release_reply)
            return
        if held is not None:
            self._held_reply = None
            await self._deliver(held)
        await self._deliver(event)

    def release_reply(self) -> None:
        """Queue the held reply text now (the session calls this before its last events, too)."""
        held = self._held_reply
        if held is None:
            return
        if self.events.closed or self.events.put_nowait(held):
            self._held_reply = None
        else:  # the client is behind and the channel is full: try again shortly, keeping the text
            asyncio.get_running_loop().call_later(0.02, self.release_reply)

    def _deliver(self, event: Event) -> Awaitable[None]:
        sink, events = self._sink, self.events
        if sink is not None and not events and sink.can_take() and not events.closed:
            return sink.take(event)
        return self._queue(event)

    async def _queue(self, event: Event) -> None:
        try:
            await self.events.put(event)
        except ChannelClosed:
            pass
