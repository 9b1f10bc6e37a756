"""`vocable talk question.wav -o reply.wav` end to end on the offline default, with no network."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vocable.testing.speech import espeak_available, espeak_pcm, read_wav, rms, silence, write_wav

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not espeak_available(), reason="espeak-ng makes the question")]
pytest.importorskip("faster_whisper")
pytest.importorskip("llama_cpp")
pytest.importorskip("piper")


def test_talk_answers_a_spoken_question(tmp_path):
    question = tmp_path / "question.wav"
    reply = tmp_path / "reply.wav"
    write_wav(str(question), silence(200, 22050) + espeak_pcm("What is the capital of France?", sample_rate=22050), 22050)
    out = subprocess.run(
        [sys.executable, "-m", "vocable.cli", "talk", str(question), "-o", str(reply)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "VOCABLE_DB": str(tmp_path / "talk.db")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    heard = lines["you said"].lower()
    assert "capital" in heard and "france" in heard
    assert lines["agent said"].strip()
    assert "voice_to_voice_ms=" in lines["latency"] and "llm_ttft_ms=" in lines["latency"]
    pcm, rate = read_wav(str(reply))
    assert rate == 22050
    assert len(pcm) / 2 / rate > 0.3 and rms(pcm) > 300


def test_talk_reports_a_bad_file_clearly(tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_text("hello")
    out = subprocess.run([sys.executable, "-m", "vocable.cli", "talk", str(bad)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "VOCABLE_DB": str(tmp_path / "t.db")})
    assert out.returncode == 1
    assert "vocable talk:" in out.stderr and "Traceback" not in out.stderr
