"""`vocable test`: the example scenarios pass (barge-in, tool, budget, DTMF, judge...), scenarios written to fail
fail with a message that says what was expected and what happened, and a malformed file is refused with the
path of each mistake."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from vocable.config.loader import ConfigError
from vocable.scenarios.model import load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scenarios.yaml"


def vocable_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vocable.cli", "test", *args], capture_output=True, text=True,
                          timeout=240, cwd=ROOT)


def test_the_example_scenarios_pass(tmp_path: Path) -> None:
    run = vocable_test(str(EXAMPLE), "--junit", str(tmp_path / "results.xml"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "9 passed" in run.stdout.splitlines()[-1]
    assert "scenarios.yaml::barge-in PASSED" in run.stdout and "scenarios.yaml::tool call PASSED" in run.stdout
    suite = ET.parse(tmp_path / "results.xml").getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "9" and suite.get("failures") == "0"
    names = {case.get("name") for case in suite.iter("testcase")}
    assert {"barge-in", "tool call", "latency budget", "dtmf keys", "judged reply"} <= names


FAILING = {
    "config": yaml.safe_load(EXAMPLE.read_text())["config"],
    "judge": {"provider": "scripted", "reply": "FAIL: it talks about something else."},
    "scenarios": [
        {"name": "wrong words", "steps": [{"text": "What is the weather in Paris?", "expect": {
            "reply_contains": "rain", "transcript_contains": "Lyon"}}]},
        {"name": "no tool", "steps": [{"text": "Will it rain?", "expect": {"tool_called": {"name": "get_weather"}}}]},
        {"name": "too slow", "config": {"pipeline": {"llm": {"provider": "scripted", "echo": True, "first_token_ms": 300}}},
         "steps": [{"text": "Hello?", "expect": {"within_ms": {"llm_ttft_ms": 100}}}]},
        {"name": "not interrupted", "steps": [{"text": "Hi.", "expect": {"interrupted": True}}]},
        {"name": "judged wrong", "steps": [{"text": "Hi.", "expect": {"judge": "the assistant tells a joke"}}]},
        {"name": "passes", "steps": [{"text": "Hi.", "expect": {"reply_contains": "You said: Hi."}}]},
    ],
}


def test_scenarios_written_to_fail_say_why(tmp_path: Path) -> None:
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(FAILING, sort_keys=False))
    run = vocable_test(str(path), "--junit", str(tmp_path / "results.xml"))
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert "failing.yaml::passes PASSED" in out and "5 failed, 1 passed" in out.splitlines()[-1]
    for message in (
        "E   step 1 (text 'What is the weather in Paris?'): transcript_contains 'Lyon': the transcript was "
        "'What is the weather in Paris?'",
        "E   step 1 (text 'What is the weather in Paris?'): reply_contains 'rain': the reply was "
        "'You said: What is the weather in Paris?.'",
        "E   step 1 (text 'Will it rain?'): tool_called get_weather({}): the calls were none",
        "E   step 1 (text 'Hello?'): within_ms llm_ttft_ms <= 100: it took ",
        "E   step 1 (text 'Hi.'): interrupted true: the reply was not interrupted",
        "E   step 1 (text 'Hi.'): judge 'the assistant tells a joke': FAIL: it talks about something else.",
    ):
        assert message in out, out
    suite = ET.parse(tmp_path / "results.xml").getroot()
    assert suite.get("failures") == "5"
    failed = {case.get("name"): case.find("failure") for case in suite.iter("testcase")}
    assert failed["passes"] is None and "the calls were none" in failed["no tool"].get("message")


def test_a_malformed_file_is_refused_with_the_path_of_each_mistake(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"scenarios": [
        {"name": "typo", "steps": [{"text": "hi", "expect": {"reply_contain": "hi"}}]},
        {"name": "two inputs", "steps": [{"text": "hi", "say": "hi"}]},
    ]}))
    run = vocable_test(str(path))
    assert run.returncode == 2
    assert "scenarios[0].steps[0].expect.reply_contain" in run.stderr, run.stderr
    assert "scenarios[1].steps[0]" in run.stderr and "exactly one of text, say, wav, dtmf" in run.stderr
    with pytest.raises(ConfigError):
        load(path)


def test_the_example_file_reads() -> None:
    scenarios = load(EXAMPLE)
    assert len(scenarios.scenarios) >= 8
    kinds = {step.kind for scenario in scenarios.scenarios for step in scenario.steps}
    assert kinds == {"text", "say", "wav", "dtmf"}
    assert any(step.after_ms is not None for scenario in scenarios.scenarios for step in scenario.steps)
