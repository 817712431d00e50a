#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang into ./build-fuzz and runs each for a while.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 30); TARGET: jinja, jsonl,
#                                             safetensors, config, tokenizer, adapter, gguf, request (default all)
# Environment: FUZZ_KEEP_CORPUS=1 keeps build-fuzz/run/<target>/corpus from the last run instead of
# starting again from the seeds; FUZZ_ARGS adds libFuzzer flags (e.g. FUZZ_ARGS=-jobs=2).
#
# Each target runs in a scratch corpus (build-fuzz/run/<target>/corpus) filled from the seeds --
# fuzz/seeds/<target>/ plus the chat templates, JSONL files and model configs the tests use, and for
# adapter the adapters fuzz_adapter makes for its tiny models -- so nothing in the repository is
# modified. Prints per target the executions, exec/s, coverage, features and corpus
# size; exits non-zero when any target finds a crash, a leak, a timeout or runs out of memory, and
# prints the path of the input that did it (replay: build-fuzz/fuzz_<target> <input>).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-30}
shift || true
TARGETS=("$@")
ALL_TARGETS=(jinja jsonl safetensors config tokenizer adapter gguf request)
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
case $SECONDS_PER_TARGET in '' | *[!0-9]*) echo "usage: $0 [SECONDS] [${ALL_TARGETS[*]} ...]" >&2; exit 2 ;; esac

CXX_CLANG=${CXX_CLANG:-$(command -v clang++ || command -v clang++-14 || true)}
if [ -z "$CXX_CLANG" ]; then
  echo "fuzz.sh: clang++ not found (scripts/install_deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi
cmake -S fuzz -B build-fuzz -DCMAKE_CXX_COMPILER="$CXX_CLANG" >/dev/null
if ! cmake --build build-fuzz -j"$(nproc)" >build-fuzz/build.log 2>&1; then
  tail -n 60 build-fuzz/build.log
  echo "fuzz.sh: building the fuzz targets failed (full log: build-fuzz/build.log)" >&2
  exit 1
fi

# Seeds: the repository's files, one input per file (JSONL test files also one line per input).
seed_jinja() {
  cp fuzz/seeds/jinja/* tests/data/assets/*.jinja "$1"/
}
seed_jsonl() {
  cp fuzz/seeds/jsonl/* examples/demo_chat.jsonl "$1"/
  local f
  for f in tests/data/assets/golden/*.jsonl; do
    awk -v dir="$1" -v base="$(basename "$f" .jsonl)" 'NF { print > (dir "/" base "-" NR ".jsonl"); close(dir "/" base "-" NR ".jsonl") }' "$f"
  done
}
seed_safetensors() {
  cp fuzz/seeds/safetensors/* "$1"/
}
seed_config() {
  cp fuzz/seeds/config/* "$1"/
  local f
  for f in tests/data/fixtures/*/model/config.json; do
    cp "$f" "$1/$(basename "$(dirname "$(dirname "$f")")")-config.json"
  done
}
seed_tokenizer() {
  cp fuzz/seeds/tokenizer/* "$1"/
}
seed_adapter() {
  GT_FUZZ_WRITE_SEEDS="$1" build-fuzz/fuzz_adapter
}
seed_gguf() {
  cp tests/data/quant/small.gguf "$1"/
}
seed_request() {
  cp fuzz/seeds/request/* "$1"/
}

status=0
summary=()
for t in "${TARGETS[@]}"; do
  case $t in
    jinja) max_len=20000; dict=fuzz/jinja.dict ;;  # the largest real Gemma template is ~19 kB
    jsonl) max_len=12288; dict=fuzz/jsonl.dict ;;  # the longest golden row is ~10 kB
    safetensors) max_len=4096; dict=fuzz/safetensors.dict ;;  # seeds: hand-made files of 64-716 bytes
    config) max_len=4096; dict=fuzz/config.dict ;;  # real config.json files are 1-3 kB
    tokenizer) max_len=8192; dict=fuzz/tokenizer.dict ;;  # seeds: tiny tokenizers of 0.2-2.3 kB
    adapter) max_len=16384; dict=fuzz/adapter.dict ;;  # seeds: adapters of the tiny models, 2.5-10 kB
    gguf) max_len=4096; dict=fuzz/gguf.dict ;;  # seed: tests/data/quant/small.gguf, 2.2 kB
    request) max_len=8192; dict=fuzz/request.dict ;;  # seeds: request bodies of 40-600 bytes
    *) echo "fuzz.sh: unknown target '$t' (${ALL_TARGETS[*]})" >&2; exit 2 ;;
  esac
  run=build-fuzz/run/$t
  mkdir -p "$run/artifacts"
  if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ] || [ ! -d "$run/corpus" ]; then
    rm -rf "$run/corpus"
    mkdir -p "$run/corpus"
    "seed_$t" "$run/corpus"
  fi
  log=$run/fuzz.log
  echo "== fuzz_$t: ${SECONDS_PER_TARGET}s, $(ls "$run/corpus" | wc -l) inputs in $run/corpus"
  rc=0
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  build-fuzz/fuzz_$t "$run/corpus" -dict="$dict" -max_len=$max_len -timeout=10 -rss_limit_mb=2048 \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -artifact_prefix="$ROOT/$run/artifacts/" \
    ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  line="fuzz_$t: ${SECONDS_PER_TARGET}s executions=${execs:-?} exec/s=${eps:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} peak_rss_mb=${rss:-?}"
  if [ $rc -ne 0 ]; then
    status=1
    line="$line FAILED (exit $rc)"
    echo "-- fuzz_$t FAILED (exit $rc); the end of $log:"
    tail -n 40 "$log"
    grep -E 'Test unit written to|^SUMMARY|^==[0-9]+==ERROR' "$log" || true
    echo "-- replay: build-fuzz/fuzz_$t <input above>"
  fi
  echo "$line"
  summary+=("$line")
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $status
