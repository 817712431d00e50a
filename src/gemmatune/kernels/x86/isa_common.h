// Helpers for the per-ISA kernel translation units (kernels/x86/gemm_*.cc). Those files are
// compiled with their own -m flags, so everything they define must stay private to them: no
// inline function or template with external linkage (the linker could pick such a copy for a
// caller on a CPU without the ISA). Hence internal linkage only (this header's `static inline`,
// anonymous namespaces) and no std:: templates; tests/kernels/isa_isolation.cmake checks the
// objects' symbols.
#pragma once
#include <cstdint>
#include <cstring>

namespace gt::gemm::x86 {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

inline float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round-to-nearest-even, NaN kept quiet (the same rounding as vcvtne2ps2bf16 and torch).
inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// IEEE half -> float (scalar tails only).
inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((man & 0x400u) == 0) {
        man <<= 1;
        --exp;
      }
      man &= 0x3ffu;
      u = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Element i of a stored weight row as float (dt: 0 = f32, 1 = bf16, 2 = f16).
template <int D>
inline float load1(const void* p, int64_t i) {
  if constexpr (D == 1) {
    return bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
  } else if constexpr (D == 2) {
    return f16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
  } else {
    return static_cast<const float*>(p)[i];
  }
}

template <int D>
constexpr int64_t esize() {
  return D == 0 ? 4 : 2;
}

}  // namespace
}  // namespace gt::gemm::x86
