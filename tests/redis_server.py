"""A throwaway ``redis-server`` on 127.0.0.1 for the cluster tests: a free port, a temp dir, removed after.

Needs Debian's ``redis-server`` package (``scripts/setup.sh test`` installs it) and the ``redis`` Python package
(``pip install 'vocable[redis]'``); without either, the tests that use it are skipped, saying which is missing.
It runs with append-only persistence, as docs/deploy.md advises, so ``restart`` keeps every key (single-use
tokens stay used), and it can be stopped and started again on the same port to test an outage.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vocable.testing.server import free_port


@dataclass
class RedisServer:
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    _prefixes: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def prefix(self) -> str:
        """A fresh key prefix: each test gets its own keys in the one server."""
        return f"t{next(self._prefixes)}:"

    def start(self) -> RedisServer:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
                "--logfile", str(self.root / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer within 30 s:\n{self.log()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.root / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    pytest.importorskip("redis", reason="the redis package is not installed: pip install 'vocable[redis]'")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="vocable-redis-"))
    server = RedisServer(root, free_port())
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
