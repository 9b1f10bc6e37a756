"""Running scenarios: one session each, in real time, then every expectation checked against what it emitted.

A microphone task feeds the session 20 ms frames at real time the whole while (silence between spoken steps,
as a real microphone does), so end-of-turn detection and barge-ins behave as they do live. A step waits for
the agent to be quiet (its reply to the previous step finished), or, with ``after_ms``, for that reply to have
played that long; it then types, speaks or presses keys, and its turn is the first final transcript after it.
Expectations are checked once the scenario is over, on the events of the whole session; a ``judge`` asks an
LLM whether the reply does what the intent says (``PASS`` or ``FAIL`` and a reason).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vocable.audio import read_wav, resample_pcm
from vocable.config.loader import ConfigError, default_config_path, parse_config
from vocable.providers.base import Message, Provider, TextDelta
from vocable.providers.errors import ProviderUnavailable
from vocable.scenarios.model import Expect, Scenario, ScenarioFile, Step, merged

RATE = 16000
FRAME_MS = 20
VOICE_FIGURE = {"say": "voice_to_voice_ms", "wav": "voice_to_voice_ms", "text": "text_to_voice_ms",
                "dtmf": "text_to_voice_ms"}
JUDGE_PROMPT = ("You grade one reply of a voice assistant. Answer PASS if the reply does what the intent says, "
                "else FAIL; then one short sentence saying why.")


class ScenarioFailed(Exception):
    """The scenario could not go on (a turn that never came); the message says where."""


@dataclass
class Outcome:
    name: str
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


class EventLog:
    """The session's events as the client gets them, with a way to wait for one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.times.append(asyncio.get_running_loop().time())
        self._changed.set()

    async def wait_for(self, wanted: Callable[[dict[str, Any]], bool], start: int, timeout_s: float, what: str) -> int:
        """The index of the first event from ``start`` on that is ``wanted``; ScenarioFailed after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                i = start
                while True:
                    while i < len(self.events):
                        if wanted(self.events[i]):
                            return i
                        i += 1
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise ScenarioFailed(f"{what} did not come within {timeout_s:g} s") from None

    def turn(self, turn_id: str) -> dict[str, Any]:
        """What happened in turn ``turn_id``: the user's words, the reply, tools, interruption, figures."""
        view: dict[str, Any] = {"transcript": "", "reply": "", "tools": [], "interrupted": None, "figures": {}}
        for event in self.events:
            if event.get("turn_id") != turn_id:
                continue
            kind = event["type"]
            if kind == "transcript" and event["final"]:
                view["transcript"] = event["text"]
            elif kind == "reply":
                view["reply"] += event["text"]
            elif kind == "tool_call":
                view["tools"].append(event)
            elif kind == "interrupted":
                view["interrupted"] = event["reason"]
            elif kind == "metrics":
                view["figures"] = event
        return view


class Microphone:
    """Feeds the session a 20 ms frame every 20 ms: the step's audio while there is some, silence otherwise."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.frame_bytes = RATE * FRAME_MS // 1000 * 2
        self.queue: deque[bytes] = deque()
        self._drained = asyncio.Event()
        self._drained.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        silence = b"\x00" * self.frame_bytes
        due = loop.time()
        while not self.session.closed:
            frame = self.queue.popleft() if self.queue else silence
            if not self.queue:
                self._drained.set()
            if (rest := self.session.feed_audio(frame)) is not None:
                await rest
            due += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def play(self, pcm: bytes) -> None:
        """Speak ``pcm`` (PCM16 at 16 kHz): returns once its last frame has gone in."""
        step = self.frame_bytes
        pcm += b"\x00" * (-len(pcm) % step)
        self.queue.extend(pcm[i : i + step] for i in range(0, len(pcm), step))
        self._drained.clear()
        await self._drained.wait()


def make_provider(engine: Any, kind: str, ref: dict[str, Any]) -> Provider:
    """A provider of the engine's plugins from ``{provider: name, ...settings}`` (not started)."""
    options = dict(ref)
    name = str(options.pop("provider", ""))
    registration = engine.host.provider(kind, name)
    if registration is None:
        raise ConfigError([(kind, engine.host.unknown_message(kind, name))])
    registration.cls.check_installed()
    return registration.cls(registration.cls.Settings(**options))  # type: ignore[no-any-return]


def tone(ms: float) -> bytes:
    """A 220 Hz tone: what a `say:` step sounds like without an offline voice (the energy VAD hears it)."""
    t = np.arange(int(RATE * ms / 1000)) / RATE
    return (np.sin(2 * math.pi * 220.0 * t) * 0.3 * 32767).astype("<i2").tobytes()


class Runner:
    """Runs the scenarios of one file; engines are made per distinct config and shared between scenarios."""

    def __init__(self, scenarios: ScenarioFile, config: dict[str, Any] | None = None) -> None:
        self.file = scenarios
        self.config = config if config is not None else scenarios.base_config()
        if self.config is None:
            import yaml

            self.config = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
        self._engines: dict[str, Any] = {}
        self._voices: dict[str, bytes] = {}
        self.notes: list[str] = []

    async def engine_for(self, scenario: Scenario) -> Any:
        from vocable.engine.engine import Engine

        config = merged(self.config or {}, scenario.config)
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in self._engines:
            engine = Engine(parse_config(config, source=f"scenario {scenario.name!r}"))
            await engine.start()
            self._engines[key] = engine
        return self._engines[key]

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.stop()

    async def run(self, scenario: Scenario) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(scenario.name)
        try:
            engine = await self.engine_for(scenario)
            turns, log = await self._converse(engine, scenario)
            for number, (step, turn_id) in enumerate(zip(scenario.steps, turns), 1):
                where = f"step {number} ({step.describe()})"
                outcome.failures += [f"{where}: {f}" for f in await self._check(engine, step, log, turn_id)]
        except ScenarioFailed as exc:
            outcome.failures.append(str(exc))
        except (ConfigError, ProviderUnavailable, ValueError, OSError) as exc:
            outcome.failures.append(exc.render() if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}")
        outcome.seconds = time.monotonic() - started
        return outcome

    async def _converse(self, engine: Any, scenario: Scenario) -> tuple[list[str], EventLog]:
        log = EventLog()
        async with engine.conversation(pace=True, input_sample_rate=RATE) as conv:
            session = conv.session
            reader = asyncio.create_task(self._read(session, log), name="scenario-client")
            microphone = Microphone(session)
            mic = asyncio.create_task(microphone.run(), name="scenario-microphone")
            turns: list[str] = []
            try:
                if engine.config.agent.greeting:  # the greeting is spoken first: wait it out
                    await self._quiet(session, log, None, scenario.timeout_s)
                for number, step in enumerate(scenario.steps, 1):
                    where = f"step {number} ({step.describe()})"
                    await self._wait_turn_of(session, log, step, turns, scenario.timeout_s, where)
                    mark = len(log.events)
                    await self._input(engine, session, microphone, step)
                    i = await log.wait_for(lambda e: e["type"] == "transcript" and e["final"], mark,
                                           scenario.timeout_s, f"{where}: the user's turn (a final transcript)")
                    turns.append(log.events[i]["turn_id"])
                await self._quiet(session, log, turns[-1], scenario.timeout_s)
            finally:
                mic.cancel()
                await asyncio.gather(mic, return_exceptions=True)
        await reader
        return turns, log

    @staticmethod
    async def _read(session: Any, log: EventLog) -> None:
        async for event in session.iter_events():
            log.add(event.to_wire())

    async def _wait_turn_of(self, session: Any, log: EventLog, step: Step, turns: list[str], timeout_s: float,
                            where: str) -> None:
        """Before a step: the agent is quiet, or (``after_ms``) its last reply has played that long."""
        if step.after_ms is None:
            if turns:
                await self._quiet(session, log, turns[-1], timeout_s)
            return
        if not turns:
            raise ScenarioFailed(f"{where}: after_ms needs a step before it, whose reply to speak over")
        previous = turns[-1]
        i = await log.wait_for(lambda e: e["type"] == "audio" and e["turn_id"] == previous, 0, timeout_s,
                               f"{where}: the reply to speak over")
        await asyncio.sleep(max(0.0, log.times[i] + step.after_ms / 1000 - asyncio.get_running_loop().time()))

    async def _quiet(self, session: Any, log: EventLog, turn_id: str | None, timeout_s: float) -> None:
        """Turn ``turn_id`` (or the first one) has its metrics, and the agent is listening again."""
        i = await log.wait_for(lambda e: e["type"] == "metrics" and (turn_id is None or e["turn_id"] == turn_id), 0,
                               timeout_s, "the end of the turn (its metrics)")
        if session.state != "listening":
            await log.wait_for(lambda e: e["type"] == "state" and e["state"] == "listening", i + 1, timeout_s,
                               "the agent listening again")

    async def _input(self, engine: Any, session: Any, microphone: Microphone, step: Step) -> None:
        if step.text is not None:
            await session.send_text(step.text)
        elif step.dtmf is not None:
            await session.send_text(self.file.dtmf_template.replace("{digits}", " ".join(step.dtmf)))
        elif step.wav is not None:
            pcm, rate = read_wav(str(self.file.folder / step.wav))
            await microphone.play(resample_pcm(pcm, rate, RATE))
        elif step.say is not None:
            await microphone.play(await self._spoken(engine, step.say))

    async def _spoken(self, engine: Any, text: str) -> bytes:
        """``text`` spoken by the file's voice (an offline TTS); a tone as long as the words without one."""
        if text not in self._voices:
            try:
                voice = make_provider(engine, "tts", self.file.voice)
                await voice.start()
                try:
                    chunks = [chunk async for chunk in voice.synthesize(text)]  # type: ignore[attr-defined]
                finally:
                    await voice.aclose()
                self._voices[text] = b"".join(resample_pcm(c.pcm, c.sample_rate, RATE) for c in chunks)
            except (ProviderUnavailable, ConfigError) as exc:
                note = f"voice {self.file.voice.get('provider')!r} unavailable, `say:` steps are tones: {exc}"
                if note not in self.notes:
                    self.notes.append(note)
                self._voices[text] = tone(250.0 * max(1, len(text.split())))
        return self._voices[text]

    async def _check(self, engine: Any, step: Step, log: EventLog, turn_id: str) -> list[str]:
        expect: Expect = step.expect
        turn = log.turn(turn_id)
        failures: list[str] = []
        heard, reply = turn["transcript"], turn["reply"].strip()
        for words in expect.transcript_contains:
            if words.lower() not in heard.lower():
                failures.append(f"transcript_contains {words!r}: the transcript was {heard!r}")
        for words in expect.reply_contains:
            if words.lower() not in reply.lower():
                failures.append(f"reply_contains {words!r}: the reply was {reply!r}")
        if (tool := expect.tool_called) is not None:
            calls = [(c["name"], _arguments(c["arguments"])) for c in turn["tools"]]
            if not any(name == tool.name and all(args.get(k) == v for k, v in tool.arguments.items())
                       for name, args in calls):
                failures.append(f"tool_called {tool.name}({json.dumps(tool.arguments)}): the calls were "
                                f"{', '.join(f'{n}({json.dumps(a)})' for n, a in calls) or 'none'}")
        if expect.interrupted is not None and (turn["interrupted"] is not None) != expect.interrupted:
            failures.append(f"interrupted {str(expect.interrupted).lower()}: the reply was "
                            + (f"interrupted ({turn['interrupted']})" if turn["interrupted"] else "not interrupted"))
        for figure, budget in expect.within_ms.items():
            name = figure or VOICE_FIGURE[step.kind]
            value = turn["figures"].get(name)
            if not isinstance(value, (int, float)):
                failures.append(f"within_ms {name} <= {budget:g}: the turn has no {name}")
            elif value > budget:
                failures.append(f"within_ms {name} <= {budget:g}: it took {value:.0f} ms")
        if expect.judge is not None:
            verdict = await self._judge(engine, expect.judge.intent, expect.judge.llm, heard, reply)
            if not verdict.upper().startswith("PASS"):
                failures.append(f"judge {expect.judge.intent!r}: {verdict or 'no verdict'} (the reply was {reply!r})")
        return failures

    async def _judge(self, engine: Any, intent: str, llm: dict[str, Any] | None, heard: str, reply: str) -> str:
        ref = llm or self.file.judge
        provider = make_provider(engine, "llm", ref) if ref else engine.runtime.llm[0].provider
        if ref:
            await provider.start()
        messages = [Message("system", JUDGE_PROMPT),
                    Message("user", f"Intent: {intent}\nThe user said: {heard}\nThe assistant replied: {reply}")]
        try:
            text = "".join([c.text async for c in provider.stream(messages) if isinstance(c, TextDelta)])  # type: ignore[attr-defined]
        finally:
            if ref:
                await provider.aclose()
        return text.strip()


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def run_file(scenarios: ScenarioFile, config: dict[str, Any] | None = None, *, select: str | None = None,
                   on_outcome: Callable[[Outcome], None] | None = None) -> tuple[list[Outcome], list[str]]:
    """Run every scenario (``select``: those whose name contains it), one after the other; outcomes and notes."""
    runner = Runner(scenarios, config)
    outcomes = []
    try:
        for scenario in scenarios.scenarios:
            if select is not None and select not in scenario.name:
                continue
            outcome = await runner.run(scenario)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        await runner.aclose()
    return outcomes, runner.notes

