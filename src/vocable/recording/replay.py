"""``vocable replay``: run a recording through the pipeline again and say what differs.

The replay opens one session on an engine built from the recorded config (or ``-c``), feeds it what the client
sent at the times it sent it, and keeps every event it emits (through the same tap as the recording).

- ``providers="recorded"``: the STT, LLM and TTS are ``provider: recorded`` (``vocable.recording.recorded``), the
  tools answer as recorded (same status, same duration), and it all runs on a virtual clock
  (``vocable.recording.clock``): deterministic, and as fast as the machine allows. The events must be the same.
- ``providers="live"``: the providers of the config, in real time (a live provider's latency is the point);
  tools the config does not have answer as recorded.

``compare`` lines up the two runs: the events (ids replaced by their order of appearance, a turn's audio frames
by one ``audio`` marker where its audio starts, latency figures left out: they are compared turn by turn), and
the turns: what the user said, the reply, where it was interrupted, the tool calls, the latency.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vocable.config.loader import parse_config
from vocable.plugins.hookspecs import hookimpl
from vocable.recording.format import Recording, decode_pcm

LATENCY = ("stt_ms", "eot_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms", "text_to_voice_ms",
           "engine_overhead_ms")
RECORDED_PLUGIN = "vocable.recording.recorded"
POINT_TOLERANCE_MS = 100.0  # interruption points closer than this (five 20 ms frames) are the same point
QUIET_LIMIT_S = 30.0  # live mode: how long after the recording's end the last reply may take to finish


@dataclass
class Turn:
    """One turn as a person would describe it."""

    user: str = ""
    reply: str = ""
    interrupted: str | None = None  # the reason, and the reply text written by then
    interrupted_ms: float | None = None  # the reply audio that had gone out by then
    tools: list[str] = field(default_factory=list)
    audio_ms: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)


@dataclass
class Comparison:
    recorded: list[dict[str, Any]]
    replayed: list[dict[str, Any]]
    turns: tuple[list[Turn], list[Turn]]
    lines: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.lines)


# ------------------------------------------------------------------------------------------------- config


def replay_config(recording: Recording, config: dict[str, Any] | None, providers: str) -> dict[str, Any]:
    """The config of the replay's engine: no network, no storage, no tracing; recorded providers if asked."""
    data = copy.deepcopy(config if config is not None else recording.header["config"])
    data["transports"] = {}
    data["storage"] = {}
    data.pop("tracing", None)
    data.pop("state", None)
    data["metrics"] = []
    server = data.setdefault("server", {})
    server["auth"] = None
    server.pop("metrics_token", None)
    if providers == "recorded":
        pipeline = data.setdefault("pipeline", {})
        for kind, chain in recording.header["chains"].items():
            given = pipeline.get(kind)
            given = given if isinstance(given, list) else [given] if given else []
            pipeline[kind] = [_recorded_ref(recording.path, kind, place, spec, given[place] if place < len(given) else None)
                              for place, spec in enumerate(chain)]
    return data


def _recorded_ref(path: str, kind: str, place: int, spec: dict[str, Any], given: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"provider": "recorded", "file": path, "place": place}
    if isinstance(given, dict):  # the engine's own keys for this place: timeouts, retries, breaker
        ref.update({k: given[k] for k in ("timeout_s", "retries", "retry_delay_s", "breaker") if given.get(k) is not None})
    if kind == "stt":
        ref.update(interim_results=spec["interim_results"], sample_rates=spec["sample_rates"],
                   endpointing=spec["endpointing"])
    elif kind == "tts":
        ref.update(sample_rate=spec["sample_rate"], streaming_input=spec["streaming_input"])
    return ref


# ------------------------------------------------------------------------------------------------- running


class _Capture:
    """An observer that keeps the replayed session's events, as the recorder does."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_event(self, event: Any) -> None:
        self.events.append(event.to_wire())

    @hookimpl
    def session_started(self, session: Any) -> None:
        from vocable.engine.events import StateChanged

        self.on_event(session.ready_event())
        self.on_event(StateChanged("listening"))
        session.add_tap(self.on_event)


def _recorded_tools(recording: Recording) -> dict[str, list[tuple[float, str]]]:
    """Tool name -> (duration, status) of each recorded call, in order."""
    started: dict[str, tuple[str, float]] = {}
    calls: dict[str, list[tuple[float, str]]] = {}
    for line in recording.lines:
        event = line.get("event")
        if event is None:
            continue
        if event["type"] == "tool_call":
            started[event["id"]] = (event["name"], line["t"])
        elif event["type"] == "tool_result" and event["id"] in started:
            name, t = started.pop(event["id"])
            calls.setdefault(name, []).append((line["t"] - t, event["status"]))
    for name, t in started.values():  # still running when the session ended
        calls.setdefault(name, []).append((float("inf"), "cancelled"))
    return calls


def _stub_tools(engine: Any, recording: Recording, *, replace: bool) -> None:
    for name, answers in _recorded_tools(recording).items():
        if name in engine.tools and not replace:
            continue
        queue = list(answers)

        async def stub(_queue: list[tuple[float, str]] = queue, _name: str = name, **_: Any) -> str:
            duration, status = _queue.pop(0) if _queue else (0.0, "error")
            if duration == float("inf") or status == "cancelled":
                await asyncio.Event().wait()
            await asyncio.sleep(duration)
            if status == "timeout":
                raise TimeoutError
            if status != "ok":
                raise RuntimeError(f"{_name} failed (recorded)")
            return f"{_name}: done (recorded)"

        engine.tool(name, description=f"{name} (answers as recorded)", parameters={"type": "object"},
                    timeout_s=3600)(stub)


async def run(recording: Recording, config: dict[str, Any], providers: str) -> list[dict[str, Any]]:
    """Replay ``recording`` on an engine with ``config`` (see ``replay_config``); the events it emitted."""
    from vocable.engine.engine import Engine

    capture = _Capture()
    engine = Engine(parse_config(config), plugins=[RECORDED_PLUGIN, capture])
    _stub_tools(engine, recording, replace=providers == "recorded")
    if providers == "recorded":  # each recorded provider answers under the name it had (metrics, breakers)
        for kind, chain in recording.header["chains"].items():
            live = getattr(engine.runtime, kind)
            live[:] = [dataclasses.replace(p, name=spec["name"]) for p, spec in zip(live, chain)]
    await engine.start()
    header = recording.header
    session = await engine.open_session(transport=header["transport"], input_sample_rate=header["input_sample_rate"],
                                        pace=True)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    greeting = engine.config.agent.greeting
    drain = asyncio.create_task(_drain(session), name="replay-client")  # the client reads every event
    try:
        for number, line in enumerate(recording.inputs()):
            await _at(loop, t0 + line["t"])
            if session.closed:
                break
            kind = line["in"]
            if kind == "audio":
                if (rest := session.feed_audio(decode_pcm(line["pcm"]))) is not None:
                    await rest
            elif kind == "rate":
                session.set_input_sample_rate(line["sample_rate"])
            elif kind == "text":
                await session.send_text(line["text"])
            elif kind == "interrupt":
                await session.interrupt("client")
            elif kind == "say" and not (number == 0 and line["text"] == greeting):  # the greeting says itself
                await session.say(line["text"])
        end = next((line["t"] for line in reversed(recording.lines) if "end" in line), None)
        if end is not None:
            await _at(loop, t0 + end)
        if providers == "live":
            await _quiet(session, loop.time() + QUIET_LIMIT_S)
    finally:
        await engine.close_session(session, recording.end_reason or "closed")
        await drain
        await engine.stop()
    return capture.events


async def _drain(session: Any) -> None:
    async for _ in session.iter_events():
        pass


async def _at(loop: asyncio.AbstractEventLoop, when: float) -> None:
    if (delay := when - loop.time()) > 0:
        await asyncio.sleep(delay)


async def _quiet(session: Any, deadline: float) -> None:
    """Wait until the session has nothing more to say (live providers may be slower than the recorded ones)."""
    loop = asyncio.get_running_loop()
    while not session.closed and loop.time() < deadline and (session.state != "listening" or session.replies.active):
        await asyncio.sleep(0.05)


def replay(recording: Recording, config: dict[str, Any] | None = None, providers: str = "recorded") -> Comparison:
    """Run the replay (on the virtual clock with recorded providers) and compare it with the recording."""
    data = replay_config(recording, config, providers)
    if providers == "recorded":
        from vocable.recording.clock import run_virtual

        events = run_virtual(lambda: run(recording, data, providers))
    else:
        events = asyncio.run(run(recording, data, providers))
    return compare(recording.events(), events, strict=providers == "recorded")


# ------------------------------------------------------------------------------------------------- comparing


def normalized(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events as compared: ids by order of appearance, one ``audio`` marker per turn, no latency figures."""
    ids: dict[str, str] = {}

    def short(value: str, prefix: str) -> str:
        return ids.setdefault(value, f"{prefix}{sum(1 for v in ids.values() if v.startswith(prefix)) + 1}")

    out: list[dict[str, Any]] = []
    sounding: set[str] = set()
    for event in events:
        event = dict(event)
        if "session_id" in event:
            event["session_id"] = "session"
        if "turn_id" in event:
            event["turn_id"] = short(event["turn_id"], "turn")
        if event.get("continues"):
            event["continues"] = short(event["continues"], "turn")
        if event["type"] in ("tool_call", "tool_result"):
            event["id"] = short(event["id"], "call")
        if event["type"] == "audio":
            if event["turn_id"] in sounding:
                continue
            sounding.add(event["turn_id"])
            event = {"type": "audio", "turn_id": event["turn_id"]}
        elif event["type"] == "metrics":
            event = {k: v for k, v in event.items() if k not in LATENCY}
        out.append(event)
    return out


def turns(events: Sequence[dict[str, Any]]) -> list[Turn]:
    """The conversation, turn by turn (a turn is what happened under one turn id)."""
    by_id: dict[str, Turn] = {}
    for event in events:
        turn_id = event.get("turn_id")
        if turn_id is None:
            continue
        turn = by_id.setdefault(turn_id, Turn())
        kind = event["type"]
        if kind == "transcript" and event["final"]:
            turn.user = event["text"]
        elif kind == "reply":
            turn.reply += event["text"]
        elif kind == "audio":
            turn.audio_ms += event["bytes"] / 2 / event["sample_rate"] * 1000
        elif kind == "interrupted":
            turn.interrupted = f"{event['reason']}, the reply written so far: {turn.reply.strip()!r}"
            turn.interrupted_ms = turn.audio_ms
        elif kind == "tool_call":
            turn.tools.append(f"{event['name']}({event['arguments']})")
        elif kind == "metrics":
            turn.latency = {k: event[k] for k in LATENCY if isinstance(event.get(k), (int, float))}
    return [t for t in by_id.values() if t.user or t.reply or t.tools]


def compare(recorded: Sequence[dict[str, Any]], replayed: Sequence[dict[str, Any]], *, strict: bool) -> Comparison:
    """``strict``: the events must be the same; else (live providers) the turns' words and interruptions."""
    a, b = normalized(recorded), normalized(replayed)
    result = Comparison(a, b, (turns(recorded), turns(replayed)))
    if strict and a != b:
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        result.lines.append(f"event {at + 1} differs (of {len(a)} recorded, {len(b)} replayed):")
        for i in range(max(0, at - 2), min(max(len(a), len(b)), at + 3)):
            mark = ">" if i == at else " "
            result.lines.append(f"  {mark} recorded: {_show(a, i)}")
            result.lines.append(f"  {mark} replayed: {_show(b, i)}")
    result.lines.extend(_turn_differences(*result.turns))
    return result


def _turn_differences(recorded: list[Turn], replayed: list[Turn]) -> list[str]:
    lines: list[str] = []
    for n in range(max(len(recorded), len(replayed))):
        old = recorded[n] if n < len(recorded) else None
        new = replayed[n] if n < len(replayed) else None
        if old is None or new is None:
            lines.append(f"turn {n + 1}: {'only in the replay' if old is None else 'missing from the replay'}: "
                         f"{(new or old).user or (new or old).reply!r}")  # type: ignore[union-attr]
            continue
        for what, x, y in (("user said", old.user, new.user), ("reply", old.reply, new.reply),
                           ("interrupted", old.interrupted, new.interrupted), ("tools", old.tools, new.tools)):
            if x != y:
                lines.append(f"turn {n + 1}: {what}: recorded {x!r}, replayed {y!r}")
        if old.interrupted_ms is not None and new.interrupted_ms is not None and \
                abs(old.interrupted_ms - new.interrupted_ms) > POINT_TOLERANCE_MS:
            lines.append(f"turn {n + 1}: interrupted after {old.interrupted_ms:.0f} ms of reply audio when recorded, "
                         f"{new.interrupted_ms:.0f} ms replayed")
    return lines


def latency_table(comparison: Comparison) -> list[str]:
    """Turn by turn, each latency figure recorded -> replayed."""
    out = []
    for n, (old, new) in enumerate(zip(*comparison.turns), 1):
        figures = [f"{k} {old.latency[k]:.0f} -> {new.latency[k]:.0f}" for k in
                   ("stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms") if k in old.latency and k in new.latency]
        if figures:
            out.append(f"turn {n}: " + ", ".join(figures) + " ms")
    return out


def _show(events: Sequence[dict[str, Any]], i: int) -> str:
    return str(events[i]) if i < len(events) else "(nothing)"


def report(comparison: Comparison, providers: str) -> list[str]:
    """What ``vocable replay`` prints: the verdict, the differences, and (live) the latency turn by turn."""
    recorded, replayed = comparison.turns
    lines = [f"recorded: {len(comparison.recorded)} events, {len(recorded)} turns; "
             f"replayed ({providers} providers): {len(comparison.replayed)} events, {len(replayed)} turns"]
    if providers == "live":
        lines.extend(latency_table(comparison))
    lines.extend(comparison.lines or ["no difference"])
    return lines
