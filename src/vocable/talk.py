"""``vocable talk``: one spoken turn from a WAV file through the whole pipeline, with no network."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vocable.engine.events import AudioOut, ErrorEvent, MetricsEvent, Reply, Transcript
from vocable.testing.speech import read_wav, silence, write_wav

FRAME_MS = 20
TAIL_SILENCE_MS = 2000


@dataclass
class TalkResult:
    transcript: str = ""
    reply: str = ""
    latency: dict[str, Any] = field(default_factory=dict)
    audio_seconds: float = 0.0


async def run_talk(engine: Any, wav_in: str, wav_out: str | None, timeout_s: float = 120.0) -> TalkResult:
    pcm, rate = read_wav(wav_in)
    if not pcm:
        raise ValueError(f"{wav_in} holds no audio")
    result = TalkResult()
    audio = bytearray()
    await engine.start()
    try:
        async with engine.conversation(pace=False, input_sample_rate=rate) as conv:
            step = rate * FRAME_MS // 1000 * 2
            clip = pcm + silence(TAIL_SILENCE_MS, rate)
            for i in range(0, len(clip), step):
                await conv.send_audio(clip[i : i + step])
            events = await conv.collect_turn(timeout_s)
        out_rate = conv.session.output_sample_rate
    finally:
        await engine.stop()
    for event in events:
        if isinstance(event, Transcript) and event.final:
            result.transcript = event.text
        elif isinstance(event, Reply):
            result.reply += event.text
        elif isinstance(event, AudioOut):
            audio += event.pcm
        elif isinstance(event, MetricsEvent):
            result.latency = {k: v for k, v in event.figures.items() if k.endswith("_ms")}
        elif isinstance(event, ErrorEvent):
            raise RuntimeError(f"{event.code}: {event.message}")
    if not result.transcript:
        raise RuntimeError("no speech was recognised in the input")
    result.audio_seconds = len(audio) / 2 / out_rate
    if wav_out:
        write_wav(wav_out, bytes(audio), out_rate)
    return result
