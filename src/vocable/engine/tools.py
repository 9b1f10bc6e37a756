"""Tools the LLM may call, and the life of each call: started once, ended exactly once.

The most reported bug class in voice agents is a tool call that vanishes when the user talks over it: the
booking was made, but the call and its result are gone from the history, so the model books again. Here a
call runs in a task owned by the session, not by the reply, so an interruption does not cancel it unless
the tool says ``cancel_on_interruption``. Every started call ends in one terminal state (``ok``, ``error``,
``timeout``, ``cancelled``) and its result is committed to memory right after the assistant message that
made the call, in the order chat APIs require, whether or not the reply that made it was heard.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from vocable.engine.events import Event, ToolResultEvent
from vocable.providers.base import ToolCall
from vocable.providers.tools import DEFAULT_TIMEOUT_S, ToolHandler, ToolSpec, tool_spec  # noqa: F401 - their home

log = structlog.get_logger("vocable.tools")

Status = Literal["ok", "error", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    call: ToolCall
    status: Status
    content: str  # what the model is told: the result, or a JSON error


class Fillers:
    """Phrases spoken while a tool call runs longer than ``after_s`` (no LLM round-trip), used in turn."""

    __slots__ = ("after_s", "phrases", "_next")

    def __init__(self, after_ms: int, phrases: list[str]) -> None:
        self.after_s = after_ms / 1000.0 if phrases else 0.0
        self.phrases = [p.strip() for p in phrases if p.strip()]
        self._next = 0

    def next(self) -> str | None:
        if not self.phrases:
            return None
        phrase = self.phrases[self._next % len(self.phrases)]
        self._next += 1
        return phrase


class ToolCalls:
    """The tool calls of one session: each runs once, in its own task, and ends exactly once.

    ``settle`` waits for calls still running (each bounded by its timeout), so the next LLM request always
    has a result for every call id it sees.
    """

    def __init__(self, specs: dict[str, ToolSpec], emit: Callable[[Event], Awaitable[None]],
                 resolve: Callable[[str, str], bool], log_context: dict[str, Any]) -> None:
        """``resolve(call_id, content)``: hand a result to memory, True if it was waiting for it there."""
        self.specs = specs
        self._emit = emit
        self._resolve = resolve
        self.results: dict[str, str] = {}  # results that memory has not taken yet (``take``)
        self._running: dict[str, tuple[str, str, asyncio.Task[ToolOutcome]]] = {}  # call id -> (turn, tool, task)
        self._ended: set[str] = set()  # calls whose end is recorded (and their task not yet done)
        self._notices: set[asyncio.Future[None]] = set()  # ends told from a done callback, still being sent
        self.log = log.bind(**log_context)

    def start(self, turn_id: str, call: ToolCall) -> asyncio.Task[ToolOutcome]:
        """Run ``call`` now (once: a call id already running is not started again)."""
        if call.id in self._running:
            return self._running[call.id][2]
        task = asyncio.create_task(self._run(turn_id, call), name=f"tool-{call.name}-{call.id}")
        self._running[call.id] = (turn_id, call.name, task)
        task.add_done_callback(lambda _: self._done(turn_id, call))
        return task

    def _done(self, turn_id: str, call: ToolCall) -> None:
        self._running.pop(call.id, None)
        if call.id in self._ended:
            self._ended.discard(call.id)
            return
        # cancelled before it ever ran (no code of it ran to say so): it still ends, once
        outcome = ToolOutcome(call, "cancelled", json.dumps({"error": "cancelled before it started"}))
        notice = asyncio.ensure_future(self._finished(turn_id, outcome))
        self._notices.add(notice)
        notice.add_done_callback(self._notices.discard)

    async def _run(self, turn_id: str, call: ToolCall) -> ToolOutcome:
        spec = self.specs.get(call.name)
        outcome: ToolOutcome
        try:
            if spec is None:
                outcome = ToolOutcome(call, "error", json.dumps({"error": f"unknown tool {call.name!r}"}))
            else:
                async with asyncio.timeout(spec.timeout_s):
                    outcome = ToolOutcome(call, "ok", await _invoke(spec.handler, call.arguments))
        except TimeoutError:
            limit = spec.timeout_s if spec is not None else 0.0
            outcome = ToolOutcome(call, "timeout", json.dumps({"error": f"{call.name} took longer than {limit:g} s"}))
        except asyncio.CancelledError:
            outcome = ToolOutcome(call, "cancelled", json.dumps({"error": "cancelled: the user interrupted"}))
            await self._finished(turn_id, outcome)
            raise
        except Exception as exc:  # noqa: BLE001 - a tool's failure is the model's to hear, not the session's
            outcome = ToolOutcome(call, "error", json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        await self._finished(turn_id, outcome)
        return outcome

    def take(self, calls: list[ToolCall]) -> dict[str, str]:
        """The results of ``calls`` that are in, removed from here: memory keeps them from now on."""
        return {call.id: self.results.pop(call.id) for call in calls if call.id in self.results}

    async def _finished(self, turn_id: str, outcome: ToolOutcome) -> None:
        self._ended.add(outcome.call.id)
        if not self._resolve(outcome.call.id, outcome.content):
            self.results[outcome.call.id] = outcome.content
        self.log.info("tool_finished", turn_id=turn_id, tool=outcome.call.name, call_id=outcome.call.id,
                      status=outcome.status)
        await self._emit(ToolResultEvent(turn_id, outcome.call.id, outcome.call.name, outcome.status))

    def interrupted(self, turn_id: str) -> None:
        """The reply of ``turn_id`` was interrupted: cancel its calls that ask for it; the rest run on."""
        for owner, name, task in list(self._running.values()):
            spec = self.specs.get(name)
            if owner == turn_id and spec is not None and spec.cancel_on_interruption:
                task.cancel()

    async def settle(self) -> None:
        """Wait for every running call to end (each is bounded by its own timeout)."""
        tasks = [task for _, _, task in self._running.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """The session ends: calls still running are cancelled (each still ends once, as ``cancelled``)."""
        tasks = [task for _, _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._notices:
            await asyncio.gather(*self._notices, return_exceptions=True)


async def _invoke(handler: ToolHandler, arguments: str) -> str:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        raise ValueError("the arguments are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("the arguments must be a JSON object")
    result = handler(**parsed)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return result if isinstance(result, str) else json.dumps(result, default=str)
