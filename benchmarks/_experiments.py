"""Proposed changes to vocable's hot path, applied as patches inside the benchmark's server process only.

They let ``ab_variants.py`` measure a proposal (CPU per session, lateness) before it lands in the code it
touches; docs/performance.md records the figures. A variant whose change has landed becomes a no-op and
should be deleted here (landed so far: Framer fast path, Event.to_wire without asdict, one yield per
sentence in the TTS pump). Nothing outside the benchmark server process is patched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

VARIANTS: dict[str, Callable[[], None]] = {}


def variant(fn: Callable[[], None]) -> Callable[[], None]:
    VARIANTS[fn.__name__] = fn
    return fn


@variant
def vad_dot() -> None:
    """energy VAD: mean power by one float32 dot product instead of np.mean (3 numpy calls -> 1)."""
    from vocable.providers import energy_vad

    def probability(self: Any, frame: bytes) -> float:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        n = samples.size
        if n == 0:
            return 0.0
        return 1.0 if float(samples.dot(samples)) >= self._threshold * self._threshold * n else 0.0

    energy_vad._EnergyStream.probability = probability  # type: ignore[method-assign]


@variant
def send_no_timeout() -> None:
    """WebSocket writer: no asyncio.timeout around every send (the slow-client check moves to a 1 Hz watchdog).

    This measures the upper bound of the gain: the watchdog itself (one wake-up per connection per second,
    checking when the pending send started) is not modelled.
    """
    import json

    from starlette.websockets import WebSocketDisconnect

    from vocable.engine.events import AudioOut
    from vocable.transports import websocket as ws_module

    async def _send(self: Any, event: Any) -> None:
        if isinstance(event, AudioOut):
            message: dict[str, Any] = {"type": "websocket.send", "bytes": event.pcm}
            size = len(event.pcm)
        else:
            text = json.dumps(event.to_wire(), separators=(",", ":"), ensure_ascii=False, default=str)
            message = {"type": "websocket.send", "text": text}
            size = len(text)
        try:
            await self.ws.send(message)
        except (WebSocketDisconnect, OSError, RuntimeError):
            self._sending = False
            self.end(ws_module.Ending(None, "client_disconnected", resumable=True))
        else:
            self.bytes_out += size

    ws_module.Connection._send = _send  # type: ignore[method-assign]


@variant
def channel_lowwater() -> None:
    """Channel: a full channel wakes its producer once it is half empty, not on every get (fewer wake-ups)."""
    from vocable.engine.channel import Channel

    async def get(self: Any) -> Any:
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        if len(self._items) <= self.maxsize // 2:
            self._writable.set()
        return item

    Channel.get = get  # type: ignore[method-assign]


@variant
def no_stall_timer() -> None:
    """fallback_stream: no asyncio.timeout per item after the first (upper bound of a 1 Hz stall watchdog)."""
    from vocable.engine import turn

    turn.LLM_STALL_S = None  # type: ignore[assignment]
    turn.TTS_STALL_S = None  # type: ignore[assignment]


@variant
def dedupe_interims() -> None:
    """Session: an interim transcript identical to the one just sent is not sent again (STTs that re-decode
    growing audio, and the scripted one, repeat themselves while the user pauses)."""
    from vocable.engine.events import Transcript
    from vocable.engine.session import Session

    emit = Session._emit

    async def _emit(self: Any, event: Any) -> None:
        if isinstance(event, Transcript):
            key = (event.turn_id, event.text)
            if not event.final and getattr(self, "_last_transcript", None) == key:
                return
            self._last_transcript = key
        await emit(self, event)

    Session._emit = _emit  # type: ignore[method-assign]


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

    async def send_audio(self: Any, pcm: bytes) -> None:
        return None

    Session.send_audio = send_audio  # type: ignore[method-assign]


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
def gc_freeze() -> None:
    """Freeze everything alive once the engine has started (modules, config, models) out of the collector."""
    import gc

    from vocable.engine.engine import Engine

    _gc_report()
    start = Engine.start

    async def started(self: Any) -> None:
        await start(self)
        gc.collect()
        gc.freeze()

    Engine.start = started  # type: ignore[method-assign]


@variant
def gc_tuned() -> None:
    """gc_freeze, and full collections considered only after 1000 (not 10) middle-generation collections."""
    import gc

    gc_freeze()
    gc.set_threshold(700, 10, 1000)
