"""``vocable serve`` against a hostile client (issue 22), through the real server process on loopback.

- uvicorn's access log prints every request's query, so session tokens (``/ws/audio?token=...``) must be
  redacted there;
- a connection that never finishes its request head (slowloris) is closed after ``server.header_timeout_s``,
  and ``server.limit_concurrency`` bounds connections;
- ``X-Forwarded-For`` picks the rate-limited address only when it comes from ``server.trusted_proxies``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from wskit import connect, stop_process

from vocable.testing.scripted import scripted_config

VOCABLE = Path(sys.executable).with_name("vocable")
KEY = "hardening-test-api-key-0123456789"
PARTIAL_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"  # no blank line: the head never ends


@dataclass
class Served:
    base: str
    port: int
    stdout: Path
    stderr: Path

    def logs(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp: Path, server: dict[str, Any], workers: int = 1) -> Iterator[Served]:
    """``vocable serve -c`` on the scripted fakes with ``server`` settings; yields once /health says ok."""
    data = scripted_config()
    data["server"] = {"max_sessions": 10, **server}
    data["transports"] = {"websocket": {}}
    data["plugins"] = {"modules": ["vocable.testing.plugin"]}
    config = tmp / "vocable.yaml"
    config.write_text(json.dumps(data))  # JSON is YAML
    port = _free_port()
    served = Served(f"http://127.0.0.1:{port}", port, tmp / "stdout.log", tmp / "stderr.log")
    with served.stdout.open("wb") as out, served.stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(VOCABLE), "serve", "-c", str(config), "--port", str(port), "--workers", str(workers)],
            stdout=out, stderr=err, env={**os.environ, "NO_COLOR": "1"})

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"vocable serve exited with {process.returncode}:\n{served.logs()[-3000:]}")
            try:
                health = httpx.get(f"{served.base}/health", timeout=2)
                return health.status_code == 200 and len(health.json().get("workers", {0: 0})) == workers
            except (httpx.TransportError, ValueError):
                return False

        try:
            _until(ready, "/health saying ok", served, 120)
            yield served
        finally:
            stop_process(process, 30)


def _until(check: Callable[[], bool], what: str, served: Served, timeout_s: float = 10.0) -> None:
    """Poll ``check`` until it holds; past the deadline fail, naming ``what``, with the server's last logs."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen in {timeout_s:g} s:\n{served.logs()[-3000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One process, auth on, a short header timeout."""
    yield from _serve(tmp_path_factory.mktemp("guarded"),
                      {"auth": {"api_key": KEY}, "rate_limit_per_minute": 1000, "header_timeout_s": 0.5})


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One process, no auth, no trusted proxies, two sessions a minute per address, three connections at once."""
    yield from _serve(tmp_path_factory.mktemp("crowded"),
                      {"rate_limit_per_minute": 2, "limit_concurrency": 3, "header_timeout_s": 60})


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two workers behind a trusted proxy on loopback (a network written with host bits set), auth on."""
    yield from _serve(tmp_path_factory.mktemp("proxied"),
                      {"auth": {"api_key": KEY}, "rate_limit_per_minute": 2,
                       "trusted_proxies": ["192.0.2.0/24", "127.0.0.1/8"]}, workers=2)


def _token(served: Served, forwarded_for: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {KEY}", **({"X-Forwarded-For": forwarded_for} if forwarded_for else {})}
    answer = httpx.post(f"{served.base}/session", headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def _closed_within(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes ``sock`` before the deadline (anything it sends first is read and dropped)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def _partial_head(served: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    sock.sendall(PARTIAL_HEAD)
    return sock


@pytest.mark.parametrize("server", ["guarded", "proxied"])
async def test_access_log_does_not_show_session_tokens(server: str, request: pytest.FixtureRequest) -> None:
    """The WebSocket line and the access line name the path, never the token in its query."""
    served: Served = request.getfixturevalue(server)
    token = _token(served, "198.51.100.7")
    assert httpx.get(f"{served.base}/health?token={token}&api_key=hunter22hunter22", timeout=5).status_code == 200
    ws_url = served.base.replace("http://", "ws://") + f"/ws/audio?token={token}"
    async with connect(ws_url, additional_headers={"X-Forwarded-For": "198.51.100.7"}) as client:
        await client.next("ready", 10)
        await client.send({"type": "end"})
        await client.closed()
    _until(lambda: "/ws/audio" in served.stderr.read_text() and "/health?" in served.stdout.read_text(),
           "the WebSocket and the request logged", served)
    logs = served.logs()
    assert token not in logs and token.split(".")[-1] not in logs
    assert "hunter22hunter22" not in logs
    assert "/ws/audio?token=**********" in served.stderr.read_text()


async def test_unfinished_request_head_is_closed_after_header_timeout(guarded: Served) -> None:
    """0.5 s to send a whole head, on a new connection and on a kept-alive one; other clients, a WebSocket
    session included, go on."""
    async with connect(guarded.base.replace("http://", "ws://") + f"/ws/audio?token={_token(guarded)}") as client:
        await client.next("ready", 10)
        started = time.monotonic()
        with _partial_head(guarded) as slow, socket.create_connection(("127.0.0.1", guarded.port)) as kept:
            assert httpx.get(f"{guarded.base}/health", timeout=5).status_code == 200
            kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 200 " in kept.recv(4096)
            kept.sendall(PARTIAL_HEAD)  # the next request's head, never finished
            assert _closed_within(slow, 5), "a connection with half a request head was left open"
            assert time.monotonic() - started >= 0.4, "closed before the configured header timeout"
            assert _closed_within(kept, 5), "a kept-alive connection with half a request head was left open"
        await asyncio.wait_for(await client.ws.ping(), 5)  # the WebSocket session, open longer than the header timeout, still answers
        await client.send({"type": "end"})
        assert (await client.closed())[0] == 1000


def test_limit_concurrency_refuses_requests_past_it(crowded: Served) -> None:
    """With three connections at once, a request while two others hang gets 503; once they go, 200."""
    def health() -> int:
        return httpx.get(f"{crowded.base}/health", timeout=5).status_code

    held = [_partial_head(crowded) for _ in range(2)]
    try:
        _until(lambda: health() == 503, "a 503 past limit_concurrency", crowded)
    finally:
        for sock in held:
            sock.close()
    _until(lambda: health() == 200, "a 200 once the hanging connections closed", crowded)


def test_forwarded_for_is_ignored_without_trusted_proxies(crowded: Served) -> None:
    """A local client cannot pick the address the rate limit counts: three forged addresses are one."""
    statuses = [httpx.post(f"{crowded.base}/session", headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=5)
                .status_code for i in (1, 2, 3)]
    assert statuses == [200, 200, 429]


def test_forwarded_for_from_a_trusted_proxy_counts_each_client(proxied: Served) -> None:
    """Behind a trusted proxy each forwarded client has its own limit, across both workers."""
    def status(client: str) -> int:
        return httpx.post(f"{proxied.base}/session", timeout=5,
                          headers={"Authorization": f"Bearer {KEY}", "X-Forwarded-For": client}).status_code

    assert [status(f"203.0.113.{i}") for i in (1, 2, 3, 4)] == [200] * 4
    assert [status("203.0.113.99") for _ in range(3)] == [200, 200, 429]


def test_serve_options_defaults_and_the_fallback_on_an_unfamiliar_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default: no proxy is trusted, limit_concurrency is max_sessions x 2 + 100, and the header timeout is
    on; a uvicorn without the internals it hooks gets its plain protocol, and one warning says so."""
    import structlog

    from vocable import serving
    from vocable.config.model import ServerConfig

    options = serving.serve_options(ServerConfig(max_sessions=7))
    assert options["proxy_headers"] is False and options["limit_concurrency"] == 114
    assert options["http"] == serving.HEAD_TIMEOUT_PROTOCOL and serving.head_timeout_missing() == []
    assert serving.head_timeout_missing(asyncio.Protocol) == [
        "Protocol.on_response_complete", "Protocol.handle_websocket_upgrade", "Protocol.cycle",
        "asyncio.protocols:RequestResponseCycle.response_complete"]
    monkeypatch.setattr(serving, "head_timeout_missing", lambda: ["HttpToolsProtocol.cycle"])
    with structlog.testing.capture_logs() as logged:
        options = serving.serve_options(ServerConfig(trusted_proxies=["10.1.2.3/8", "192.0.2.1"]))
    assert "http" not in options and [e["event"] for e in logged] == ["header_timeout_unavailable"]
    assert options["forwarded_allow_ips"] == "10.0.0.0/8,192.0.2.1" and options["proxy_headers"] is True
