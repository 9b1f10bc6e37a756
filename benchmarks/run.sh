#!/usr/bin/env bash
# One command on a fresh machine: create .venv if needed, install vocable and the benchmark tools, run all.
#   benchmarks/run.sh            # everything (~15-25 minutes on 2 cores)
#   benchmarks/run.sh --quick    # fewer turns, shorter capacity windows (~8 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
"$VENV/bin/pip" install -q -e . -r benchmarks/requirements.txt
exec "$VENV/bin/python" benchmarks/run_all.py "$@"
