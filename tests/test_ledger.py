"""The ledgers behind one interface: per process (local), the SQLite file of ``--workers``, and Redis
(``state.url``). One table of tests runs against each: atomic across real processes, conversations intact and
taken once, checkpoints of a dead node's sessions taken only once its heartbeat lapses, the rate limit and
heartbeats shared, every Redis key with an expiry, and Redis down failing fast and clearly.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vocable.engine.ledger import UNBOUND, LocalLedger, SQLiteLedger, StateUnavailable, create_shared_ledger
from vocable.engine.workers import merge_expositions
from vocable.providers.base import Message, ToolCall

pytest_plugins = ["redis_server"]  # the redis_server fixture, from the file beside this

KINDS = ["local", "sqlite", "redis"]
SHARED = ["sqlite", "redis"]


TOKENS = [f"tok{i}" for i in range(150)]
MESSAGES = [
    Message("user", "book a table for two"),
    Message("assistant", "", tool_calls=(ToolCall("call_1", "book", '{"people": 2}'),)),
    Message("tool", '{"ok": true}', tool_call_id="call_1", name="book"),
    Message("assistant", "Done: a table for two."),
]


def _open(kind: str, where: str, prefix: str = "") -> Any:
    if kind == "sqlite":
        return SQLiteLedger(where)
    from vocable.engine.ledger_redis import RedisLedger

    return RedisLedger(where, prefix=prefix)


@pytest.fixture
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(kind, where, key prefix) of a fresh shared ledger: a new SQLite file, or fresh keys in the test Redis."""
    kind = request.node.callspec.params["kind"]
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return kind, server.url, server.prefix()
    path = str(tmp_path / "ledger.sqlite3")
    create_shared_ledger(path)
    return kind, path, ""


@pytest.fixture
async def pair(place: tuple[str, str, str]) -> AsyncIterator[tuple[Any, Any]]:
    """Two processes' views of one ledger (two workers, or two nodes); one and the same for ``local``."""
    kind, where, prefix = place
    if kind == "local":
        one = LocalLedger()
        yield one, one
        return
    one, two = _open(kind, where, prefix), _open(kind, where, prefix)
    try:
        yield one, two
    finally:
        await one.aclose()
        await two.aclose()


def _claim_all(kind: str, where: str, prefix: str, start: Any) -> list[str]:
    """In a worker process: claim every token; return the ones this process won."""
    async def run() -> list[str]:
        ledger = _open(kind, where, prefix)
        won = [t for t in TOKENS if await ledger.claim_token(t, time.time() + 60) is None]
        await ledger.aclose()
        return won
    start.wait(30)
    return asyncio.run(run())


@pytest.mark.parametrize("kind", SHARED)
def test_two_processes_racing_for_the_same_tokens_never_both_win(kind: str, place: tuple[str, str, str]) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(2)  # the two processes start claiming together, once both are up
        with context.Pool(2) as pool:
            results = [pool.apply_async(_claim_all, (*place, start)) for _ in range(2)]
            won = [r.get(60) for r in results]
    assert sorted(won[0] + won[1]) == sorted(TOKENS)  # every token claimed exactly once
    assert not set(won[0]) & set(won[1])


@pytest.mark.parametrize("kind", KINDS)
async def test_a_parked_conversation_comes_back_whole_and_only_once(kind: str, pair: tuple[Any, Any]) -> None:
    parking, taking = pair
    await parking.park("ses_1", MESSAGES, time.time() + 30)
    await parking.park("ses_old", MESSAGES, time.time() - 1)
    assert await taking.take("ses_1") == MESSAGES
    assert await taking.take("ses_1") is None  # taken once: a second reconnect does not get it again
    assert await taking.take("ses_old") is None  # past its grace window
    assert await taking.holder("ses_1") is None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_token_is_claimed_once_bound_to_its_session_and_released_only_unbound(
        kind: str, pair: tuple[Any, Any]) -> None:
    one, two = pair
    assert await one.claim_token("t", time.time() + 30) is None
    assert await two.claim_token("t", time.time() + 30) == UNBOUND
    assert await two.token_owner("t") == UNBOUND
    await one.bind_token("t", "ses_1", time.time() + 30)
    assert await two.claim_token("t", time.time() + 30) == "ses_1"
    await two.release_token("t")  # bound tokens are not released
    assert await one.claim_token("t", time.time() + 30) == "ses_1"
    assert await one.claim_token("u", time.time() + 30) is None
    await two.release_token("u")  # a claim whose session never opened: the token works again
    assert await one.claim_token("u", time.time() + 30) is None
    assert await one.claim_token("old", time.time() - 1) is None  # an expired claim is gone
    assert await two.token_owner("old") is None
    assert await two.token_owner("never") is None


@pytest.mark.parametrize("kind", KINDS)
async def test_the_rate_limit_is_shared(kind: str, pair: tuple[Any, Any]) -> None:
    one, two = pair
    assert [await one.hit("1.2.3.4", 3), await two.hit("1.2.3.4", 3), await one.hit("1.2.3.4", 3)] == [True] * 3
    assert await two.hit("1.2.3.4", 3) is False
    assert await one.hit("1.2.3.4", 3) is False
    assert await two.hit("5.6.7.8", 3) is True


@pytest.mark.parametrize("kind", SHARED)
async def test_heartbeats_are_shared(kind: str, pair: tuple[Any, Any]) -> None:
    one, two = pair
    await one.publish("101", {"sessions": [{"id": "a"}]})
    await two.publish("102", {"sessions": []})
    assert await one.workers(5) == {"101": {"sessions": [{"id": "a"}]}, "102": {"sessions": []}}
    await two.forget_worker("102")
    assert set(await one.workers(5)) == {"101"}


async def _until(check: Any, what: str, timeout_s: float = 10.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while not (value := await check()):
            await asyncio.sleep(0.02)
    assert value, what
    return value


@pytest.mark.parametrize("kind", SHARED)
async def test_a_dead_nodes_conversation_is_taken_once_its_heartbeat_lapses(kind: str, pair: tuple[Any, Any]) -> None:
    """A live node's checkpoint is not taken; once its heartbeat is older than ``orphan_after_s`` it is, once."""
    node_a, node_b = pair
    for ledger in pair:
        ledger.orphan_after_s = 0.3  # 3 s in production; short here, and awaited rather than slept
    await node_a.publish("node-a", {"sessions": [{"id": "ses_live"}]})
    await node_a.checkpoint("ses_live", "node-a", MESSAGES, grace_s=30, keep_s=60)
    assert await node_b.take("ses_live") is None  # node-a is alive: its session is not anyone else's
    assert await node_b.holder("ses_live") == "node-a"
    # node-a stops beating (it was killed): a little later its conversation is free, for one taker
    taken = await _until(lambda: node_b.take("ses_live"), "the dead node's conversation was taken")
    assert taken == MESSAGES
    assert await node_b.take("ses_live") is None and await node_b.holder("ses_live") is None


@pytest.mark.parametrize("kind", SHARED)
async def test_checkpoints_end_with_the_grace_window_and_with_the_session(kind: str, pair: tuple[Any, Any]) -> None:
    node_a, node_b = pair
    for ledger in pair:
        ledger.orphan_after_s = 0.2
    await node_a.publish("node-a", {"sessions": []})
    await node_a.checkpoint("ses_graceless", "node-a", MESSAGES, grace_s=0, keep_s=60)
    await node_a.checkpoint("ses_ended", "node-a", MESSAGES, grace_s=30, keep_s=60)
    await node_a.drop("ses_ended")  # it ended with "end": never resumable, even after node-a dies
    await _until(lambda: _none(node_b.holder("ses_graceless")), "node-a's heartbeat lapsed")
    assert await node_b.take("ses_graceless") is None  # no grace: a dead node's sessions are gone with it
    assert await node_b.take("ses_ended") is None
    await node_a.checkpoint("ses_replaced", "node-a", MESSAGES[:1], grace_s=30, keep_s=60)
    await node_a.park("ses_replaced", MESSAGES, time.time() + 30)  # its client dropped: parked, taken at once
    await node_a.checkpoint("ses_replaced", "node-a", MESSAGES[:2], grace_s=30, keep_s=60)  # late: ignored
    assert await node_b.holder("ses_replaced") is None
    assert await node_b.take("ses_replaced") == MESSAGES


async def test_a_conversation_parked_between_a_take_and_a_look_is_taken() -> None:
    """``take_waiting``: a take finds the session live on its node, which parks it before the next look."""
    from vocable.engine.gate import take_waiting

    class Parking(LocalLedger):
        shared = True
        takes = 0

        async def take(self, session_id: str) -> list[Message] | None:
            self.takes += 1
            return None if self.takes == 1 else MESSAGES  # live at the first take, parked by the second

        async def holder(self, session_id: str) -> str | None:
            return None  # by the time we look, nobody holds it: it was parked

    ledger = Parking()
    assert await take_waiting(ledger, "ses_1", "node-b") == MESSAGES and ledger.takes == 2


async def _none(value: Any) -> bool:
    return await value is None


async def test_redis_every_key_expires_and_each_operation_is_one_round_trip(redis_server: Any) -> None:
    from vocable.engine.ledger_redis import RedisLedger

    prefix = redis_server.prefix()
    ledger = RedisLedger(redis_server.url, prefix=prefix, transcript_ttl_s=120)
    try:
        await ledger.ping()
        before = ledger.round_trips
        assert await ledger.claim_token("t", time.time() + 30) is None
        await ledger.bind_token("t", "ses_1", time.time() + 30)
        assert await ledger.hit("9.9.9.9", 5)
        await ledger.park("ses_p", MESSAGES, time.time() + 30)
        record = {"transport": "websocket", "session_started_at": 1.5,
                  "turn": {"turn_id": "turn_1", "user_text": "hi", "reply_text": "Hello.", "metrics": {}}}
        await ledger.checkpoint("ses_1", "node-a", MESSAGES, grace_s=30, keep_s=60, record=record)
        await ledger.publish("node-a", {"sessions": []})
        assert ledger.round_trips - before == 6  # one call each, pipelines and scripts included
        keys = await ledger.redis.keys(f"{prefix}*")
        assert len(keys) == 8, keys  # tok, hits, 2 conv, ses, turns, nodes, node
        for key in keys:
            assert await ledger.redis.pttl(key) > 0, f"{key} never expires"
        transcript = await ledger.transcript("ses_1")
        assert transcript is not None and transcript["transport"] == "websocket"
        assert [t["reply_text"] for t in transcript["turns"]] == ["Hello."]
        assert await ledger.transcript("ses_none") is None
    finally:
        await ledger.aclose()


async def test_redis_down_fails_fast_and_clearly_then_works_again(redis_server: Any) -> None:
    from vocable.config.model import ServerConfig
    from vocable.engine.gate import Gate, Refused
    from vocable.engine.ledger_redis import RedisLedger
    from vocable.testing.server import free_port

    dead = RedisLedger(f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0", timeout_s=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StateUnavailable) as down:
        await dead.claim_token("t", time.time() + 30)
    assert loop.time() - started < 2
    assert "unreachable" in str(down.value) and "s3cret-pass" not in str(down.value)
    gate = Gate(ServerConfig(rate_limit_per_minute=10), dead)
    with pytest.raises(Refused) as refused:
        await gate.admit(token=None, origin=None, host=None, client="1.2.3.4")
    assert (refused.value.status, refused.value.close_code, refused.value.code) == (503, 1013, "state_unavailable")
    assert refused.value.headers == {"Retry-After": "1"}
    await dead.aclose()
    alive = RedisLedger(redis_server.url, prefix=redis_server.prefix())
    assert await Gate(ServerConfig(rate_limit_per_minute=10), alive).admit(
        token=None, origin=None, host=None, client="1.2.3.4")
    await alive.aclose()


def test_a_missing_ledger_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="supervisor creates it"):
        SQLiteLedger(str(tmp_path / "nope.sqlite3"))


def test_worker_metrics_are_summed_per_series_with_one_type_line() -> None:
    one = ("# HELP vocable_turns_total Turns.\n# TYPE vocable_turns_total counter\nvocable_turns_total 3\n"
           "# TYPE vocable_stt_milliseconds histogram\n"
           'vocable_stt_milliseconds_bucket{le="10"} 1\nvocable_stt_milliseconds_bucket{le="+Inf"} 3\n'
           "vocable_stt_milliseconds_sum 41.5\nvocable_stt_milliseconds_count 3\n"
           "# TYPE vocable_sessions_active gauge\nvocable_sessions_active 2\n")
    two = one.replace("vocable_turns_total 3", "vocable_turns_total 4").replace("_sum 41.5", "_sum 10.25")
    merged = merge_expositions([one, two])
    assert merged.count("# TYPE vocable_turns_total counter") == 1
    assert "vocable_turns_total 7\n" in merged
    assert 'vocable_stt_milliseconds_bucket{le="10"} 2\n' in merged
    assert 'vocable_stt_milliseconds_bucket{le="+Inf"} 6\n' in merged
    assert "vocable_stt_milliseconds_sum 51.75\n" in merged
    assert "vocable_sessions_active 4\n" in merged
    lines = merged.splitlines()
    assert lines.index("# TYPE vocable_stt_milliseconds histogram") < lines.index("vocable_stt_milliseconds_count 6")
