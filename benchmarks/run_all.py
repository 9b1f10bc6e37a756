"""Every benchmark in one go: one summary table, then one JSON object of all figures as the last line.

Runs, each in its own process (so one's memory and threads do not colour the next):
- turn_overhead.py          vocable's engine overhead per turn vs a bare hand-chained baseline
- pipecat_turn_overhead.py  engine-added latency per turn, vocable vs Pipecat, same instant fakes
- ws_capacity.py            WebSocket sessions per core: vocable, Pipecat, bare Starlette echo; and
                            vocable serve --workers 2 against the echo under two uvicorn workers

Usage: python benchmarks/run_all.py [--quick] [--skip capacity,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, table

HERE = Path(__file__).resolve().parent


def run(script: str, args: list[str], timeout_s: float) -> tuple[dict[str, Any], str, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    seconds = time.monotonic() - started
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"{script} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1]), "\n".join(lines[:-1]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer turns, shorter capacity windows")
    parser.add_argument("--skip", default="", help="comma-separated: turn, pipecat_turn, capacity")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    turns = ["--turns", "100" if args.quick else "300"]
    jobs = [
        ("turn", "turn_overhead.py", turns, 600),
        ("pipecat_turn", "pipecat_turn_overhead.py", turns, 900),
        ("pipecat_turn_timed", "pipecat_turn_overhead.py", [*turns, "--scenario", "timed"], 900),
        ("capacity", "ws_capacity.py",
         ["--kinds", "vocable,pipecat,echo,echo_direct,vocable_w2,echo_w2", *(["--quick"] if args.quick else [])],
         5400),
    ]
    results: dict[str, Any] = {}
    for name, script, script_args, timeout_s in jobs:
        if name in skip or (name == "pipecat_turn_timed" and "pipecat_turn" in skip):
            continue
        print(f"== {script} {' '.join(script_args)}", file=sys.stderr, flush=True)
        figures, text, seconds = run(script, script_args, timeout_s)
        print(text, file=sys.stderr, flush=True)
        figures["seconds"] = round(seconds, 1)
        results[name] = figures

    rows: list[tuple[Any, ...]] = []
    if "turn" in results:
        t = results["turn"]
        rows.append(("vocable engine overhead per turn (ms, p50 / p95)",
                     f"{t['engine_overhead_p50_ms']} / {t['engine_overhead_p95_ms']}", "<= 2 / 5", t["goal_met"]))
    for key, label in (("pipecat_turn", "instant"), ("pipecat_turn_timed", "timed")):
        if key in results:
            p = results[key]
            rows.append((f"added latency, vocable vs Pipecat, {label} fakes (ms, p50)",
                         f"{p['vocable_added_p50_ms']} vs {p['pipecat_added_p50_ms']} ({p['ratio_p50']}x)",
                         "<= 0.5x", p["ratio_p50"] <= 0.5))
            rows.append((f"added latency, vocable vs Pipecat, {label} fakes (ms, p95)",
                         f"{p['vocable_added_p95_ms']} vs {p['pipecat_added_p95_ms']} ({p['ratio_p95']}x)",
                         "<= 0.5x", p["ratio_p95"] <= 0.5))
    if "capacity" in results:
        c = results["capacity"]
        for kind in ("vocable", "pipecat", "echo", "echo_direct", "vocable_w2", "echo_w2"):
            if f"{kind}_capacity" in c:
                rows.append((f"WS sessions at lateness p99 < 20 ms: {kind}", c[f"{kind}_capacity"],
                             "", ""))
        for key, label in (("vocable_w2_vs_vocable", "2 workers / 1 process, vocable"),
                           ("vocable_w2_vs_echo_w2", "capacity vocable / echo, 2 workers each"),
                           ("vocable_w2_vs_echo", "capacity vocable 2 workers / echo 1 process")):
            if key in c:
                rows.append((label, c[key], "", ""))
        if "vocable_vs_pipecat" in c:
            rows.append(("capacity vocable / Pipecat", c["vocable_vs_pipecat"], ">= 3", c["vocable_vs_pipecat"] >= 3))
        if "vocable_vs_echo" in c:
            rows.append(("capacity vocable / Starlette echo", c["vocable_vs_echo"], ">= 0.8",
                         c["vocable_vs_echo"] >= 0.8))
        if "vocable_vs_echo_direct" in c:
            rows.append(("capacity vocable / the echo on vocable's server protocol", c["vocable_vs_echo_direct"], "", ""))
        for kind in ("vocable", "pipecat", "echo"):
            if c.get(f"{kind}_rss_per_session_mib") is not None:
                goal = "<= 2" if kind == "vocable" else ""
                met = c[f"{kind}_rss_per_session_mib"] <= 2 if kind == "vocable" else ""
                rows.append((f"memory per session, MiB: {kind}", c[f"{kind}_rss_per_session_mib"], goal, met))
                rows.append((f"CPU per session, % of a core: {kind}", c.get(f"{kind}_cpu_per_session_pct"), "", ""))
    print(table(("figure", "measured", "goal", "met"), rows))
    emit(results)


if __name__ == "__main__":
    main()
