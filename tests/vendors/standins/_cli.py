"""Run one stand-in as its own process, for tests that start the real ``vocable serve``.

Prints one JSON line (``{"name", "url", "ws_url", "port", "pid"}``) once listening, then serves until
SIGTERM or SIGINT. Launch with ``python -m tests.vendors.standins NAME [--port P] [--api-key K] [--mode M]``
from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from ._base import MODES, Standin


def parse(argv: list[str] | None = None, *, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description="Serve a vendor stand-in on 127.0.0.1.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--api-key", default=os.environ.get("STANDIN_API_KEY", "test-key"))
    parser.add_argument("--mode", choices=MODES, default="normal")
    parser.add_argument("--times", type=int, default=None, help="apply --mode to this many attempts only")
    return parser.parse_args(argv)


async def serve(standin: Standin) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await standin.start()
    line = {
        "name": standin.name,
        "url": standin.url,
        "ws_url": standin.ws_url,
        "port": standin.port,
        "pid": os.getpid(),
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await standin.stop()


def main(cls: type[Standin], argv: list[str] | None = None) -> None:
    args = parse(argv, prog=f"python -m tests.vendors.standins {cls.name}")
    standin = cls(api_key=args.api_key, host=args.host, port=args.port)
    standin.set_mode(args.mode, times=args.times)
    asyncio.run(serve(standin))
