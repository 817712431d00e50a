#!/usr/bin/env bash
# Checks that src/gemmatune's #include graph runs one way through the layers of
# docs/ARCHITECTURE.md, and prints the graph (area -> area: number of #include lines).
# Exit status 1 and a line per offending #include when an area includes a later or sibling one.
#   usage: scripts/check_layers.sh [SRC_DIR]      (default: src/gemmatune next to this script)
set -euo pipefail
SRC="${1:-$(dirname "$0")/../src/gemmatune}"
# Layer of each area: an area may include only its own and lower layers.
# quant (weight formats), dist (the communicator) and serve (HTTP) are the next wave's areas.
declare -A LAYER=([util]=0 [tensor]=1 [perf]=1 [io]=2 [kernels]=2 [data]=2 [quant]=2 [dist]=2 [model]=3
                  [lora]=4 [train]=5 [generate]=5 [tools]=6 [serve]=6 [cli]=7)
bad=0
declare -A EDGES=()
while IFS= read -r hit; do
  file="${hit%%:*}"
  rest="${hit#*:}"; line="${rest%%:*}"; text="${rest#*:}"
  from="${file#"$SRC"/}"; from="${from%%/*}"
  to="${text#*\"gemmatune/}"; to="${to%%/*}"
  [ "$from" = "$to" ] && continue
  if [ -z "${LAYER[$from]+x}" ] || [ -z "${LAYER[$to]+x}" ]; then
    echo "unknown area in $file:$line ($from -> $to): add it to the layer table" >&2; bad=1; continue
  fi
  EDGES["$from -> $to"]=$(( ${EDGES["$from -> $to"]:-0} + 1 ))
  if [ "${LAYER[$to]}" -ge "${LAYER[$from]}" ]; then
    echo "back edge: $file:$line: $from (layer ${LAYER[$from]}) includes $to (layer ${LAYER[$to]})" >&2; bad=1
  fi
done < <(grep -rn --include='*.h' --include='*.cc' --include='*.inc' '^#include "gemmatune/' "$SRC")
for e in "${!EDGES[@]}"; do echo "$e: ${EDGES[$e]}"; done | sort
if [ "$bad" -ne 0 ]; then echo "layer check FAILED" >&2; exit 1; fi
echo "layer check OK: util -> tensor/perf -> io/kernels/data/quant/dist -> model -> lora -> train/generate -> tools -> cli"
