#!/usr/bin/env bash
# Writes the GGUF test fixtures of tests/model/test_gguf_model.cc into tests/data/gguf/ (xz), with
# llama.cpp's own, unmodified convert_hf_to_gguf.py from the llama-cpp-python 0.3.36 sdist:
#
#   tiny-f32.gguf.xz   `gemmatune init-model --preset tiny --layers 2 --vocab 512 --dtype f32 --seed 13`
#                      (the real Gemma 3 tokenizer), converted with --outtype f32
#   tiny-q8_0.gguf.xz  the same folder, --outtype q8_0 (the converter's Q8_0 = ggml's reference quantizer)
#   gemma3-vocab.gguf.xz  --vocab-only of a Gemma 3 config (vocab_size 262208, as Gemma 3 4B+) with the
#                      real tokenizer and chat template (no tensors), for the tokenizer and chat template tests
#
# The converter takes its Gemma 3 SentencePiece route (tokenizer.ggml.model = llama), so a
# tokenizer.model is rebuilt from tokenizer.json (make_spm.py below: piece score = -(rank of the
# first merge producing it), which is how transformers derived the merges from the scores), and the
# real tokenizer_config.json (chat template, added tokens) is placed beside it.
# The test regenerates the Hugging Face folder with the same init-model command and compares.
#
# Usage: scripts/gen_gguf_fixture.sh   (env: GEMMATUNE=build/gemmatune, PY=/work/venv/hf/bin/python
#        with torch, transformers, sentencepiece, protobuf; W=work folder; LCP_VERSION=0.3.36)
# Python is used here only, never by the tests.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GT=${GEMMATUNE:-$ROOT/build/gemmatune}
PY=${PY:-/work/venv/hf/bin/python}
LCP_VERSION=${LCP_VERSION:-0.3.36}
W=${W:-${TMPDIR:-/tmp}/gemmatune-gguf-fixture}
OUT=$ROOT/tests/data/gguf
ASSETS=$ROOT/tests/data/assets
mkdir -p "$W" "$OUT"
log() { echo "[gen_gguf_fixture] $*" >&2; }

SD=$W/llama_cpp_python-$LCP_VERSION
if [ ! -f "$SD/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  log "downloading the llama-cpp-python $LCP_VERSION sdist"
  "$PY" -m pip download --no-deps --no-binary :all: "llama_cpp_python==$LCP_VERSION" -d "$W"
  tar xf "$W/llama_cpp_python-$LCP_VERSION.tar.gz" -C "$W"
fi
CONVERT=$SD/vendor/llama.cpp/convert_hf_to_gguf.py

cat > "$W/make_spm.py" <<'EOF'
# Rebuild a SentencePiece tokenizer.model (BPE, byte fallback) from a Gemma 3 tokenizer.json.
# Piece score = -(rank of the first merge producing the piece). Added tokens: CONTROL when special,
# else USER_DEFINED; <0xNN>: BYTE; these score 0.
import json, sys
from sentencepiece import sentencepiece_model_pb2 as pb
src, dst, n_vocab = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = json.load(open(src, encoding="utf-8"))
vocab, merges = t["model"]["vocab"], t["model"]["merges"]
inv = {i: s for s, i in vocab.items()}
first = {}
for r, m in enumerate(merges):
    a, b = (m if isinstance(m, list) else m.split(" ", 1))
    first.setdefault(a + b, r)
added = {a["id"]: a for a in t["added_tokens"]}
mp = pb.ModelProto()
ts = mp.trainer_spec
ts.model_type = pb.TrainerSpec.BPE; ts.vocab_size = n_vocab; ts.byte_fallback = True
ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = vocab["<unk>"], vocab["<bos>"], vocab["<eos>"], vocab["<pad>"]
ts.unk_piece, ts.bos_piece, ts.eos_piece, ts.pad_piece = "<unk>", "<bos>", "<eos>", "<pad>"
ns = mp.normalizer_spec
ns.name = "identity"; ns.add_dummy_prefix = False; ns.remove_extra_whitespaces = False; ns.escape_whitespaces = True
P = pb.ModelProto.SentencePiece
for i in range(n_vocab):
    s = inv[i]
    p = mp.pieces.add(); p.piece = s
    if s == "<unk>": p.type = P.UNKNOWN; p.score = 0.0
    elif i in added and added[i]["special"]: p.type = P.CONTROL; p.score = 0.0
    elif i in added: p.type = P.USER_DEFINED; p.score = 0.0
    elif len(s) == 6 and s.startswith("<0x") and s.endswith(">"): p.type = P.BYTE; p.score = 0.0
    else: p.type = P.NORMAL; p.score = -float(first.get(s, len(merges) + i))
open(dst, "wb").write(mp.SerializeToString())
EOF

xz -dc "$ASSETS/gemma3_tokenizer.json.xz" > "$W/tokenizer.json"
xz -dc "$ASSETS/gemma3_tokenizer_config.json.xz" > "$W/tokenizer_config.json"
"$PY" "$W/make_spm.py" "$W/tokenizer.json" "$W/tokenizer.model" 262144

# The tiny model (the same command as tests/model/test_gguf_model.cc's hf_folder()).
rm -rf "$W/tiny"
"$GT" init-model --preset tiny --layers 2 --vocab 512 --dtype f32 --seed 13 --out "$W/tiny" \
  --tokenizer "$W/tokenizer.json" --chat-template "$ASSETS/gemma3_chat_template.jinja" > /dev/null
cp "$W/tokenizer.model" "$W/tokenizer_config.json" "$W/tiny/"
for t in f32 q8_0; do
  log "converting the tiny model to $t"
  "$PY" "$CONVERT" "$W/tiny" --outtype "$t" --outfile "$W/tiny-$t.gguf" > "$W/convert-$t.log" 2>&1 \
    || { tail -20 "$W/convert-$t.log"; exit 1; }
done

# The vocabulary only: a Gemma 3 config with the full vocabulary, no weights.
rm -rf "$W/vocab" && mkdir -p "$W/vocab"
cp "$W/tokenizer.model" "$W/tokenizer_config.json" "$W/vocab/"
"$PY" - "$W/tiny/config.json" "$W/vocab/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
(c.get("text_config") or c)["vocab_size"] = 262208  # Gemma 3 4B and larger: <image_soft_token> is 262144
json.dump(c, open(sys.argv[2], "w"), indent=2)
EOF
log "writing the vocabulary-only GGUF"
"$PY" "$CONVERT" "$W/vocab" --vocab-only --outfile "$W/gemma3-vocab.gguf" > "$W/convert-vocab.log" 2>&1 \
  || { tail -20 "$W/convert-vocab.log"; exit 1; }

for f in tiny-f32 tiny-q8_0 gemma3-vocab; do
  xz -9e -T1 -c "$W/$f.gguf" > "$OUT/$f.gguf.xz"
done
ls -la "$OUT"
du -cb "$OUT"/*.xz | tail -1
