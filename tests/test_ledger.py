"""The shared ledger of ``--workers``: atomic across real processes, conversations intact, metrics summed."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import pytest

from vocable.engine.ledger import UNBOUND, LocalLedger, SQLiteLedger, create_shared_ledger
from vocable.engine.workers import merge_expositions
from vocable.providers.base import Message, ToolCall

TOKENS = [f"tok{i}" for i in range(150)]


def _claim_all(path: str, start: multiprocessing.synchronize.Event) -> list[str]:  # type: ignore[name-defined]
    """In a worker process: claim every token; return the ones this process won."""
    async def run() -> list[str]:
        ledger = SQLiteLedger(path)
        won = [t for t in TOKENS if await ledger.claim_token(t, time.time() + 60) is None]
        await ledger.aclose()
        return won
    start.wait(10)
    return asyncio.run(run())


def test_two_processes_racing_for_the_same_tokens_never_both_win(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    create_shared_ledger(path)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(2) as pool:
            results = [pool.apply_async(_claim_all, (path, start)) for _ in range(2)]
            time.sleep(0.5)
            start.set()
            won = [r.get(60) for r in results]
    assert sorted(won[0] + won[1]) == sorted(TOKENS)  # every token claimed exactly once
    assert not set(won[0]) & set(won[1])


@pytest.mark.parametrize("kind", ["local", "sqlite"])
async def test_a_parked_conversation_comes_back_whole_and_only_once(kind: str, tmp_path: Path) -> None:
    if kind == "sqlite":
        path = str(tmp_path / "ledger.sqlite3")
        create_shared_ledger(path)
        parking, taking = SQLiteLedger(path), SQLiteLedger(path)  # two workers
    else:
        parking = taking = LocalLedger()  # type: ignore[assignment]
    messages = [
        Message("user", "book a table for two"),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "book", '{"people": 2}'),)),
        Message("tool", '{"ok": true}', tool_call_id="call_1", name="book"),
        Message("assistant", "Done: a table for two."),
    ]
    await parking.park("ses_1", messages, time.time() + 30)
    await parking.park("ses_old", messages, time.time() - 1)
    assert await taking.take("ses_1") == messages
    assert await taking.take("ses_1") is None  # taken once: a second reconnect does not get it again
    assert await taking.take("ses_old") is None  # past its grace window
    assert await taking.claim_token("t", time.time() + 30) is None
    assert await parking.claim_token("t", time.time() + 30) == UNBOUND
    await taking.bind_token("t", "ses_1", time.time() + 30)
    assert await parking.claim_token("t", time.time() + 30) == "ses_1"
    await parking.release_token("t")  # bound tokens are not released
    assert await taking.claim_token("t", time.time() + 30) == "ses_1"
    if kind == "sqlite":
        await parking.aclose()
        await taking.aclose()


async def test_the_rate_limit_and_heartbeats_are_shared(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.sqlite3")
    create_shared_ledger(path)
    one, two = SQLiteLedger(path), SQLiteLedger(path)
    assert one.secret() == two.secret() and len(one.secret() or b"") == 32
    assert [await one.hit("1.2.3.4", 3), await two.hit("1.2.3.4", 3), await one.hit("1.2.3.4", 3)] == [True] * 3
    assert await two.hit("1.2.3.4", 3) is False
    assert await two.hit("5.6.7.8", 3) is True
    await one.publish("101", {"sessions": [{"id": "a"}]})
    await two.publish("102", {"sessions": []})
    assert set(await one.workers(5)) == {"101", "102"}
    await two.forget_worker("102")
    assert set(await one.workers(5)) == {"101"}
    await one.aclose()
    await two.aclose()


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
