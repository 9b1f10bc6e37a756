"""fallback_stream: first output wins, retries, and the stall watch that replaced a timer per item."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from vocable.engine.fallback import AllProvidersFailed, LiveProvider, ServedBy, StallWatch, fallback_stream
from vocable.providers.errors import ProviderTimeout, ServiceUnavailable


class Source:
    """A provider whose stream yields ``items``, sleeping ``gaps[i]`` seconds before item i."""

    def __init__(self, items, gaps=(), fail=False):
        self.items, self.gaps, self.fail = list(items), list(gaps), fail
        self.closed = 0

    async def stream(self):
        try:
            if self.fail:
                raise ServiceUnavailable("down", provider="x")
            for i, item in enumerate(self.items):
                if i < len(self.gaps) and self.gaps[i]:
                    await asyncio.sleep(self.gaps[i])
                yield item
        finally:
            self.closed += 1


def chain(*sources, timeout_s=1.0):
    return [LiveProvider(f"p{i}", s, timeout_s) for i, s in enumerate(sources)]


async def collect(stream, pause_s=0.0):
    out = []
    async with aclosing(stream):
        async for item in stream:
            out.append(item)
            if pause_s:
                await asyncio.sleep(pause_s)
    return out


async def test_the_first_provider_with_output_serves_and_every_stream_is_closed():
    down, up = Source([], fail=True), Source(["a", "b", "c"])
    served = ServedBy()
    items = await collect(fallback_stream("llm", chain(down, up), lambda p: p.stream(), served=served,
                                          stall_timeout_s=0.5))
    assert items == ["a", "b", "c"]
    assert served.name == "p1" and [name for name, _ in served.failures] == ["p0"]
    assert down.closed == 1 and up.closed == 1


async def test_every_provider_failing_is_one_error_naming_each():
    with pytest.raises(AllProvidersFailed) as info:
        await collect(fallback_stream("tts", chain(Source([], fail=True), Source([], fail=True)),
                                      lambda p: p.stream()))
    assert "p0" in str(info.value) and "p1" in str(info.value)


async def test_a_stream_that_stalls_after_its_first_item_times_out_and_is_closed():
    stalling = Source(["a", "b"], gaps=(0, 5.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeout, match="stalled for 0.2 s"):
        await collect(fallback_stream("llm", chain(stalling), lambda p: p.stream(), stall_timeout_s=0.2))
    assert 0.15 < loop.time() - started < 2.0
    assert stalling.closed == 1
    assert asyncio.current_task().cancelling() == 0  # the watch took back its own cancellation


async def test_time_the_consumer_spends_on_its_own_is_not_a_stall():
    # each item comes at once, but the consumer holds each one longer than the stall limit (backpressure)
    source = Source(["a", "b", "c", "d"], gaps=(0, 0.05, 0.05, 0.05))
    items = await collect(fallback_stream("tts", chain(source), lambda p: p.stream(), stall_timeout_s=0.15),
                          pause_s=0.2)
    assert items == ["a", "b", "c", "d"]


async def test_slow_but_steady_items_within_the_limit_never_stall():
    source = Source(list("abcdef"), gaps=(0, 0.1, 0.1, 0.1, 0.1, 0.1))  # 0.5 s in all, 0.1 s apart
    items = await collect(fallback_stream("llm", chain(source), lambda p: p.stream(), stall_timeout_s=0.25))
    assert items == list("abcdef")


async def test_a_real_cancellation_while_waiting_stays_a_cancellation():
    source = Source(["a", "b"], gaps=(0, 5.0))

    async def consume():
        return await collect(fallback_stream("llm", chain(source), lambda p: p.stream(), stall_timeout_s=0.3))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed == 1
    await asyncio.sleep(0.4)  # the watch's timer must be gone: nothing fires into a finished task


async def test_the_watch_keeps_at_most_one_timer_and_drops_it_on_close():
    loop = asyncio.get_running_loop()
    watch = StallWatch(10.0)
    before = len(loop._scheduled) if hasattr(loop, "_scheduled") else None
    for _ in range(100):
        watch.waiting()
        watch.resumed()
    if before is not None:  # the default loop exposes its timer heap; uvloop does not
        assert len(loop._scheduled) == before + 1
    assert watch._handle is not None
    watch.close()
    assert watch._handle is None and not watch.expired()
