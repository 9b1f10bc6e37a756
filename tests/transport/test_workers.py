"""``vocable serve --workers 2``: two real processes on one loopback port, sharing one SQLite ledger.

What must hold across workers: a token opens one session on the whole server, a dropped session resumes
with its conversation on whichever worker the reconnect lands on, ``/health``, ``/sessions`` and
``/metrics`` count every worker, and a worker killed with SIGKILL is replaced while the other keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from wskit import stop_process, Client, connect

from vocable.testing.scripted import scripted_config

VOCABLE = Path(sys.executable).with_name("vocable")
KEY = "workers-test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}  # operator routes need the API key when auth is on


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(base: str) -> dict:
    return httpx.get(f"{base}/health", timeout=5).json()


def _wait_for(check, what: str, log: Path, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (value := check()):
                return value
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen in {timeout_s:g} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """``vocable serve --workers 2`` on the scripted fakes, with auth on; yields once both workers are ready."""
    tmp = tmp_path_factory.mktemp("workers")
    data = scripted_config()
    data["server"] = {"auth": {"api_key": KEY}, "resume_grace_s": 60, "rate_limit_per_minute": 1000,
                      "log_format": "json", "max_sessions": 50}
    data["transports"] = {"websocket": {}}
    data["plugins"] = {"modules": ["vocable.testing.plugin"]}
    config = tmp / "vocable.yaml"
    config.write_text(json.dumps(data))  # JSON is YAML
    port = _free_port()
    log_path = tmp / "serve.log"
    log = log_path.open("wb")
    process = subprocess.Popen([str(VOCABLE), "serve", "-c", str(config), "--port", str(port), "--workers", "2"],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: process.poll() is None and (h := _health(base))["status"] == "ok"
                  and len(h["workers"]) == 2 and all(w["ready"] for w in h["workers"].values()),
                  "both workers ready", log_path, 120)
        yield base, log_path, process
    finally:
        stop_process(process, 30)
        log.close()


def _token(base: str) -> str:
    response = httpx.post(f"{base}/session", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def _ws(base: str, query: str) -> str:
    return base.replace("http://", "ws://") + "/ws/audio?" + query


def _worker_of(base: str, session_id: str) -> str | None:
    sessions = httpx.get(f"{base}/sessions", headers=AUTH, timeout=5).json()["sessions"]
    return next((s["worker"] for s in sessions if s["id"] == session_id), None)


async def _worker_of_soon(base: str, session_id: str) -> str:
    """The worker serving ``session_id``, as /sessions reports it (other workers' heartbeats lag up to 1 s)."""
    async with asyncio.timeout(10):
        while (worker := await asyncio.to_thread(_worker_of, base, session_id)) is None:
            await asyncio.sleep(0.2)
    return worker


async def _open(base: str, query: str) -> tuple[Client, dict, websockets.asyncio.client.ClientConnection]:
    ws = await websockets.connect(_ws(base, query), open_timeout=10, close_timeout=2, max_size=None, proxy=None)
    client = Client(ws)
    ready = await client.next("ready", 10)
    return client, ready, ws


async def test_sessions_spread_over_both_workers_and_every_worker_counts_them(served) -> None:
    base, _, _ = served
    opened: list[tuple[Client, dict, object]] = []
    workers: set[str] = set()
    try:
        for _ in range(40):  # the kernel picks the worker: open sessions until both have some
            opened.append(await _open(base, f"token={_token(base)}"))
            if len(opened) % 4 == 0:
                await asyncio.sleep(1.2)  # a heartbeat later, /sessions knows every worker's sessions
                listed = (await asyncio.to_thread(httpx.get, f"{base}/sessions", headers=AUTH, timeout=5)).json()["sessions"]
                ids = {ready["session_id"] for _, ready, _ in opened}
                assert ids <= {s["id"] for s in listed}
                workers = {s["worker"] for s in listed if s["id"] in ids}
                if len(workers) == 2:
                    break
        assert len(workers) == 2, "40 sessions all landed on one worker"
        health = await asyncio.to_thread(_health, base)
        assert health["sessions"] == len(opened) == sum(w["sessions"] for w in health["workers"].values())
        metrics = (await asyncio.to_thread(httpx.get, f"{base}/metrics", headers=AUTH, timeout=5)).text
        active = [line for line in metrics.splitlines() if line.startswith("vocable_sessions_active ")]
        assert active == [f"vocable_sessions_active {len(opened)}"], active
        assert metrics.count("# TYPE vocable_sessions_active ") == 1
    finally:
        for _, _, ws in opened:
            await ws.close()  # type: ignore[attr-defined]


async def test_a_token_opens_one_session_on_the_whole_server(served) -> None:
    base, _, _ = served
    token = _token(base)
    client, ready, ws = await _open(base, f"token={token}")
    try:
        assert await _worker_of_soon(base, ready["session_id"])
        for _ in range(12):  # the reconnects land on both workers; every one is refused before the upgrade
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(_ws(base, f"token={token}"), open_timeout=10, proxy=None)
            assert info.value.response.status_code == 403
    finally:
        await ws.close()


async def test_a_dropped_session_resumes_on_another_worker_with_its_conversation(served) -> None:
    base, _, _ = served
    for _ in range(20):  # the kernel picks the worker: retry until the reconnect lands on the other one
        token = _token(base)
        client, ready, ws = await _open(base, f"token={token}")
        session_id = ready["session_id"]
        await client.send({"type": "text", "text": "remember the number seven"})
        await client.turn(20)
        first = await _worker_of_soon(base, session_id)
        ws.transport.abort()  # vanish without a close frame: the session may resume
        await asyncio.sleep(0.3)
        client2, ready2, ws2 = await _open(base, f"token={token}&session_id={session_id}")
        try:
            assert ready2["session_id"] == session_id and ready2["resumed"] is True
            second = await _worker_of_soon(base, session_id)
            if second == first:
                continue
            # resumed is only true when the conversation parked by the first worker was found in the ledger
            await client2.send({"type": "text", "text": "what number did I say?"})
            turn = await client2.turn(20)
            assert any(isinstance(m, dict) and m.get("type") == "metrics" for m in turn)
            return
        finally:
            await ws2.close()
    pytest.fail("20 reconnects all landed on the worker that served the session first")


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(served) -> None:
    base, log, process = served
    before = _health(base)["workers"]
    victim = sorted(before)[0]
    os.kill(int(victim), signal.SIGKILL)
    replaced = _wait_for(lambda: (w := _health(base)["workers"]) and victim not in w and len(w) == 2
                         and all(x["ready"] for x in w.values()) and w, "a replacement worker", log, 60)
    assert set(replaced) - set(before), "the supervisor started no new worker"
    assert process.poll() is None
    assert _health(base)["status"] == "ok"


def test_workers_below_one_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([str(VOCABLE), "serve", "--workers", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--workers must be at least 1" in result.stderr
