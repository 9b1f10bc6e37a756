"""The pacer: shared timers for paced frames, never early, at most a grid step late, cancellable one by one."""

from __future__ import annotations

import asyncio

import pytest

from vocable.engine.pacer import Pacer

TOLERANCE_S = 0.002  # loop timers have millisecond resolution


async def test_waits_share_one_timer_per_slot() -> None:
    pacer = Pacer.current()
    assert Pacer.current() is pacer
    futures = [pacer.sleep(0.05) for _ in range(200)]
    assert pacer.pending_timers() <= 2  # 200 waits, one or two grid slots (the clock may cross a slot edge)
    await asyncio.gather(*futures)
    assert pacer.pending_timers() == 0


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.012, 0.03])
async def test_never_early_and_at_most_a_grid_step_late(delay: float) -> None:
    pacer = Pacer.current()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pacer.sleep(delay)
    waited = loop.time() - started
    assert waited >= delay - TOLERANCE_S
    assert waited <= delay + pacer.grid_s + 0.05  # generous upper bound on a busy machine


async def test_cancelling_one_wait_leaves_the_others() -> None:
    pacer = Pacer.current()

    async def wait() -> str:
        await pacer.sleep(0.02)
        return "done"

    tasks = [asyncio.create_task(wait()) for _ in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == "done" and results[2] == "done"
    assert isinstance(results[1], asyncio.CancelledError)


def test_each_loop_has_its_own_pacer() -> None:
    async def which() -> Pacer:
        pacer = Pacer.current()
        await pacer.sleep(0.001)
        return pacer

    first = asyncio.run(which())
    second = asyncio.run(which())
    assert first is not second


def test_grid_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="positive"):
            Pacer(loop, grid_s=0)
    finally:
        loop.close()


async def test_paced_replies_keep_real_time_on_shared_timers() -> None:
    """Three paced replies at once: each plays at real time (after the lead), on a handful of shared timers."""
    from vocable.engine.events import AudioOut, MetricsEvent, Ready
    from vocable.testing.scripted import scripted_engine

    engine = scripted_engine(llm={"provider": "scripted", "reply": "A reply that lasts about one second."},
                             tts={"provider": "scripted", "ms_per_char": 30, "chunk_ms": 20})
    await engine.start()
    loop = asyncio.get_running_loop()
    pacer = Pacer.current()
    most_timers = 0

    async def one() -> tuple[float, float, int]:
        nonlocal most_timers
        async with engine.conversation(pace=True) as conv:
            await conv.next_event(Ready)
            await conv.send_text("hello")
            started = last = 0.0
            audio_bytes = 0
            while not isinstance(event := await asyncio.wait_for(conv.session.events.get(), 5), MetricsEvent):
                if isinstance(event, AudioOut):
                    last = loop.time()
                    started = started or last
                    audio_bytes += len(event.pcm)
                    most_timers = max(most_timers, pacer.pending_timers())
            return started, last, audio_bytes

    try:
        results = await asyncio.gather(one(), one(), one())
    finally:
        await engine.stop()
    lead_s = engine.config.pipeline.output.lead_ms / 1000
    for started, last, audio_bytes in results:
        audio_s = audio_bytes / 2 / 16000
        assert audio_s > 0.8
        assert last - started >= audio_s - lead_s - 0.05  # not sent faster than real time plus the lead
    assert 0 < most_timers <= 4  # three streams, one 20 ms frame each: a few 5 ms slots, never one per wait


def test_a_closed_loop_and_its_pacer_are_not_kept() -> None:
    import gc

    async def use() -> None:
        await Pacer.current().sleep(0.001)

    before = len(Pacer._per_loop)
    for _ in range(20):
        asyncio.run(use())
    gc.collect()
    assert len(Pacer._per_loop) <= before + 1
