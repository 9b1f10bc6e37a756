"""A/B: vocable's server CPU per session under the capacity load, baseline against proposed changes.

Each round runs every variant once at the same number of sessions, in turn, so noise from other work on the
machine falls on all of them alike. Other work on a shared machine only ever adds CPU time (cache and
memory-bandwidth contention, a slower clock), so the least CPU over the rounds is the main figure; the
median is printed beside it. Variants are patches from
``_experiments.py`` applied in the server process only (comma-separate several to stack them).

Usage: python benchmarks/ab_variants.py [--n 40] [--rounds 3] [--window-s 8] [--variants vad_dot,send_no_timeout]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, table
from _experiments import VARIANTS
from ws_capacity import step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="vocable")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=8.0)
    parser.add_argument("--variants", default=",".join(VARIANTS) + ",all",
                        help="comma-separated; 'all' stacks every variant; a '+' stacks some: vad_dot+wire_fast")
    args = parser.parse_args()
    names = ["baseline"] + [v for v in args.variants.split(",") if v]
    resolved = {name: ",".join(VARIANTS) if name == "all" else name.replace("+", ",") for name in names}
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            result = step(args.kind, args.n, args.window_s, seed=r, variant="" if name == "baseline" else resolved[name])
            runs[name].append(result)
            print(f"  round {r + 1} {name:24} cpu {result['server_cpu_pct']:5.1f}%  p99 {result['lateness_p99_ms']:7.2f} ms",
                  file=sys.stderr, flush=True)
    figures: dict[str, object] = {"kind": args.kind, "sessions": args.n, "rounds": args.rounds, "window_s": args.window_s}
    base = min(r["server_cpu_pct"] for r in runs["baseline"]) / args.n
    base_median = statistics.median(r["server_cpu_pct"] for r in runs["baseline"]) / args.n
    rows = []
    for name in names:
        cpu = min(r["server_cpu_pct"] for r in runs[name]) / args.n
        median = statistics.median(r["server_cpu_pct"] for r in runs[name]) / args.n
        p99 = statistics.median(r["lateness_p99_ms"] for r in runs[name])
        figures[f"{name}_cpu_per_session_pct"] = round(cpu, 4)
        figures[f"{name}_cpu_per_session_median_pct"] = round(median, 4)
        figures[f"{name}_lateness_p99_median_ms"] = round(p99, 2)
        figures[f"{name}_cpu_saving_pct"] = round(100 * (1 - cpu / base), 1)
        figures[f"{name}_cpu_saving_median_pct"] = round(100 * (1 - median / base_median), 1)
        rows.append((name, round(cpu, 4), f"{100 * (1 - cpu / base):.1f}%", round(median, 4),
                     f"{100 * (1 - median / base_median):.1f}%", round(p99, 2)))
    print(f"{args.kind}, {args.n} sessions, {args.rounds} rounds of {args.window_s:g} s (least and median CPU)")
    print(table(("variant", "least cpu %/s.", "saving", "median cpu %/s.", "saving", "median p99 ms"), rows))
    emit(figures)


if __name__ == "__main__":
    main()
