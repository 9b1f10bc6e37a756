"""What every vendor stand-in shares: an ephemeral-port Starlette app, failure modes, counters, control routes.

A stand-in speaks one vendor's real wire protocol (paths, auth headers, message shapes, status codes) on
127.0.0.1, so the provider is exercised through the vendor's own SDK. Failures are switched per request:

- ``normal``; ``401``; ``429``; ``500``: the vendor's own error status and body;
- ``hang``: accept the connection and never answer (HTTP: no status line; websocket: no upgrade);
- ``drop``: start answering, then cut the TCP connection mid-stream (no close frame, no last chunk);
- ``slow``: answer normally with ``slow_delay_s`` between pieces.

``set_mode(mode, times=n)`` applies a mode to the next ``n`` attempts, then returns to ``normal``, so a test
can say "429 twice, then succeed". ``attempts`` counts every API request or websocket upgrade (control
routes excluded), which is how tests prove that a 401 is tried exactly once.

Run in-process (``async with Standin() as s``), in a thread (``run_in_thread``), or as a process:
``python -m tests.vendors.standins NAME --port P --api-key K`` prints one JSON line with the URL; from
another process, ``GET /_standin/stats`` and ``POST /_standin/mode {"mode": "500", "times": 1}`` drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

MODES = ("normal", "401", "429", "500", "hang", "drop", "slow")


class Drop(Exception):
    """Raised inside a handler to make uvicorn cut the TCP connection without finishing the response."""


class _HideDrops(logging.Filter):
    """uvicorn logs every handler exception; a deliberate drop is not an error worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, Drop):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


logging.getLogger("uvicorn.error").addFilter(_HideDrops())


class _InProcessServer(uvicorn.Server):
    """uvicorn without signal handling: inside a test process, Ctrl+C belongs to pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Standin:
    """Base of the vendor stand-ins. Subclasses provide ``name`` and ``api_routes()``."""

    name: ClassVar[str] = "standin"

    def __init__(self, *, api_key: str = "test-key", host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.mode = "normal"
        self.mode_times: int | None = None
        self.slow_delay_s = 0.2
        self.attempts = 0
        self.counters: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []  # one record per attempt: path, query, body or messages
        self._stopping: asyncio.Event | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------------------------- control

    def set_mode(self, mode: str, *, times: int | None = None, slow_delay_s: float | None = None) -> None:
        """Apply ``mode`` to the next ``times`` attempts (all of them when ``times`` is None)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        self.mode, self.mode_times = mode, times
        if slow_delay_s is not None:
            self.slow_delay_s = slow_delay_s

    def reset(self) -> None:
        self.set_mode("normal")
        self.attempts = 0
        self.counters.clear()
        self.log.clear()

    def take_mode(self) -> str:
        """Count one attempt and return the mode it gets."""
        self.attempts += 1
        mode = self.mode
        if self.mode_times is not None:
            self.mode_times -= 1
            if self.mode_times <= 0:
                self.mode, self.mode_times = "normal", None
        return mode

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "attempts": self.attempts, "counters": dict(self.counters)}

    async def hang(self) -> None:
        """Wait until the stand-in stops: the request never gets an answer."""
        assert self._stopping is not None
        await self._stopping.wait()
        raise Drop("stand-in stopping")

    async def pause(self) -> None:
        """The delay between pieces in ``slow`` mode."""
        await asyncio.sleep(self.slow_delay_s)

    async def pcm_body(self, pcm: bytes, step: int, mode: str) -> AsyncIterator[bytes]:
        """An audio response body in ``step``-byte pieces: ``drop`` cuts it halfway, ``slow`` spaces them.
        ``counters["audio_chunks_sent"]`` counts the pieces that went out."""
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        for i, chunk in enumerate(chunks):
            if mode == "drop" and i >= max(1, len(chunks) // 2):
                self.counters["drops"] += 1
                raise Drop(f"{self.name} stand-in drops the audio stream")
            if mode == "slow":
                await self.pause()
            yield chunk
            self.counters["audio_chunks_sent"] += 1
            await asyncio.sleep(0)

    # --------------------------------------------------------------------------------------------- app

    def api_routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def app(self) -> Starlette:
        return Starlette(routes=[*self.api_routes(), *self._control_routes()])

    def _control_routes(self) -> list[BaseRoute]:
        async def stats(_: Request) -> JSONResponse:
            return JSONResponse(self.stats())

        async def mode(request: Request) -> JSONResponse:
            body = await request.json()
            try:
                self.set_mode(body["mode"], times=body.get("times"), slow_delay_s=body.get("slow_delay_s"))
            except (KeyError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(self.stats())

        async def reset(_: Request) -> JSONResponse:
            self.reset()
            return JSONResponse(self.stats())

        return [
            Route("/_standin/stats", stats, methods=["GET"]),
            Route("/_standin/mode", mode, methods=["POST"]),
            Route("/_standin/reset", reset, methods=["POST"]),
        ]

    # ---------------------------------------------------------------------------------------- lifetime

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app(),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            ws_ping_interval=None,
        )

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        return sock

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, then ``self.port`` says which)."""
        self._stopping = asyncio.Event()
        sock = self._bind()
        self._server = _InProcessServer(self._config())
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"{self.name}-standin")
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # release hanging handlers so shutdown does not wait for them
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except TimeoutError:
                assert self._server is not None
                self._server.force_exit = True
                await asyncio.wait_for(self._task, timeout=5)
        self._server = self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[Self]:
        """Serve from a private event loop in a daemon thread (for synchronous callers)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name=f"{self.name}-standin", daemon=True)
        thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def check_bearer(header: str | None, api_key: str, scheme: str) -> bool:
    """``Authorization: <scheme> <key>`` as the vendor expects it (``Token`` for Deepgram, ``Bearer`` for Groq)."""
    return header == f"{scheme} {api_key}"
