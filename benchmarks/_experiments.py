"""Proposed changes to vocable's hot path, applied as patches inside the benchmark's server process only.

They let ``ab_variants.py`` measure a proposal (CPU per session, lateness) before it lands in the code it
touches; docs/performance.md records the figures. A variant whose change has landed becomes a no-op and
should be deleted here (landed so far, so gone: Framer fast path, Event.to_wire without asdict, the dot
product VAD, no timeout per send, the channel's low-water mark, no timer per stream item, no repeated
interims, the shared pacing timers). Upper bounds, which leave a part of the work out to show what it costs, and collector
measurements stay. Nothing outside the benchmark server process is patched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

VARIANTS: dict[str, Callable[[], None]] = {}


def variant(fn: Callable[[], None]) -> Callable[[], None]:
    VARIANTS[fn.__name__] = fn
    return fn


# ---- upper bounds: not proposals, but what a part of the work costs, measured by leaving it out


@variant
def no_reply() -> None:
    """Upper bound of what replies cost: the LLM says nothing, so no TTS, no paced audio, no reply events."""
    from vocable.testing import fakes

    async def stream(self: Any, messages: Any, *, tools: Any = ()) -> Any:
        return
        yield  # an async generator that ends at once

    fakes.ScriptedLLM.stream = stream  # type: ignore[method-assign]


@variant
def deaf() -> None:
    """Upper bound of what hearing costs: the VAD hears only silence, so no STT, no turns, no replies."""
    from vocable.providers import energy_vad

    energy_vad._EnergyStream.probability = lambda self, frame: 0.0  # type: ignore[method-assign]


@variant
def null_session() -> None:
    """Upper bound of the whole engine's input path: audio reaches the session and is dropped unread."""
    from vocable.engine.session import Session

    Session.feed_audio = lambda self, pcm: None  # type: ignore[method-assign]


@variant
def silent_tts() -> None:
    """Upper bound of what reply audio costs: the TTS makes none (the reply's text events still go out)."""
    from vocable.testing import fakes

    async def synthesize(self: Any, text: str) -> Any:
        return
        yield

    fakes.ScriptedTTS.synthesize = synthesize  # type: ignore[method-assign]


@variant
def unpaced() -> None:
    """Upper bound of what pacing costs: reply audio goes out as fast as the TTS makes it, no timer per frame."""
    from vocable.engine import turn

    def delay(self: Any, frame: bytes) -> float:
        self.sent_s += len(frame) / 2 / self.sample_rate
        return 0.0

    turn.Player.delay = delay  # type: ignore[method-assign]


@variant
def tts_one_chunk() -> None:
    """What the TTS's 20 ms chunks cost: each sentence's audio comes as one chunk (the player still frames
    and paces it)."""
    from vocable.providers.base import AudioChunk
    from vocable.testing import fakes

    async def synthesize(self: Any, text: str) -> Any:
        s = self.settings
        ms = max(s.chunk_ms, len(text) * s.ms_per_char)
        yield AudioChunk(fakes.tone(ms, s.sample_rate), s.sample_rate)

    fakes.ScriptedTTS.synthesize = synthesize  # type: ignore[method-assign]


@variant
def no_text_events() -> None:
    """Upper bound of what JSON events cost: only audio reaches the client (states, transcripts, reply
    text and metrics are dropped before encoding)."""
    from vocable.engine.events import AudioOut
    from vocable.engine.outbox import Outbox

    emit = Outbox.emit

    def only_audio(self: Any, event: Any) -> Any:
        if type(event) is AudioOut:
            return emit(self, event)
        return _done()

    async def _done() -> None:
        return None

    Outbox.emit = only_audio  # type: ignore[method-assign]


@variant
def no_interims() -> None:
    """What interim transcripts cost: the STT gives finals only."""
    from vocable.testing import fakes

    init = fakes.ScriptedSTT.__init__

    def no_interim_init(self: Any, settings: Any = None) -> None:
        init(self, settings)
        self.settings = self.settings.model_copy(update={"interim_every_ms": 0})

    fakes.ScriptedSTT.__init__ = no_interim_init  # type: ignore[method-assign]


# ---- garbage collection: pauses of the cyclic collector show up as lateness spikes, not as CPU


def _gc_report() -> None:
    """Record every collection's pause; the server writes the figures to $VOCABLE_GC_REPORT.<pid> at exit."""
    import atexit
    import gc
    import json
    import os
    import signal
    import time

    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(callback)
    path = os.environ.get("VOCABLE_GC_REPORT")

    def write() -> None:
        if path:
            with open(f"{path}.{os.getpid()}", "w") as f:
                json.dump({g: {"count": len(p), "max_ms": round(max(p, default=0), 2),
                               "total_ms": round(sum(p), 1)} for g, p in pauses.items()}, f)

    atexit.register(write)
    signal.signal(signal.SIGTERM, lambda *_: (write(), os._exit(0)))


@variant
def gc_report() -> None:
    """No change: only records the collector's pauses (see _gc_report)."""
    _gc_report()


@variant
def gc_tuned() -> None:
    """Full collections considered only after 1000 (not 10) middle-generation collections (the freeze of
    what is alive after start-up has landed: ``Engine(freeze_gc=True)``, as ``vocable serve`` runs)."""
    import gc

    _gc_report()
    gc.set_threshold(700, 10, 1000)


@variant
def call_counts() -> None:
    """No change: runs the server under cProfile (slow: for call counts, not CPU) and writes the stats to
    $VOCABLE_PROFILE.<pid> when it is stopped (``pstats`` reads them)."""
    import cProfile
    import os
    import signal

    profiler = cProfile.Profile()
    path = os.environ.get("VOCABLE_PROFILE")

    def write(*_: Any) -> None:
        profiler.disable()
        if path:
            profiler.dump_stats(f"{path}.{os.getpid()}")
        os._exit(0)

    signal.signal(signal.SIGTERM, write)
    profiler.enable()


@variant
def asgi_frames() -> None:
    """vocable on uvicorn's own WebSocket protocol: every frame through the ASGI queue and ``send`` (no direct frames)."""
    from vocable.transports import direct_frames

    direct_frames.SERVE_OPTIONS["ws"] = "websockets-sansio"


def apply(names: str) -> list[str]:
    applied = []
    for name in (n.strip() for n in names.split(",")):
        if not name or name == "baseline":
            continue
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        VARIANTS[name]()
        applied.append(name)
    return applied
