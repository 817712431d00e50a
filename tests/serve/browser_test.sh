#!/usr/bin/env bash
# Black-box test of the chat page at / with a real browser: Debian's chromium, headless. Serves the
# quick-start demo model with the demo adapter, opens the page with a query string that picks the
# adapter and sends the demo question (the page supports ?q=...&model=...), waits until the reply
# has streamed in (#status "done"), checks that the trained answer is on the page, and saves a
# screenshot to $BUILD/serve-tests/chat_page.png.
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
PROFILE=$SCRATCH/chromium-profile
rm -rf "$PROFILE"
# --virtual-time-budget: the page's scripts and fetches run until they are idle (the reply has
# streamed in) or the budget runs out; then the DOM is printed / the screenshot taken.
FLAGS=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --user-data-dir="$PROFILE"
       --window-size=1000,700 --virtual-time-budget=60000)
timeout 180 "$CHROMIUM" "${FLAGS[@]}" --dump-dom "$URL" >"$SCRATCH/chat_page.html" 2>"$SCRATCH/chromium.log" ||
  { tail -n 20 "$SCRATCH/chromium.log"; echo "FAIL: chromium --dump-dom failed" >&2; exit 1; }
SHOT=$SCRATCH/chat_page.png
rm -f "$SHOT"
timeout 180 "$CHROMIUM" "${FLAGS[@]}" --screenshot="$SHOT" "$URL" >>"$SCRATCH/chromium.log" 2>&1 ||
  { tail -n 20 "$SCRATCH/chromium.log"; echo "FAIL: chromium --screenshot failed" >&2; exit 1; }
stop_server

fail=0
grep -q '<div id="status">done: ' "$SCRATCH/chat_page.html" || { echo "FAIL: the reply did not finish (#status is not 'done')"; fail=1; }
grep -q 'What is the capital of France?' "$SCRATCH/chat_page.html" || { echo "FAIL: the question is not on the page"; fail=1; }
grep -q 'The capital of France is Paris.' "$SCRATCH/chat_page.html" || { echo "FAIL: the trained answer is not on the page"; fail=1; }
grep -q '\[error\]' "$SCRATCH/chat_page.html" && { echo "FAIL: the page shows an error"; fail=1; }
[ -s "$SHOT" ] && [ "$(head -c 4 "$SHOT" | od -An -c | tr -d ' ')" = "211PNG" ] || { echo "FAIL: no PNG screenshot at $SHOT"; fail=1; }
if [ $fail -ne 0 ]; then
  echo "-- page (DOM) saved at $SCRATCH/chat_page.html:"
  sed -n '/<main/,/<\/main>/p' "$SCRATCH/chat_page.html" | head -c 3000
  exit 1
fi
echo "PASS: the chat page streamed the trained answer; screenshot: $SHOT"
