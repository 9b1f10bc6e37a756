"""Sessions people can trust: crashes lose no finished turn, vanished clients leak nothing, fuzz breaks nothing."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import httpx
import pytest
import websockets
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wskit import config, connect, engine, events, live_server

from vocable.testing.server import ServerProcess


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sigkill_mid_conversation_keeps_every_finished_turn(tmp_path):
    data = config(llm={"provider": "scripted", "echo": True, "token_delay_ms": 40},
                  tts={"provider": "scripted", "ms_per_char": 30})
    data["storage"] = {"url": f"sqlite:///{tmp_path / 'turns.db'}"}
    data["plugins"] = {"autoload": False, "modules": ["vocable.plugins.core", "vocable.testing.plugin",
                                                      "vocable.transports.websocket"]}
    path = tmp_path / "vocable.yaml"
    path.write_text(yaml.safe_dump(data))

    async def talk(server: ServerProcess) -> str:
        async with connect(f"{server.ws_url}/ws/audio") as client:
            ready = await client.next("ready")
            for text in ("first question", "second question"):
                await client.send({"type": "text", "text": text})
                await client.turn()
            await client.send({"type": "text", "text": "third question, cut off by the crash"})
            await client.next("reply")
            server.kill()  # SIGKILL in the middle of the third reply: no shutdown code runs
            return ready["session_id"]

    server = ServerProcess(path).start()
    try:
        session_id = asyncio.run(talk(server))
    finally:
        server.stop()
    with ServerProcess(path) as restarted:
        transcript = restarted.get_json(f"/sessions/{session_id}/transcript")
    turns = transcript["turns"]
    assert [t["user_text"] for t in turns] == ["first question", "second question"]
    assert [t["reply_text"] for t in turns] == ["You said: first question.", "You said: second question."]
    assert transcript["ended_at"] is None  # it never ended cleanly, and nothing pretends it did


async def test_a_client_that_vanishes_mid_turn_leaves_nothing_behind():
    eng = engine(llm={"provider": "scripted", "token_delay_ms": 50, "reply": "one two three four five six " * 10},
                 tts={"provider": "scripted", "ms_per_char": 30}, server={"resume_grace_s": 30})
    async with live_server(eng) as live:
        baseline_tasks = len(asyncio.all_tasks())
        baseline_fds = fd_count()
        client_cm = connect(live.ws_url())
        client = await client_cm.__aenter__()
        await client.next("ready")
        await client.send({"type": "text", "text": "talk to me"})
        await client.next("reply")
        await client.recv()
        assert len(eng.sessions) == 1
        client.ws.transport.abort()  # the network is gone: no close frame, no FIN handshake
        llm = eng.runtime.llm[0].provider
        async with asyncio.timeout(1.0):
            while eng.sessions or llm.counters.closed < llm.counters.opened or fd_count() > baseline_fds \
                    or len(asyncio.all_tasks()) > baseline_tasks:
                await asyncio.sleep(0.02)
        assert llm.counters.cancelled == 1
        try:
            await client_cm.__aexit__(None, None, None)
        except Exception:
            pass


class _ServerThread:
    """One uvicorn server in its own thread and loop, so synchronous hypothesis examples can hit it."""

    def __init__(self) -> None:
        data = config(server={"max_sessions": 50, "rate_limit_per_minute": 0})
        self.engine = engine(server={"max_sessions": 50, "rate_limit_per_minute": 0})
        assert data  # same shape as the other transport tests
        self.ready = threading.Event()
        self.stop_event: asyncio.Event | None = None
        self.port = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        async with live_server(self.engine) as live:
            self.port = live.port
            self.ready.set()
            await self.stop_event.wait()

    def __enter__(self) -> _ServerThread:
        self.thread.start()
        assert self.ready.wait(20), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)


@pytest.fixture(scope="module")
def fuzz_server():
    from structlog.testing import LogCapture
    import structlog

    capture = LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[capture])
    try:
        with _ServerThread() as server:
            yield server, capture
    finally:
        structlog.configure(**old)


valid_messages = st.one_of(
    st.just({"type": "interrupt"}),
    st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=50)),
    st.builds(lambda r: {"type": "start", "sample_rate": r}, st.one_of(st.integers(-10, 200000), st.sampled_from([16000, 48000]))),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
messages = st.one_of(
    st.binary(max_size=3000),
    st.text(max_size=200),
    valid_messages.map(json.dumps),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["type", "text", "sample_rate", "x"]), json_values, max_size=3).map(json.dumps),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(messages, min_size=1, max_size=6))
def test_fuzzed_protocol_never_breaks_the_server(fuzz_server, batch):
    server, capture = fuzz_server
    from websockets.sync.client import connect as sync_connect

    with sync_connect(f"ws://127.0.0.1:{server.port}/ws/audio", open_timeout=10, close_timeout=2,
                      max_size=None, proxy=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for message in batch:
            try:
                ws.send(message)
            except websockets.ConnectionClosed:
                break
    failures = [e for e in capture.entries if e.get("log_level") in ("error", "critical")]
    assert not failures, failures[:3]


def test_the_server_still_serves_after_the_fuzz(fuzz_server):
    server, capture = fuzz_server

    async def probe() -> None:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{server.port}/health")).status_code == 200
        async with connect(f"ws://127.0.0.1:{server.port}/ws/audio") as client:
            await client.next("ready")
            await client.send({"type": "text", "text": "still there?"})
            turn = await client.turn()
            assert events(turn, "reply")

    asyncio.run(probe())
    deadline = asyncio.run(_wait_sessions_gone(server))
    assert deadline, f"sessions left open: {list(server.engine.sessions)}"


async def _wait_sessions_gone(server: _ServerThread) -> bool:
    for _ in range(100):
        if not server.engine.sessions:
            return True
        await asyncio.sleep(0.05)
    return False
