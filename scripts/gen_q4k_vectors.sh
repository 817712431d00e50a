#!/usr/bin/env bash
# Writes tests/data/quant/ggml_q4k_vectors.safetensors with ggml's own C reference Q4_K quantizer
# (quantize_row_q4_K_ref) and dequantizer: the `gguf` Python package has no Q4_K quantizer.
# Tooling only, run once; the tests read the committed file (tests/quant/test_quant_blocks.cc).
#
#   scripts/gen_q4k_vectors.sh [OUT]     (needs gcc, and pip to fetch the sdist unless SDIST is set)
#
# ggml-quants.c is compiled as llama.cpp's CMake compiles ggml-base on x86-64: C (gnu11), no -march,
# so no FMA instruction exists and no multiply-add is fused; -ffp-contract=off makes that explicit
# (a build with FMA contraction, e.g. on aarch64, can round some values differently).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../tests/data/quant/ggml_q4k_vectors.safetensors}
work=${WORK:-/tmp/gemmatune_q4k_ref}
mkdir -p "$work"
if [ -z "${SDIST:-}" ]; then
  if [ ! -d "$work/llama_cpp_python-0.3.36" ]; then
    pip=${PIP:-pip}
    "$pip" download --no-deps --no-binary :all: llama_cpp_python==0.3.36 -d "$work"
    tar xf "$work/llama_cpp_python-0.3.36.tar.gz" -C "$work"
  fi
  SDIST=$work/llama_cpp_python-0.3.36
fi
ggml=$SDIST/vendor/llama.cpp/ggml
gcc -O2 -std=gnu11 -ffp-contract=off -I"$ggml/include" -I"$ggml/src" \
  "$ggml/src/ggml-quants.c" "$here/q4k_ref/gen_q4k_vectors.c" -lm -o "$work/gen_q4k_vectors"
"$work/gen_q4k_vectors" "$out"
