#!/usr/bin/env bash
# Builds the whole project and its tests with AddressSanitizer + UndefinedBehaviorSanitizer into
# ./build-asan and runs ctest there (about 20 min to build and 4 min to test on 2 cores). Not part of
# scripts/test.sh (too slow for every CI run); run it after changes to parsing, memory or threading.
#   scripts/sanitize.sh [ctest args...]      e.g. scripts/sanitize.sh -R Train
set -euo pipefail
cd "$(dirname "$0")/.."
flags="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-asan -j"$(nproc)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)" "$@"
