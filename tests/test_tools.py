"""Tool calls on their own (engine/tools.py) and in a session: every call ends exactly once, with one status."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from vocable.engine.events import AudioOut, Event, MetricsEvent, Reply, ToolResultEvent
from vocable.engine.memory import Memory
from vocable.engine.tools import ToolCalls, tool_spec
from vocable.providers.base import ToolCall


def _calls(**handlers: Any) -> tuple[ToolCalls, list[Event], Memory]:
    events: list[Event] = []
    memory = Memory("")

    async def emit(event: Event) -> None:
        events.append(event)

    specs = {name: tool_spec(fn, name=name, timeout_s=0.2) for name, fn in handlers.items()}
    return ToolCalls(specs, emit, memory.resolve, {}), events, memory


async def _slow() -> str:
    await asyncio.sleep(5)
    return "never"


async def _ok(city: str) -> dict[str, str]:
    return {"time": f"noon in {city}"}


def _broken() -> str:
    raise RuntimeError("the booking service is down")


@pytest.mark.parametrize(("name", "arguments", "status", "says"), [
    ("ok", '{"city": "Oslo"}', "ok", "noon in Oslo"),
    ("slow", "{}", "timeout", "took longer than 0.2 s"),
    ("broken", "{}", "error", "the booking service is down"),
    ("ok", "not json", "error", "not valid JSON"),
    ("ok", "[1, 2]", "error", "must be a JSON object"),
    ("ok", '{"town": "Oslo"}', "error", "TypeError"),
    ("missing", "{}", "error", "unknown tool 'missing'"),
])
async def test_every_call_ends_once_with_a_status(name: str, arguments: str, status: str, says: str) -> None:
    calls, events, _ = _calls(ok=_ok, slow=_slow, broken=_broken)
    outcome = await calls.start("t1", ToolCall("c1", name, arguments))
    assert outcome.status == status and says in outcome.content
    assert [(e.id, e.status) for e in events if isinstance(e, ToolResultEvent)] == [("c1", status)]
    assert calls.take([outcome.call]) == {"c1": outcome.content}, "the result waits for memory to take it"


async def test_a_call_is_started_once_and_cancelled_ones_end_as_cancelled() -> None:
    calls, events, memory = _calls(slow=_slow)
    call = ToolCall("c1", "slow", "{}")
    first = calls.start("t1", call)
    assert calls.start("t1", call) is first, "the same call id is not run twice"
    memory.add_tool_calls((call,), {})  # its turn was committed while it ran
    assert memory.pending
    await calls.aclose()  # the session ends
    assert [e.status for e in events if isinstance(e, ToolResultEvent)] == ["cancelled"]
    assert not memory.pending and json.loads(memory.messages[-1].content)["error"].startswith("cancelled")


async def test_cancel_on_interruption_is_per_tool() -> None:
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    specs = {"keep": tool_spec(_slow, name="keep"), "drop": tool_spec(_slow, name="drop", cancel_on_interruption=True)}
    calls = ToolCalls(specs, emit, lambda _id, _content: False, {})
    keep, drop = calls.start("t1", ToolCall("a", "keep", "{}")), calls.start("t1", ToolCall("b", "drop", "{}"))
    await asyncio.sleep(0)
    calls.interrupted("t1")
    await asyncio.gather(drop, return_exceptions=True)
    assert drop.cancelled() and not keep.done()
    await calls.aclose()


async def test_a_slow_call_gets_a_filler_spoken_before_its_result() -> None:
    from vocable import Engine
    from vocable.testing.scripted import SCRIPTED_PLUGINS, scripted_config

    data = scripted_config(llm={"provider": "scripted", "echo": True, "tool_call": "lookup"})
    data["agent"] = {"filler_after_ms": 100}  # the default fillers: "One moment." is shorter than a sentence
    engine = Engine.from_dict(data, autoload=False, plugins=SCRIPTED_PLUGINS)

    @engine.tool(description="a slow lookup")
    async def lookup() -> str:
        await asyncio.sleep(0.6)
        return "found it"

    await engine.start()
    async with engine.conversation(pace=False) as conv:
        await conv.send_text("look it up")
        events: list[Event] = []
        while not any(isinstance(e, MetricsEvent) for e in events):
            events.append(await conv.next_event(Event, timeout_s=10))
    await engine.stop()
    result_at = next(i for i, e in enumerate(events) if isinstance(e, ToolResultEvent))
    early = events[:result_at]
    assert "One moment." in "".join(e.text for e in early if isinstance(e, Reply))
    assert any(isinstance(e, AudioOut) for e in early), "the filler is spoken while the tool runs, short as it is"
