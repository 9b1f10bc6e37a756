"""Tracing on the scripted fakes, in process: the real OpenTelemetry SDK exports over OTLP/HTTP to a stand-in
collector on loopback, which decodes the protobuf requests. The span tree, the attributes, the redaction."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from otlp_collector import Collector, Span, tree

from vocable import Engine
from vocable.engine.events import AudioOut, MetricsEvent, Ready, ToolResultEvent
from vocable.testing.scripted import SCRIPTED_PLUGINS, feed, scripted_config, utterance
from vocable.tracing import Tracing

pytest.importorskip("opentelemetry.sdk", reason="tracing needs pip install 'vocable[otel]'")

USER_WORDS = ("weather", "today")  # the scripted STT's transcript: "what is the weather today"
AGENT_WORDS = ("sunny", "hat")  # the scripted LLM's reply: "It is sunny. Take a hat with you today."
LATENCY = ("stt_ms", "eot_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms", "engine_overhead_ms")


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


ENGINES: list[Engine] = []


@pytest.fixture(autouse=True)
def shut_down_exporters() -> Iterator[None]:
    """Each traced engine's exporter stops with its test, before its collector goes away."""
    yield
    while ENGINES:
        tracing_of(ENGINES.pop()).shutdown()


def traced_engine(collector: Collector, sections: dict[str, Any] | None = None, **pipeline: Any) -> Engine:
    """An engine on the scripted fakes exporting to ``collector``; ``sections`` are merged into the config
    (``tracing`` into the tracing section)."""
    config = scripted_config(**pipeline)
    sections = dict(sections or {})
    config["tracing"] = {"endpoint": collector.endpoint, **sections.pop("tracing", {})}
    config.update(sections)
    engine = Engine.from_dict(config, autoload=False, plugins=SCRIPTED_PLUGINS)
    ENGINES.append(engine)
    return engine


def tracing_of(engine: Engine) -> Tracing:
    return next(p for p in engine.host.pm.get_plugins() if isinstance(p, Tracing))


async def exported(engine: Engine, collector: Collector, session_id: str) -> list[Span]:
    """Every span of the session, once its conversation span has been exported."""
    await asyncio.to_thread(tracing_of(engine).force_flush)
    spans = await asyncio.to_thread(collector.wait_for, lambda spans: any(
        s.name == "conversation" and s.attributes["vocable.session.id"] == session_id for s in spans))
    root = next(s for s in spans if s.name == "conversation" and s.attributes["vocable.session.id"] == session_id)
    return [s for s in spans if s.trace_id == root.trace_id]


def only(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def words_in(spans: list[Span], words: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(s.name, key) for s in spans for key, value in s.attributes.items()
            if isinstance(value, str) and set(re.findall(r"[a-z]+", value.lower())) & set(words)]


async def spoken_then_typed(engine: Engine) -> str:
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        session_id = (await conv.next_event(Ready)).session_id
        await feed(conv, utterance())
        await conv.next_event(MetricsEvent, timeout_s=10)
        await conv.send_text("and tomorrow")
        await conv.next_event(MetricsEvent, timeout_s=10)
    await engine.stop()
    return session_id


async def typed_turn(engine: Engine, collector: Collector, text: str) -> list[Span]:
    """A session with one typed turn; its spans."""
    await engine.start()
    async with engine.conversation(pace=False) as conv:
        session_id = (await conv.next_event(Ready)).session_id
        await conv.send_text(text)
        await conv.next_event(MetricsEvent, timeout_s=10)
    await engine.stop()
    return await exported(engine, collector, session_id)


async def test_a_spoken_and_a_typed_turn_make_the_span_tree(collector: Collector) -> None:
    engine = traced_engine(collector)
    session_id = await spoken_then_typed(engine)
    spans = await exported(engine, collector, session_id)
    root = only(spans, "conversation")
    assert root.parent_id == "" and root.kind == 2  # SERVER, a new trace: nothing came with the session
    assert tree(spans, root) == {"conversation": [
        {"turn": [{"end_of_turn": []}, {"stt": []}, {"llm": []}, {"tts": []}]},
        {"turn": [{"llm": []}, {"tts": []}]},  # typed: no speech, no STT
    ]}
    assert root.resource["service.name"] == "vocable"
    assert root.attributes["vocable.session.end_reason"] == "closed" and root.attributes["vocable.session.turns"] == 2
    spoken, typed = sorted((s for s in spans if s.name == "turn"), key=lambda s: s.start_ns)
    for key in LATENCY:
        assert isinstance(spoken.attributes[f"vocable.turn.{key}"], float), key
    assert spoken.attributes["vocable.turn.interrupted"] is False
    assert spoken.attributes["vocable.llm.provider"] == "scripted" and spoken.attributes["vocable.llm.fallback"] is False
    assert spoken.attributes["vocable.breaker.llm.scripted"] == "closed"
    assert "vocable.turn.stt_ms" not in typed.attributes
    llm = next(s for s in spans if s.name == "llm" and s.parent_id == spoken.span_id)
    assert llm.kind == 3  # CLIENT
    assert llm.attributes["gen_ai.operation.name"] == "chat" and llm.attributes["gen_ai.provider.name"] == "scripted"
    assert llm.attributes["gen_ai.usage.input_tokens"] > 0 and llm.attributes["gen_ai.usage.output_tokens"] == 9
    for child in (s for s in spans if s.parent_id == spoken.span_id):  # children lie inside their turn
        assert spoken.start_ns <= child.start_ns <= child.end_ns <= spoken.end_ns, child.name
    stt = next(s for s in spans if s.name == "stt")
    assert stt.attributes["vocable.turn.stt_ms"] == spoken.attributes["vocable.turn.stt_ms"]
    assert abs((stt.end_ns - stt.start_ns) / 1e6 - stt.attributes["vocable.turn.stt_ms"]) < 0.01
    assert words_in(spans, USER_WORDS + AGENT_WORDS + ("tomorrow",)) == []  # include_text is off by default


async def test_include_text_puts_the_words_in(collector: Collector) -> None:
    engine = traced_engine(collector, {"tracing": {"include_text": True, "service_name": "front-desk"}})
    session_id = await spoken_then_typed(engine)
    spans = await exported(engine, collector, session_id)
    spoken = min((s for s in spans if s.name == "turn"), key=lambda s: s.start_ns)
    assert spoken.attributes["vocable.user.text"] == "what is the weather today"
    assert spoken.attributes["vocable.agent.text"] == "It is sunny. Take a hat with you today."
    assert spans[0].resource["service.name"] == "front-desk"


async def test_a_tool_call_is_a_span_under_the_llm(collector: Collector) -> None:
    engine = traced_engine(collector, llm={"provider": "scripted", "echo": True, "tool_call": "clock",
                                           "tool_arguments": '{"city": "Tokyo"}'})

    @engine.tool(description="the time in a city", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    async def clock(city: str) -> str:
        return f"noon in {city}"

    spans = await typed_turn(engine, collector, "what time is it in Tokyo")
    tool, llm = only(spans, "tool"), only(spans, "llm")
    assert tool.parent_id == llm.span_id
    assert tool.attributes["gen_ai.tool.name"] == "clock" and tool.attributes["vocable.tool.status"] == "ok"
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert "gen_ai.tool.call.arguments" not in tool.attributes  # the arguments are the user's words too
    assert llm.start_ns <= tool.start_ns <= tool.end_ns <= llm.end_ns


async def test_an_interrupted_turn_and_a_tool_that_outlives_it(collector: Collector) -> None:
    """The user talks over a reply whose tool is still running: the turn says it was interrupted, and the call,
    which runs on, gets its span under the turn's LLM span when it ends."""
    engine = traced_engine(collector, {"agent": {"filler_after_ms": 10, "fillers": ["Just a moment while I look."]}},
                           llm={"provider": "scripted", "echo": True, "tool_call": "book"},
                           tts={"provider": "scripted", "ms_per_char": 30})  # the filler is the audio talked over
    release = asyncio.Event()

    @engine.tool(description="book a table")
    async def book() -> str:
        await release.wait()
        return "booked"

    await engine.start()
    async with engine.conversation(pace=True) as conv:
        session_id = (await conv.next_event(Ready)).session_id
        await conv.send_text("book a table")
        await conv.next_event(AudioOut, timeout_s=5)
        assert await conv.interrupt()
        metrics = await conv.next_event(MetricsEvent, timeout_s=5)
        assert metrics.figures["interrupted"] is True
        release.set()
        await conv.next_event(ToolResultEvent, timeout_s=5)
    await engine.stop()
    spans = await exported(engine, collector, session_id)
    turn, llm, tool = only(spans, "turn"), only(spans, "llm"), only(spans, "tool")
    assert turn.attributes["vocable.turn.interrupted"] is True
    assert turn.attributes["vocable.turn.interrupted_reason"] == "client" and "interrupted" in turn.events
    assert tool.parent_id == llm.span_id and tool.attributes["vocable.tool.status"] == "ok"
    assert tool.end_ns > turn.end_ns  # it ran on after the turn


async def test_fallback_and_breaker_state(collector: Collector) -> None:
    engine = traced_engine(collector, llm=[
        {"provider": "scripted_other", "fail": "raise", "breaker": {"failures": 1, "cooldown_s": 60}},
        {"provider": "scripted", "reply": "Backup answers."},
    ])
    spans = await typed_turn(engine, collector, "hello")
    turn, llm = only(spans, "turn"), only(spans, "llm")
    assert turn.attributes["vocable.llm.provider"] == "scripted" and turn.attributes["vocable.llm.fallback"] is True
    assert turn.attributes["vocable.breaker.llm.scripted_other"] == "open"
    assert turn.attributes["vocable.breaker.llm.scripted"] == "closed"
    assert llm.attributes["gen_ai.provider.name"] == "scripted"


async def test_without_opentelemetry_tracing_is_a_no_op_with_an_install_hint(
        collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vocable.tracing.observer.otel_missing", lambda: ["opentelemetry.sdk"])
    with capture_logs() as logs:
        engine = traced_engine(collector)
    assert [e["hint"] for e in logs if e["event"] == "tracing_unavailable"] == [
        "tracing is configured but OpenTelemetry is not installed: pip install 'vocable[otel]'"]
    await spoken_then_typed(engine)  # sessions run as usual
    assert tracing_of(engine)._provider is None and collector.requests == 0


async def test_the_standard_environment_variables_fill_what_the_config_leaves_out(
        collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    engine = traced_engine(collector, {"tracing": {"endpoint": None}})  # as `tracing: {}`
    session_id = await spoken_then_typed(engine)
    spans = await exported(engine, collector, session_id)
    assert spans[0].resource["service.name"] == "from-env"
    assert spans[0].resource["deployment.environment"] == "test"


def test_endpoint_and_service_name() -> None:
    from vocable.config.model import TracingConfig
    from vocable.tracing.otel import make_resource, traces_url

    for given in ("http://collector:4318", "http://collector:4318/", "http://collector:4318/v1/traces"):
        assert traces_url(given) == "http://collector:4318/v1/traces"
    assert make_resource(TracingConfig(service_name="desk")).attributes["service.name"] == "desk"


def test_make_resource_defaults_to_vocable(monkeypatch: pytest.MonkeyPatch) -> None:
    from vocable.config.model import TracingConfig
    from vocable.tracing.otel import make_resource

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert make_resource(TracingConfig()).attributes["service.name"] == "vocable"


def test_the_overhead_benchmark_reports_tracing() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "turn_overhead.py"
    run = subprocess.run([sys.executable, str(script), "--turns", "20", "--tracing"], capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])  # the last line is a JSON object
    assert figures["tracing_goal_p50_ms"] == 0.5 and isinstance(figures["tracing_goal_met"], bool)
    assert figures["traced_engine_overhead_p50_ms"] >= 0 and figures["tracing_hooks_p50_ms"] > 0
