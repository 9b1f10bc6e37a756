"""Channel: bounded, purgeable, and a reader woken once per batch when the producer asks for it."""

from __future__ import annotations

import asyncio

import pytest

from vocable.engine.channel import Channel, ChannelClosed


async def test_items_come_out_in_order_and_none_after_close():
    channel: Channel[int] = Channel(4)
    for i in range(3):
        await channel.put(i)
    channel.close()
    assert [await channel.get() for _ in range(4)] == [0, 1, 2, None]
    with pytest.raises(ChannelClosed):
        await channel.put(9)


async def test_a_full_channel_makes_the_producer_wait_until_the_reader_takes_half():
    channel: Channel[int] = Channel(4)
    for i in range(4):
        await channel.put(i)
    producer = asyncio.create_task(channel.put(4))
    await asyncio.sleep(0.01)
    assert not producer.done() and len(channel) == 4
    await channel.get()
    await asyncio.sleep(0.01)
    assert not producer.done()  # one taken: still above the low-water mark
    await channel.get()
    await asyncio.wait_for(producer, 1)
    assert len(channel) == 3


async def test_put_without_wake_leaves_the_reader_asleep_until_a_put_that_wakes():
    channel: Channel[str] = Channel(8)
    reader = asyncio.create_task(channel.get())
    await asyncio.sleep(0.01)
    await channel.put("a", wake=False)
    await asyncio.sleep(0.01)
    assert not reader.done()  # nothing woke it
    await channel.put("b")
    assert await asyncio.wait_for(reader, 1) == "a"
    assert await channel.get() == "b"


async def test_close_wakes_a_reader_that_was_left_asleep_and_it_drains_first():
    channel: Channel[str] = Channel(8)
    reader = asyncio.create_task(channel.get())
    await asyncio.sleep(0.01)
    await channel.put("late", wake=False)
    channel.close()
    assert await asyncio.wait_for(reader, 1) == "late"
    assert await channel.get() is None


async def test_purge_removes_matching_items_and_frees_room():
    channel: Channel[int] = Channel(3)
    for i in (1, 2, 3):
        await channel.put(i)
    assert channel.purge(lambda i: i % 2 == 1) == 2
    assert channel.put_nowait(9)
    assert [await channel.get(), await channel.get()] == [2, 9]


async def test_the_stt_task_wakes_every_second_frame_and_at_once_for_a_flush():
    import structlog

    from vocable.engine.fallback import LiveProvider
    from vocable.engine.transcriber import Transcriber
    from vocable.providers.base import FLUSH, Flush, TranscriptEvent

    seen: list[object] = []

    class Recorder:
        async def transcribe(self, audio, *, sample_rate):
            async for item in audio:
                seen.append("flush" if isinstance(item, Flush) else item)
                if isinstance(item, Flush):
                    yield TranscriptEvent("done", final=True)

    finals: list[str] = []

    async def on_transcript(event, provider):
        finals.append(event.text)

    async def on_failure(error):
        raise AssertionError(error)

    stt = Transcriber([LiveProvider("rec", Recorder(), 5.0)], sample_rate=16000, frame_ms=20, queue_frames=16,
                      on_transcript=on_transcript, on_failure=on_failure, log=structlog.get_logger())
    stt.start("stt-test")
    await asyncio.sleep(0.01)  # the STT task is waiting for audio
    await stt.push(b"a")
    await asyncio.sleep(0.01)
    assert seen == []  # one frame: the task still sleeps
    await stt.push(b"b")
    await asyncio.sleep(0.01)
    assert seen == [b"a", b"b"]
    await stt.push(b"c")
    await stt.push(FLUSH)  # the end of an utterance wakes it at once, with the frame before it
    await asyncio.sleep(0.01)
    assert seen == [b"a", b"b", b"c", "flush"] and finals == ["done"]
    await stt.aclose()
