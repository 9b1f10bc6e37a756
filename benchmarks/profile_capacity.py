"""Profile a WebSocket server under the capacity load with py-spy (needs root, or ptrace rights).

Starts the server as ws_capacity.py does, drives N sessions from the load generator, and samples the
server with ``py-spy record`` during the measuring window. Writes the collapsed stacks (``.txt``, open
with speedscope or flamegraph.pl) and an SVG flame graph, and prints the functions with the most
inclusive and self time.

Usage: python benchmarks/profile_capacity.py [--kind vocable] [--n 80] [--window-s 10] [--out /tmp/vocable-prof]
Install first: pip install py-spy
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ws_capacity import HERE, free_port, wait_listening


def summarize(collapsed: Path, top: int = 45) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """Inclusive and self shares per function from py-spy's collapsed (raw) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    share = lambda c: [(name, round(100 * v / max(1, total), 1)) for name, v in c.most_common(top)]
    return share(inclusive), share(own), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="vocable", choices=("vocable", "pipecat", "echo"))
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", default="/tmp/vocable-prof")
    parser.add_argument("--variant", default="", help="patches from _experiments.py, comma-separated")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE), "--serve", args.kind, "--port", str(port),
                               "--variant", args.variant],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        time.sleep(0.5)
        client = subprocess.Popen(
            [sys.executable, str(HERE), "--load", args.kind, "--port", str(port), "--n", str(args.n),
             "--window-s", str(args.window_s), "--server-pid", str(server.pid)],
            stdout=subprocess.PIPE, text=True)
        time.sleep(2.5 + args.n / 500 + 1.5)  # warm-up, ramp and settle, as the load generator does them
        raw = out / f"{args.kind}-{args.n}.txt"
        spy = subprocess.run([pyspy, "record", "-p", str(server.pid), "-r", str(args.rate), "-d",
                              str(int(args.window_s)), "-f", "raw", "-o", str(raw), "--nonblocking"],
                             capture_output=True, text=True, check=False)
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed: {spy.stderr[-2000:]}")
        subprocess.run([pyspy, "record", "-p", str(server.pid), "-r", str(args.rate), "-d", "3",
                        "-o", str(out / f"{args.kind}-{args.n}.svg"), "--nonblocking"], capture_output=True, check=False)
        stdout, _ = client.communicate(timeout=120)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    result = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    inclusive, own, total = summarize(raw)
    print(f"{args.kind} with {args.n} sessions: server CPU {result['server_cpu_pct']}%, "
          f"lateness p99 {result['lateness_p99_ms']} ms; {total} samples in {raw}")
    print("\ninclusive %  function")
    for name, share in inclusive:
        print(f"{share:10.1f}  {name}")
    print("\nself %  function")
    for name, share in own:
        print(f"{share:7.1f}  {name}")
    print(json.dumps({"kind": args.kind, "sessions": args.n, "samples": total, "server": result,
                      "inclusive": inclusive, "self": own}))


if __name__ == "__main__":
    main()
