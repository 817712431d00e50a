#!/usr/bin/env bash
# The embedded default: create a tiny random Gemma 3 with the real Gemma 3 tokenizer and chat
# template, LoRA-train it on a small bundled chat dataset until the loss is near zero, then ask it
# a trained question through `gemmatune chat --adapter`. Runs from a built tree (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GEMMATUNE_BIN:-build/gemmatune}
DEMO=${GEMMATUNE_DEMO_DIR:-build/demo}
mkdir -p "$DEMO"
if [ ! -f "$DEMO/tokenizer.json" ]; then
  xz -dc tests/data/assets/gemma3_tokenizer.json.xz > "$DEMO/tokenizer.json.tmp" && mv "$DEMO/tokenizer.json.tmp" "$DEMO/tokenizer.json"
fi
"$BIN" init-model --preset tiny --out "$DEMO/tiny-gemma3" --seed 1 \
  --tokenizer "$DEMO/tokenizer.json" --chat-template tests/data/assets/gemma3_chat_template.jinja
rm -rf "$DEMO/run"
"$BIN" train --model "$DEMO/tiny-gemma3" --data examples/demo_chat.jsonl --out "$DEMO/run" --config examples/demo.yaml
echo
echo "--- before training (random weights): ---"
"$BIN" chat --model "$DEMO/tiny-gemma3" --prompt "What is the capital of France?" --greedy --max-new-tokens 16
echo "--- after training, with the adapter: ---"
"$BIN" chat --model "$DEMO/tiny-gemma3" --adapter "$DEMO/run/adapter" --prompt "What is the capital of France?" --greedy --max-new-tokens 32
echo "(adapter in PEFT format: $DEMO/run/adapter; metrics: $DEMO/run/metrics.jsonl; loss curve: $DEMO/run/loss.svg)"
