#!/bin/sh
# ctest (quant.qlora_demo): the demo end to end on quantized bases. A tiny random Gemma 3 with the
# real tokenizer memorises two chat examples with LoRA on its dense weights; the model quantized to
# Q8_0 and to Q4_0 (gemmatune quantize) still answers the trained answer with that adapter. Then a
# QLoRA run (train on the Q4_0 folder) reaches a near-zero loss and its adapter answers too.
# --type q4_k on this model (hidden 64: no row is a whole 256-value super-block) takes the Q4_0
# fallback for every tensor: checked here through the CLI; the Q4_K kernels end to end are
# tests/quant/test_quant_model.cc's QuantModelQ4K (a widened fixture).
# The quantized answers are checked in exact mode (ctest sets GEMMATUNE_PRECISION=f32) and with the
# int8-activation decode GEMV (--precision auto).
#   usage: qlora_demo.sh GEMMATUNE_BINARY SOURCE_DIR
set -eu
BIN="$1"
SRC="$2"
D="${TMPDIR:-/tmp}/gemmatune-qlora-demo-$$"
trap 'rm -rf "$D"' EXIT
mkdir -p "$D"
xz -dc "$SRC/tests/data/assets/gemma3_tokenizer.json.xz" > "$D/tokenizer.json"
head -n 2 "$SRC/examples/demo_chat.jsonl" > "$D/data.jsonl"
grep -q "capital of France" "$D/data.jsonl"
sed 's/^steps: .*/steps: 50/; s/^save_every: .*/save_every: 1000/; s/^log_every: .*/log_every: 50/' \
  "$SRC/examples/demo.yaml" > "$D/run.yaml"
"$BIN" init-model --preset tiny --out "$D/tiny" --seed 1 --tokenizer "$D/tokenizer.json" \
  --chat-template "$SRC/tests/data/assets/gemma3_chat_template.jinja" > /dev/null
"$BIN" quantize --model "$D/tiny" --out "$D/tiny_q8" --type q8_0 > "$D/q8.txt"
"$BIN" quantize --model "$D/tiny" --out "$D/tiny_q4" --type q4_0 > "$D/q4.txt"
grep -q "model.layers.0.self_attn.q_proj.weight *q4_0" "$D/q4.txt" || { cat "$D/q4.txt"; exit 1; }
"$BIN" quantize --model "$D/tiny" --out "$D/tiny_q4k" --type q4_k > "$D/q4k.txt"
grep -q "model.layers.0.self_attn.q_proj.weight *q4_0" "$D/q4k.txt" || { cat "$D/q4k.txt"; exit 1; }
grep -q '"fallback"' "$D/tiny_q4k/config.json" || { echo "FAIL: q4_k config has no fallback entry"; exit 1; }

ask() {  # model adapter label
  out=$("$BIN" chat --model "$1" --adapter "$2" --prompt "What is the capital of France?" --greedy \
        --max-new-tokens 12 2>/dev/null)
  echo "$3: $out"
  case "$out" in *"The capital of France is Paris"*) ;; *) echo "FAIL: $3 does not answer the trained answer"; exit 1;; esac
}
final_loss() { sed -n 's/.*loss [0-9.]* -> \([0-9.]*\).*/\1/p' "$1"; }

"$BIN" train --model "$D/tiny" --data "$D/data.jsonl" --out "$D/run" --config "$D/run.yaml" > "$D/train.log" 2>&1
echo "dense LoRA final loss $(final_loss "$D/train.log")"
ask "$D/tiny" "$D/run/adapter" "bf16 base"
ask "$D/tiny_q8" "$D/run/adapter" "q8_0 base"
ask "$D/tiny_q4" "$D/run/adapter" "q4_0 base"
ask "$D/tiny_q4k" "$D/run/adapter" "q4_k base (q4_0 fallback)"
# The same under --precision auto: decode takes the int8-activation GEMV (llama.cpp's numerics).
for q in q8 q4; do
  out=$("$BIN" --precision auto chat --model "$D/tiny_$q" --adapter "$D/run/adapter" --greedy --max-new-tokens 12 \
        --prompt "What is the capital of France?" 2>/dev/null)
  echo "${q} base, --precision auto (int8 activations): $out"
  case "$out" in *"The capital of France is Paris"*) ;; *) echo "FAIL: ${q} with int8 activations does not answer"; exit 1;; esac
done

"$BIN" train --model "$D/tiny_q4" --data "$D/data.jsonl" --out "$D/qrun" --config "$D/run.yaml" > "$D/qtrain.log" 2>&1
loss=$(final_loss "$D/qtrain.log")
echo "QLoRA (q4_0 base) final loss $loss"
awk -v l="$loss" 'BEGIN { exit !(l != "" && l < 0.1) }' || { tail -5 "$D/qtrain.log"; echo "FAIL: QLoRA loss $loss"; exit 1; }
ask "$D/tiny_q4" "$D/qrun/adapter" "QLoRA adapter on q4_0"
echo "qlora demo OK"
