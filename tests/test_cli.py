"""The `vocable` command: plugins, check, schema, and the example third-party plugin installed with pip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from vocable.testing.scripted import scripted_config
from vocable.testing.speech import read_wav

ROOT = Path(__file__).resolve().parents[1]
VOCABLE = [sys.executable, "-m", "vocable.cli"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*VOCABLE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "vocable.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_plugins_lists_providers_by_kind():
    out = run("plugins")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for kind in ("stt:", "llm:", "tts:", "vad:", "turn:", "metrics:", "transport:"):
        assert kind in text
    assert "scripted" in text and "energy" in text and "silence" in text
    data = json.loads(run("plugins", "--json").stdout)
    assert data["providers"]["llm"]["scripted"] == "testing"


def test_check_accepts_a_good_config(tmp_path):
    out = run("check", str(write(tmp_path, scripted_config())))
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout and "llm: scripted" in out.stdout


def test_check_names_a_misspelt_key(tmp_path):
    data = scripted_config(llm={"provider": "scripted", "temprature": 0.2})
    out = run("check", str(write(tmp_path, data)))
    assert out.returncode == 1
    assert "pipeline.llm.temprature: unknown key" in out.stderr


def test_check_reports_every_error(tmp_path):
    data = scripted_config(llm={"provider": "nope"}, tts={"provider": "scripted", "chunk_ms": -1})
    out = run("check", str(write(tmp_path, data)))
    assert out.returncode == 1
    assert "pipeline.llm.provider" in out.stderr and "pipeline.tts.chunk_ms" in out.stderr
    assert "2 error(s)" in out.stderr


def test_schema_is_json_schema():
    out = run("schema")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert "pipeline" in schema["properties"]
    assert "llm__scripted" in schema["$defs"]


@pytest.fixture(scope="module")
def reverse_installed():
    """pip-install the example plugin, as a plugin's user would, and remove it afterwards."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    str(ROOT / "examples" / "vocable-reverse")], check=True, capture_output=True, timeout=300)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "vocable-reverse"],
                   capture_output=True, timeout=120)


def test_example_plugin_is_found_and_selected_through_yaml(reverse_installed, tmp_path):
    out = run("plugins")
    assert "reverse" in out.stdout and "from reverse" in out.stdout
    data = scripted_config(llm={"provider": "reverse", "uppercase": True})
    assert run("check", str(write(tmp_path, data))).returncode == 0
    bad = scripted_config(llm={"provider": "reverse", "upper": True})
    assert "pipeline.llm.upper: unknown key" in run("check", str(write(tmp_path, bad))).stderr
    script = (
        "import asyncio, sys\n"
        "from vocable import Engine\n"
        "from vocable.engine.events import Reply\n"
        "async def main():\n"
        f"    engine = Engine.from_yaml({str(tmp_path / 'vocable.yaml')!r})\n"
        "    await engine.start()\n"
        "    async with engine.conversation(pace=False) as conv:\n"
        "        await conv.send_text('one two three')\n"
        "        events = await conv.collect_turn()\n"
        "    await engine.stop()\n"
        "    print(''.join(e.text for e in events if isinstance(e, Reply)))\n"
        "asyncio.run(main())\n"
    )
    write(tmp_path, data)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "THREE TWO ONE."


def test_example_plugin_passes_the_contract_kit(reverse_installed):
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "examples" / "vocable-reverse" / "tests")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT / "examples" / "vocable-reverse")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed" in out.stdout


# ------------------------------------------------------------------------------------------- talk


def talk_lines(stdout: str, label: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in stdout.splitlines() if line.startswith(label + ":")]


@pytest.mark.parametrize("turns", [False, True])
def test_talk_answers_a_recording_with_pauses(tmp_path, turns):
    from test_talk import PHRASES, recording, spoken_bytes, talk_config

    config = write(tmp_path, talk_config(0 if turns else 400))
    reply = tmp_path / "reply.wav"
    flags = ["--turns"] if turns else []
    out = run("talk", recording(tmp_path / "in.wav"), "-c", str(config), "-o", str(reply), *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    heard = PHRASES if turns else [" ".join(PHRASES)]  # the whole file is one turn unless --turns
    assert talk_lines(out.stdout, "you said") == heard
    assert talk_lines(out.stdout, "agent said") == [f"You said: {text}." for text in heard]
    assert len(talk_lines(out.stdout, "latency")) == len(heard)
    assert all("voice_to_voice_ms=" in line for line in talk_lines(out.stdout, "latency"))  # no reply cut off
    pcm, rate = read_wav(str(reply))
    assert len(pcm) == sum(spoken_bytes([f"You said: {text}."]) for text in heard)  # every reply, whole
    assert talk_lines(out.stdout, "reply audio") == [f"{reply} ({len(pcm) / 2 / rate:.2f} s)"]
