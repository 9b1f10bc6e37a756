"""`vocable talk question.wav -o reply.wav` end to end on the offline default, with no network."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from local.localkit import words
from vocable.engine.audio import resample_pcm
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
    assert "capital" in heard, heard  # tiny.en sometimes hears espeak's "France" as "friends": not what this tests
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


# A person reading with natural pauses: each pause is longer than the default 500 ms end-of-turn hangover.
PHRASES = {
    "The weather was cold this morning.": {"cold", "morning"},
    "My brother walked the dog to the park.": {"brother", "dog", "park"},
    "What should we cook for dinner tonight?": {"cook", "dinner"},
}


def talk(tmp_path, *options: str) -> tuple[list[tuple[str, str]], bytes, int]:
    """``vocable talk`` on the three phrases 0.9 s apart (16 kHz mono, ~9 s): its output lines, the reply audio."""
    recording, reply = tmp_path / "reading.wav", tmp_path / "reply.wav"
    pcm = silence(300)
    for i, phrase in enumerate(PHRASES):
        pcm += (silence(900) if i else b"") + espeak_pcm(phrase)
    write_wav(str(recording), pcm + silence(300), 16000)
    out = subprocess.run(
        [sys.executable, "-m", "vocable.cli", "talk", str(recording), "-o", str(reply), *options],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "VOCABLE_DB": str(tmp_path / "talk.db")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [tuple(part.strip() for part in line.split(":", 1)) for line in out.stdout.splitlines() if ":" in line]
    audio, rate = read_wav(str(reply))
    assert ("reply audio", f"{reply} ({len(audio) / 2 / rate:.2f} s)") in lines
    return lines, audio, rate


def test_talk_hears_every_phrase_and_writes_the_whole_reply(tmp_path, whisper):
    lines, audio, rate = talk(tmp_path)
    said = dict(lines)
    assert [key for key, _ in lines].count("you said") == 1  # the pauses did not end the turn
    heard = words(said["you said"])
    for phrase, keys in PHRASES.items():
        assert keys <= heard, (phrase, said["you said"])
    assert "voice_to_voice_ms=" in said["latency"]  # answered, not cut off
    assert len(audio) / 2 / rate > 1.0 and rms(audio) > 300
    # the file holds the whole reply: Whisper hears the reply's words in it, up to the last ones
    reply = said["agent said"].split()
    back = words(whisper.decode(resample_pcm(audio, rate, 16000), 16000)[0])
    assert len(words(" ".join(reply)) & back) >= 0.7 * len(words(" ".join(reply))), (said["agent said"], back)
    assert words(" ".join(reply[-3:])) & back, (said["agent said"], back)


def test_talk_turns_lets_the_pauses_end_turns(tmp_path):
    lines, audio, rate = talk(tmp_path, "--turns")
    turns = [value for key, value in lines if key == "you said"]
    assert len(turns) > 1, lines
    assert len([value for key, value in lines if key == "agent said" and value]) == len(turns)
    assert len(audio) / 2 / rate > 1.0 and rms(audio) > 300
