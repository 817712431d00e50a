#!/usr/bin/env bash
# Builds gemmatune and runs the whole test suite with ctest, then each fuzz target for a short
# while (GEMMATUNE_FUZZ_SECONDS per target, default 30; 0 skips them; see docs/FUZZING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
fuzz_seconds=${GEMMATUNE_FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" -gt 0 ]; then
  scripts/fuzz.sh "$fuzz_seconds"
fi
