#!/bin/sh
# ctest: in the gemmatune binary, every instruction that touches AVX-512 state (zmm registers,
# opmask registers k0-k7, xmm16-31/ymm16-31) lies in a function of the per-ISA kernels
# (namespace gt::gemm::x86, kernels/x86/*.cc), which run only after the CPUID check. Everything
# else is compiled for x86-64-v3 and must not contain any.
set -eu
bin="$1"
objdump -d --no-show-raw-insn "$bin" | awk '
/^[0-9a-f]+ <.*>:$/ { fn = $2; next }
/%zmm|%k[0-7]|%[xy]mm(1[6-9]|2[0-9]|3[01])/ {
  if (fn ~ /^<_Z+N2gt4gemm3x86/) ok++; else bad[fn]++
}
END {
  n = 0
  for (f in bad) { print "AVX-512 register use outside kernels/x86: " f " (" bad[f] " instructions)"; n++ }
  if (ok == 0) { print "no AVX-512 instruction found at all: the check itself is broken"; exit 1 }
  if (n > 0) exit 1
  print ok " instructions use AVX-512 registers, all inside gt::gemm::x86 (the per-ISA kernels)"
}'
