"""Run the real ``vocable serve`` in a child process, for end-to-end tests of apps and of vocable itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(config) as server:`` starts ``vocable serve`` and waits until /health is 200."""

    def __init__(self, config: str | Path | None = None, *, port: int | None = None,
                 env: dict[str, str] | None = None, ready_timeout_s: float = 180.0) -> None:
        self.config = str(config) if config is not None else None
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="vocable-serve-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def start(self) -> ServerProcess:
        args = [sys.executable, "-m", "vocable.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.config:
            args += ["-c", self.config]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vocable serve exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            status = self.health_status()
            if status == 200:
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"vocable serve was not healthy within {self.ready_timeout_s} s:\n{self.output()[-4000:]}")

    def health_status(self) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def get_json(self, path: str) -> Any:
        import json

        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()
