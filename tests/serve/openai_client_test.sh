#!/usr/bin/env bash
# Black-box test of `gemmatune serve` with the official `openai` Python client, installed from PyPI
# into a virtualenv in the build folder ($BUILD/serve-tests/openai-venv; reused across runs). Serves
# the quick-start demo model with the demo adapter and checks chat (plain and streamed),
# completions, the models list, adapter selection (the trained answer comes back) and errors.
#   usage: tests/serve/openai_client_test.sh [BINARY] [BUILD_DIR]    (ctest label: e2e)
# Needs network access to PyPI: when pip cannot install `openai`, the test FAILS (never skips).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../../build/gemmatune}
BUILD=${2:-$(dirname "$BIN")}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
BUILD=$(cd "$BUILD" && pwd)
source "$HERE/serve_util.sh"

VENV=$SCRATCH/openai-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
  echo "== creating $VENV and installing openai from PyPI"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || { echo "FAIL: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check openai; then
    echo "FAIL: pip could not install 'openai' from PyPI (no network?): this test needs it and does not skip" >&2
    exit 1
  fi
fi
"$VENV/bin/python" -c "import openai; print('openai', openai.__version__)"

ensure_demo
KEY=test-key-$$
ADAPTERS=$SCRATCH/adapters
rm -rf "$ADAPTERS" && mkdir -p "$ADAPTERS" && ln -s "$DEMO/run/adapter" "$ADAPTERS/demo-copy"
start_server "$SCRATCH/openai_server.log" --model "$DEMO/tiny-gemma3" --adapter "demo=$DEMO/run/adapter" \
  --adapter-dir "$ADAPTERS" --api-key "$KEY" --ctx 512 --max-seqs 4 --threads 2
echo "== server on port $PORT"
"$VENV/bin/python" "$HERE/openai_client_test.py" --base-url "http://127.0.0.1:$PORT/v1" --api-key "$KEY" \
  --base-model tiny-gemma3 --adapter demo
stop_server
echo "PASS: openai client test"
