"""A/B: vocable's server CPU per session under the capacity load, baseline against proposed changes.

Each round runs every variant once at the same number of sessions, in turn, so noise from other work on the
machine falls on all of them alike. Other work on a shared machine only ever adds CPU time (cache and
memory-bandwidth contention, a slower clock), so the least CPU over the rounds is the main figure; the
median is printed beside it. Variants are patches from
``_experiments.py`` applied in the server process only (comma-separate several to stack them).

With ``--revs`` it compares code instead: git revisions (``HEAD``, a commit) or ``worktree`` (a snapshot of
the working tree as it is now), each exported into a temporary directory that the server imports vocable
from. The first is the baseline: ``--revs HEAD,worktree`` measures uncommitted changes before committing.

Usage: python benchmarks/ab_variants.py [--n 40] [--rounds 3] [--window-s 8] [--variants vad_dot,send_no_timeout]
       python benchmarks/ab_variants.py --n 300 --rounds 4 --revs HEAD,worktree
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, table
from _experiments import VARIANTS
from ws_capacity import step


ROOT = Path(__file__).resolve().parent.parent


def export_source(rev: str, into: Path) -> str:
    """The ``src`` directory of ``rev`` (or of the working tree, for ``worktree``), copied under ``into``."""
    target = into / rev.replace("/", "_").replace("~", "_")
    if rev == "worktree":
        shutil.copytree(ROOT / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    else:
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return str(target / "src")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="vocable")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=8.0)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated; 'all' stacks every variant; a '+' stacks some: vad_dot+wire_fast")
    parser.add_argument("--revs", default="", help="compare code: git revisions or 'worktree', comma-separated; "
                        "the first is the baseline (variants are ignored then)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vocable-ab-"))
    sources: dict[str, str | None] = {}
    if args.revs:
        names = [r.strip() for r in args.revs.split(",") if r.strip()]
        sources = {name: export_source(name, scratch) for name in names}
        resolved = {name: "" for name in names}
    else:
        names = ["baseline"] + [v for v in args.variants.split(",") if v and v != "baseline"]
        resolved = {name: ",".join(VARIANTS) if name == "all" else name.replace("+", ",") for name in names}
        resolved["baseline"] = ""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            result = step(args.kind, args.n, args.window_s, seed=r, variant=resolved[name], source=sources.get(name))
            runs[name].append(result)
            print(f"  round {r + 1} {name:24} cpu {result['server_cpu_pct']:5.1f}%  p99 {result['lateness_p99_ms']:7.2f} ms",
                  file=sys.stderr, flush=True)
    figures: dict[str, object] = {"kind": args.kind, "sessions": args.n, "rounds": args.rounds, "window_s": args.window_s}
    shutil.rmtree(scratch, ignore_errors=True)
    first = names[0]
    base = min(r["server_cpu_pct"] for r in runs[first]) / args.n
    base_median = statistics.median(r["server_cpu_pct"] for r in runs[first]) / args.n
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
