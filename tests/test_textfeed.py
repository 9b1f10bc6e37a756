"""TextFeed: every reader gets the whole reply text from the start, in as few pieces as it has arrived."""

from __future__ import annotations

import asyncio

from vocable.engine.textfeed import TextFeed


async def read_all(feed: TextFeed) -> list[str]:
    return [piece async for piece in feed.read()]


async def test_what_piled_up_before_a_read_comes_as_one_piece():
    feed = TextFeed()
    for token in ("Sure.", " Here", " is", " a", " reply."):
        feed.push(token)
    feed.close()
    assert await read_all(feed) == ["Sure. Here is a reply."]


async def test_pieces_arriving_while_the_reader_waits_come_as_they_arrive():
    feed = TextFeed()
    reader = asyncio.create_task(read_all(feed))
    for token in ("One", " two", " three"):
        feed.push(token)
        await asyncio.sleep(0.01)  # the reader takes each before the next arrives
    feed.push(" four")
    feed.push(" five")
    feed.close()
    pieces = await reader
    assert pieces == ["One", " two", " three", " four five"]
    assert feed.first_read is not None


async def test_a_second_reader_starts_at_the_beginning_and_empty_pushes_are_ignored():
    feed = TextFeed()
    feed.push("Hello")
    feed.push("")
    first = await anext(feed.read())
    feed.push(" world")
    feed.close()
    assert first == "Hello"
    assert "".join(await read_all(feed)) == "Hello world" == feed.text


async def test_text_past_max_chars_is_cut_not_queued():
    feed = TextFeed(max_chars=8)
    feed.push("abcdef")
    feed.push("ghijkl")
    feed.push("mn")
    feed.close()
    assert await read_all(feed) == ["abcdefgh"]
