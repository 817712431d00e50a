#!/usr/bin/env bash
# The embedded default: create a tiny random Gemma 3 with the real Gemma 3 tokenizer and
# generate from it (KV-cached, streaming). Runs from a built tree (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/gemmatune
DEMO=build/demo
mkdir -p "$DEMO"
if [ ! -f "$DEMO/tokenizer.json" ]; then
  xz -dc tests/data/assets/gemma3_tokenizer.json.xz > "$DEMO/tokenizer.json.tmp" && mv "$DEMO/tokenizer.json.tmp" "$DEMO/tokenizer.json"
fi
"$BIN" init-model --preset tiny --out "$DEMO/tiny-gemma3" --seed 1 \
  --tokenizer "$DEMO/tokenizer.json" --chat-template tests/data/assets/gemma3_chat_template.jinja
echo "--- gemmatune generate (random weights: the text is noise, the pipeline is real) ---"
"$BIN" generate --model "$DEMO/tiny-gemma3" --prompt "The capital of France is" --max-new-tokens 24 --seed 7
