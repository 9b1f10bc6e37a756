"""A cluster on loopback for the scale tests: real ``vocable serve`` nodes sharing one redis-server (and one
PostgreSQL), nginx in front of them, and a small protocol client.

Nodes run on the scripted fakes plus ``provider: recall`` (``recall_llm.py``, beside this file), with auth on and
``127.0.0.1`` as a trusted proxy, so each test gives its clients their own ``X-Forwarded-For`` address and the
per-address rate limit of one test never spends another's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
import yaml

from vocable.testing.scripted import scripted_config
from vocable.testing.server import free_port

HERE = Path(__file__).parent
KEY = "cluster-test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
_addresses = itertools.count(1)


def new_address() -> str:
    """A client address of its own (TEST-NET-2), sent as ``X-Forwarded-For``: its own rate-limit window."""
    n = next(_addresses)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


def node_config(path: Path, *, state_url: str, prefix: str, storage_url: str | None = None,
                **server: Any) -> Path:
    data = scripted_config(llm={"provider": "recall", "token_delay_ms": 20},
                           tts={"provider": "scripted", "ms_per_char": 15})
    data["transports"] = {"websocket": {}}
    data["server"] = {"auth": {"api_key": KEY}, "resume_grace_s": 30, "rate_limit_per_minute": 30,
                      "trusted_proxies": ["127.0.0.1"], "drain_timeout_s": 10, "log_format": "json",
                      "max_sessions": 20, **server}
    data["state"] = {"url": state_url, "prefix": prefix}
    if storage_url:
        data["storage"] = {"url": storage_url}
    data["plugins"] = {"autoload": False, "modules": ["vocable.plugins.core", "vocable.testing.plugin",
                                                      "vocable.transports.websocket", "recall_llm"]}
    path.write_text(yaml.safe_dump(data))
    return path


class Loopback:
    """Something listening on a loopback port: its HTTP and WebSocket addresses."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/audio"


@dataclass
class Node(Loopback):
    """One ``vocable serve`` process on its own loopback port."""

    name: str
    config: Path
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    workers: int = 1

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    def start(self) -> Node:
        path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])  # recall_llm.py, beside this
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": path}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vocable.cli", "serve", "-c", str(self.config), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", str(self.workers)], stdout=log, stderr=subprocess.STDOUT,
                env=env)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> Node:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"node {self.name} not ready in {timeout_s} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


class Nginx(Loopback):
    """nginx from apt in front of the nodes: WebSocket upgrade, long timeouts, 503 and dead nodes skipped."""

    def __init__(self, root: Path, nodes: list[Node]) -> None:
        self.root = root / "nginx"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.nodes = nodes
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        from deploy_nginx import nginx_conf  # the configuration docs/deploy.md shows, filled in for loopback

        return nginx_conf(listen=f"127.0.0.1:{self.port}", upstreams=[f"127.0.0.1:{n.port}" for n in self.nodes],
                          root=str(self.root))

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        conf = self.root / "nginx.conf"
        conf.write_text(self.config())
        args = [binary, "-c", str(conf), "-p", str(self.root), "-e", str(self.root / "error.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                httpx.get(f"{self.url}/health/live", timeout=2)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"nginx did not answer: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


# ------------------------------------------------------------------------------------------ the client


async def token(base: str, address: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post("/session", headers={**AUTH, "X-Forwarded-For": address})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


@dataclass
class Talker:
    ws: Any
    seen: list[Any] = field(default_factory=list)

    async def next(self, kind: str, timeout_s: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.ws.recv()
                if isinstance(raw, bytes):
                    continue
                message = json.loads(raw)
                self.seen.append(message)
                if message["type"] == kind:
                    return message

    async def say(self, text: str) -> None:
        await self.ws.send(json.dumps({"type": "text", "text": text}))

    async def reply(self, timeout_s: float = 20.0, since: int | None = None) -> str:
        """The whole text of the next reply, once its turn's ``metrics`` came (every event before it read);
        ``since``: the index in ``seen`` where it began, when some of it was read already."""
        start = len(self.seen) if since is None else since
        await self.next("metrics", timeout_s)
        return "".join(m["text"] for m in self.seen[start:] if m["type"] == "reply")

    async def turn(self, text: str, timeout_s: float = 20.0) -> str:
        await self.say(text)
        return await self.reply(timeout_s)

    async def closed(self, timeout_s: float = 10.0) -> int | None:
        """Read until the server closes; its close code."""
        async with asyncio.timeout(timeout_s):
            try:
                while True:
                    await self.ws.recv()
            except websockets.ConnectionClosed:
                pass
        return self.ws.close_code

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.seen]


async def refused_status(url: str, address: str) -> tuple[int, dict[str, str]]:
    """The HTTP status (and headers) of a handshake that must be refused."""
    try:
        async with websockets.connect(url, open_timeout=15, proxy=None,
                                      additional_headers={"X-Forwarded-For": address}):
            pass
    except websockets.InvalidStatus as refused:
        return refused.response.status_code, dict(refused.response.headers)
    raise AssertionError(f"{url} was accepted")


@asynccontextmanager
async def talking(url: str, address: str) -> AsyncIterator[tuple[Talker, dict[str, Any]]]:
    async with websockets.connect(url, open_timeout=15, close_timeout=5, max_size=None, proxy=None,
                                  additional_headers={"X-Forwarded-For": address}) as ws:
        talker = Talker(ws)
        ready = await talker.next("ready")
        yield talker, ready


async def until(check: Any, what: str, timeout_s: float = 20.0, every_s: float = 0.1) -> Any:
    """Await ``check()`` (sync or async) until it is truthy."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                value = check()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(every_s)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout_s:g} s") from None


@asynccontextmanager
async def in_loop(engine: Any) -> AsyncIterator[str]:
    """``engine`` served by uvicorn in this event loop, as ``vocable serve`` would; yields its ws:// base."""
    import uvicorn

    from vocable.serving import serve_options

    server = uvicorn.Server(uvicorn.Config(engine.asgi_app(), host="127.0.0.1", port=0, log_level="warning",
                                           timeout_graceful_shutdown=10, **serve_options(engine.config.server)))
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or serving.done(), "uvicorn started", 15, 0.01)
        if serving.done():
            serving.result()
        await engine.wait_ready(15)
        yield f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({serving}, timeout=30)
        if not done:  # say what it waits for
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            raise AssertionError("uvicorn did not stop")
