// splitmix64: the small deterministic generator behind data order, LoRA initialisation and seeds
// (same numbers on every platform and standard library).
#pragma once
#include <cstdint>

namespace gt {

// Advances `s` and returns the next 64-bit value.
inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace gt
