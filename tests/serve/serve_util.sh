# Shared by the black-box serve tests (sourced): the demo model + adapter, and a `gemmatune serve`
# started on a free port and stopped with SIGTERM (its exit status must be 0: a clean stop).
#   BIN: the gemmatune binary; BUILD: the build folder (scratch files go under $BUILD/serve-tests).

SRC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRATCH=$BUILD/serve-tests
mkdir -p "$SCRATCH"

# The quick-start demo (scripts/demo.sh): a tiny Gemma 3 trained to answer "What is the capital of
# France?" with "The capital of France is Paris.". Reused when $BUILD/demo already holds it.
ensure_demo() {
  DEMO=$BUILD/demo
  if [ ! -f "$DEMO/tiny-gemma3/config.json" ] || [ ! -f "$DEMO/run/adapter/adapter_config.json" ]; then
    echo "== building the demo model and adapter (scripts/demo.sh)"
    GEMMATUNE_BIN=$BIN GEMMATUNE_DEMO_DIR=$DEMO bash "$SRC_ROOT/scripts/demo.sh" >"$SCRATCH/demo.log" 2>&1 ||
      { tail -n 30 "$SCRATCH/demo.log"; echo "FAIL: scripts/demo.sh failed" >&2; exit 1; }
  fi
}

# start_server LOG ARGS...: starts `gemmatune serve --port 0 ARGS...`, waits until it listens, sets
# SERVER_PID and PORT.
start_server() {
  local log=$1
  shift
  "$BIN" serve --port 0 "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  PORT=""
  for _ in $(seq 1 600); do
    PORT=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log"; echo "FAIL: the server exited before listening" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$PORT" ] || { cat "$log"; echo "FAIL: the server did not start listening within 60 s" >&2; exit 1; }
  trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
}

# stop_server: SIGTERM, then the exit status must be 0 within 30 s.
stop_server() {
  kill -TERM "$SERVER_PID"
  local rc=0
  for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -9 "$SERVER_PID"
    echo "FAIL: the server did not stop within 30 s of SIGTERM" >&2
    exit 1
  fi
  wait "$SERVER_PID" || rc=$?
  trap - EXIT
  [ $rc -eq 0 ] || { echo "FAIL: the server exited with status $rc after SIGTERM" >&2; exit 1; }
  echo "server stopped cleanly on SIGTERM"
}
