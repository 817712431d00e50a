#!/usr/bin/env bash
# Black-box test of the chat page at / with a real browser: Debian's chromium, headless. Serves the
# quick-start demo model with the demo adapter, opens the page with a query string that picks the
# adapter and sends the demo question (the page supports ?q=...&model=...), waits until the reply
# has streamed in (the page's title, read through the DevTools endpoint), checks the trained
# answer, then prints the final page (DOM checked) and saves a screenshot to
# $BUILD/serve-tests/chat_page.png.
#   usage: tests/serve/browser_test.sh [BINARY] [BUILD_DIR]    (ctest label: e2e)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../../build/gemmatune}
BUILD=${2:-$(dirname "$BIN")}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
BUILD=$(cd "$BUILD" && pwd)
source "$HERE/serve_util.sh"

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "FAIL: chromium not found (scripts/install_deps.sh installs Debian's chromium)" >&2; exit 1; }
"$CHROMIUM" --version

ensure_demo
start_server "$SCRATCH/browser_server.log" --model "$DEMO/tiny-gemma3" --adapter "demo=$DEMO/run/adapter" --ctx 512 --threads 2
URL="http://127.0.0.1:$PORT/?model=demo&temperature=0&max_tokens=32&q=What%20is%20the%20capital%20of%20France%3F"
ANSWER="The capital of France is Paris."
FLAGS=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --window-size=1000,700)
fail=0

# 1. Streaming, in a live browser: the page sends the question, reads the SSE stream and, when the
# reply has ended, sets its title to "gemmatune: done: <answer>"; the DevTools HTTP endpoint
# (/json/list) shows the title, polled here.
DT_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$SCRATCH/chromium-live"
"$CHROMIUM" "${FLAGS[@]}" --user-data-dir="$SCRATCH/chromium-live" --remote-debugging-port="$DT_PORT" "$URL" \
  >"$SCRATCH/chromium.log" 2>&1 &
CHROME_PID=$!
title=""
for _ in $(seq 1 1200); do
  title=$(python3 - "$DT_PORT" <<'PY' 2>/dev/null || true
import json, sys, urllib.request
pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/list", timeout=5))
print(next((p["title"] for p in pages if p.get("type") == "page"), ""))
PY
)
  case $title in "gemmatune: done"*) break ;; esac
  sleep 0.1
done
kill "$CHROME_PID" 2>/dev/null || true
wait "$CHROME_PID" 2>/dev/null || true
echo "streamed page title: $title"
case $title in
  "gemmatune: done: "*"$ANSWER"*) echo "ok   the streamed reply on the page is the trained answer" ;;
  *) echo "FAIL: the streamed reply did not end with the trained answer (title: '$title')"; fail=1 ;;
esac

# 2. The final page, printed and photographed: the same question answered in one piece (stream=0,
# which --virtual-time-budget waits for), the DOM checked, a screenshot saved.
URL1="$URL&stream=0"
SHOT=$SCRATCH/chat_page.png
rm -f "$SHOT"
rm -rf "$SCRATCH/chromium-shot"
timeout 180 "$CHROMIUM" "${FLAGS[@]}" --user-data-dir="$SCRATCH/chromium-shot" --virtual-time-budget=60000 --dump-dom "$URL1" \
  >"$SCRATCH/chat_page.html" 2>>"$SCRATCH/chromium.log" || { echo "FAIL: chromium --dump-dom failed"; fail=1; }
timeout 180 "$CHROMIUM" "${FLAGS[@]}" --user-data-dir="$SCRATCH/chromium-shot" --virtual-time-budget=60000 --screenshot="$SHOT" "$URL1" \
  >>"$SCRATCH/chromium.log" 2>&1 || { echo "FAIL: chromium --screenshot failed"; fail=1; }
stop_server

MAIN=$(sed -n 's/.*\(<main.*<\/main>\).*/\1/p' "$SCRATCH/chat_page.html")
grep -q '<div id="status">done: ' "$SCRATCH/chat_page.html" || { echo "FAIL: the reply did not finish (#status is not 'done')"; fail=1; }
grep -q 'What is the capital of France?' <<<"$MAIN" || { echo "FAIL: the question is not on the page"; fail=1; }
grep -qF "$ANSWER" <<<"$MAIN" || { echo "FAIL: the trained answer is not on the page"; fail=1; }
grep -q '\[error\]' <<<"$MAIN" && { echo "FAIL: the page shows an error"; fail=1; }
[ -s "$SHOT" ] && [ "$(head -c 4 "$SHOT" | od -An -c | tr -d ' ')" = "211PNG" ] || { echo "FAIL: no PNG screenshot at $SHOT"; fail=1; }
if [ $fail -ne 0 ]; then
  echo "-- page (DOM) saved at $SCRATCH/chat_page.html:"
  echo "$MAIN" | head -c 3000
  exit 1
fi
echo "PASS: the chat page streamed the trained answer; screenshot: $SHOT"
