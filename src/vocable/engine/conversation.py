"""Driving a session from Python: the embedding API, and how tests and ``vocable talk`` run turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

from vocable.engine.events import Event, MetricsEvent
from vocable.engine.session import Session

E = TypeVar("E", bound=Event)


class Conversation:
    """A thin handle on a Session. ``events()`` yields exactly what the wire protocol carries."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def id(self) -> str:
        return self.session.id

    async def send_audio(self, pcm: bytes) -> None:
        await self.session.send_audio(pcm)

    async def send_text(self, text: str) -> None:
        await self.session.send_text(text)

    async def say(self, text: str) -> None:
        await self.session.say(text)

    async def interrupt(self) -> bool:
        return await self.session.interrupt("client")

    async def events(self) -> AsyncIterator[Event]:
        async for event in self.session.iter_events():
            yield event

    async def next_event(self, kind: type[E], timeout_s: float = 30.0) -> E:
        """Skip events until one of type ``kind`` arrives."""
        async with asyncio.timeout(timeout_s):
            while True:
                event = await self.session.events.get()
                if event is None:
                    raise EOFError("the session ended")
                if isinstance(event, kind):
                    return event

    async def collect_turn(self, timeout_s: float = 30.0) -> list[Event]:
        """Every event up to and including the next ``metrics`` event (the end of a turn)."""
        events: list[Event] = []
        async with asyncio.timeout(timeout_s):
            while True:
                event = await self.session.events.get()
                if event is None:
                    raise EOFError("the session ended")
                events.append(event)
                if isinstance(event, MetricsEvent):
                    return events
