"""``smart-turn`` end of turn: the Smart Turn v3.x ONNX model that ships inside the ``pipecat-ai`` package.

Silence alone cannot tell "What's the capital of..." (thinking) from "What's the capital of France?" (done).
Smart Turn listens to the last 8 s of the utterance (intonation, not just words) and says whether the turn
is complete. We only borrow its weights from pipecat's installed files (BSD-2); the features are computed
by ``_mel`` and the model runs on onnxruntime, so no pipecat code is imported.

Per pause: below ``min_pause_ms`` never end the turn; at ``min_pause_ms`` run the model once, in the
provider's pool (about 40-50 ms); end the turn as soon as it says complete, or in any case at
``max_pause_ms``. The decision is driven by audio time (``pause_ms``), so it behaves the same faster than
real time.
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import Future
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import structlog
from pydantic import Field

from vocable.audio import resample_pcm
from vocable.providers.base import ProviderSettings, Requirement, TurnDetector, TurnStream
from vocable.providers.errors import CapacityExceeded, ConfigurationError, ProviderUnavailable
from vocable.providers.local._assets import matching_files
from vocable.providers.local._mel import SAMPLE_RATE, fit_to_seconds, log_mel
from vocable.providers.local._threads import InferencePool

log = structlog.get_logger("vocable.local")

INSTALL = "pip install 'vocable[local,smart-turn]'"
MODEL_DISTRIBUTION = "pipecat-ai"
WINDOW_SECONDS = 8.0
_MODEL_NAME = re.compile(r"smart-turn-v(\d+)(?:\.(\d+))?.*\.onnx$")


def bundled_model_path() -> Path:
    """The newest Smart Turn v3.x ONNX file inside the installed pipecat-ai (the CPU build when both ship)."""

    def rank(path: Path) -> tuple[int, int, int]:
        match = _MODEL_NAME.match(path.name)
        assert match is not None
        return int(match.group(1)), int(match.group(2) or 0), int("cpu" in path.name)

    def is_v3(rel: PurePosixPath) -> bool:
        match = _MODEL_NAME.match(rel.name)
        return match is not None and match.group(1) == "3"

    found = matching_files(MODEL_DISTRIBUTION, is_v3, install=INSTALL)
    if not found:
        raise ProviderUnavailable(
            f"no smart-turn-v3*.onnx inside the installed {MODEL_DISTRIBUTION!r} (too old?): run {INSTALL} -U"
        )
    return max(found, key=rank)


class SmartTurnSettings(ProviderSettings):
    model_path: str | None = Field(None, description="A Smart Turn v3 ONNX file; default: the newest inside pipecat-ai.")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Probability above which the turn is complete.")
    min_pause_ms: int = Field(200, ge=0, description="Silence before the model is asked (it is asked once per pause).")
    max_pause_ms: int = Field(2000, ge=1, description="Silence that ends the turn whatever the model said.")
    threads: int = Field(1, ge=1, le=8, description="onnxruntime threads per inference.")
    max_queue: int = Field(8, ge=1, description="Inferences running or queued; beyond it a pause falls back to max_pause_ms.")


class SmartTurnStream(TurnStream):
    """One session's pause state: the inference started for the current pause, if any."""

    def __init__(self, detector: SmartTurn) -> None:
        self._detector = detector
        self._pending: Future[float] | None = None
        self._asked = False  # the model was asked (or could not be) during this pause
        self._last_pause_ms = 0.0
        self.last_probability: float | None = None

    def on_pause(self, utterance: bytes, pause_ms: float, sample_rate: int) -> bool:
        settings = self._detector.settings
        if pause_ms < self._last_pause_ms:  # a new pause began without on_speech: start over
            self.on_speech()
        self._last_pause_ms = pause_ms
        if pause_ms >= settings.max_pause_ms:
            return True
        if pause_ms < settings.min_pause_ms:
            return False
        if not self._asked:
            self._asked = True
            try:
                self._pending = self._detector.submit(utterance, sample_rate)
            except CapacityExceeded as exc:
                log.warning("smart-turn queue full; waiting for max_pause_ms", error=str(exc))
            return False
        pending = self._pending
        if pending is None or not pending.done():
            return False
        self._pending = None
        if pending.cancelled():
            return False
        error = pending.exception()
        if error is not None:
            log.warning("smart-turn inference failed; waiting for max_pause_ms", error=repr(error))
            return False
        self.last_probability = pending.result()
        return self.last_probability > settings.threshold

    def on_speech(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pending = None
        self._asked = False
        self._last_pause_ms = 0.0

    async def aclose(self) -> None:
        self.on_speech()


class SmartTurn(TurnDetector):
    """Smart Turn v3 end-of-turn model; one onnxruntime session shared by every session."""

    name = "smart-turn"
    Settings = SmartTurnSettings
    requires = (Requirement("onnxruntime", INSTALL),)

    settings: SmartTurnSettings

    def __init__(self, settings: SmartTurnSettings | None = None) -> None:
        super().__init__(settings)
        self._session: Any = None
        self._input_name = "input_features"
        self._pool: InferencePool | None = None
        self.load_seconds: float | None = None

    @classmethod
    def check_installed(cls) -> None:
        """Besides onnxruntime, the weights must be findable: pipecat-ai is the usual source."""
        super().check_installed()
        bundled_model_path()

    async def start(self) -> None:
        if self._session is not None:
            return
        if self.settings.model_path:
            super().check_installed()
            path = Path(self.settings.model_path).expanduser()
            if not path.is_file():
                raise ConfigurationError(f"model_path {path} is not a file", provider=self.name)
        else:
            self.check_installed()
            path = bundled_model_path()
        began = time.perf_counter()
        self._session = await asyncio.to_thread(self._load, path)
        self._pool = InferencePool(self.name, workers=1, max_pending=self.settings.max_queue)
        await asyncio.wrap_future(self._pool.submit(self.probability, b"", SAMPLE_RATE))  # warm-up
        self.load_seconds = time.perf_counter() - began
        log.info("model loaded", provider=self.name, path=str(path), seconds=round(self.load_seconds, 3))

    def _load(self, path: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = self.settings.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._input_name = session.get_inputs()[0].name
        return session

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._pool = None
        self._session = None

    def open(self) -> SmartTurnStream:
        if self._session is None:
            raise RuntimeError("SmartTurn.start() was not awaited")
        return SmartTurnStream(self)

    def submit(self, utterance: bytes | bytearray, sample_rate: int) -> Future[float]:
        """Queue one inference (non-blocking: ``on_pause`` runs on the event loop).

        The engine's utterance buffer keeps growing while the model runs, so the thread gets a copy of
        just the window the model reads (the last 8 s), taken here on the loop.
        """
        assert self._pool is not None, "SmartTurn.start() was not awaited"
        window = int(WINDOW_SECONDS * sample_rate) * 2
        return self._pool.submit(self.probability, bytes(utterance[-window:]), sample_rate)

    def probability(self, utterance: bytes, sample_rate: int) -> float:
        """Blocking: the model's probability that the turn is complete (only the last 8 s count)."""
        if sample_rate != SAMPLE_RATE:
            utterance = resample_pcm(utterance, sample_rate, SAMPLE_RATE)
        audio = np.frombuffer(utterance[: len(utterance) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        features = log_mel(fit_to_seconds(audio, WINDOW_SECONDS))[np.newaxis]
        (output,) = self._session.run(None, {self._input_name: features})[:1]
        return float(np.asarray(output).reshape(-1)[0])
