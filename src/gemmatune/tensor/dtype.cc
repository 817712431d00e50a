#include "gemmatune/tensor/dtype.h"

#include <cmath>

#include "gemmatune/util/error.h"

namespace gt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
    case DType::BOOL: return 1;
    case DType::F64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
    case DType::F64: return "F64";
  }
  return "?";
}

bool dtype_from_name(const std::string& s, DType* out) {
  static const struct { const char* n; DType t; } table[] = {
      {"F32", DType::F32}, {"BF16", DType::BF16}, {"F16", DType::F16}, {"I32", DType::I32},
      {"I64", DType::I64}, {"U8", DType::U8},     {"BOOL", DType::BOOL}, {"F64", DType::F64}};
  for (const auto& e : table)
    if (s == e.n) {
      *out = e.t;
      return true;
    }
  return false;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        man <<= 1;
        ++e;
      } while ((man & 0x400) == 0);
      man &= 0x3ff;
      u = sign | uint32_t(127 - 15 - e) << 23 | man << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  if (std::isnan(f)) return sign | 0x7e00;
  float a = std::fabs(f);
  if (a >= 65520.0f) return sign | 0x7c00;
  if (a < 6.103515625e-05f) {  // subnormal half: round a / 2^-24 to nearest even
    float q = std::nearbyint(a * 16777216.0f);
    return sign | uint16_t(q);
  }
  uint32_t au = u & 0x7fffffffu;
  au += 0xfffu + ((au >> 13) & 1u);  // round to nearest even at bit 13
  uint32_t exp = (au >> 23) - 112;
  return sign | uint16_t(exp << 10 | ((au >> 13) & 0x3ff));
}

// Elements are loaded with memcpy: a mapped tensor need not be aligned to its element size (a
// safetensors header of any length, or an odd-sized tensor before it); the copies compile to plain loads.
namespace {
// Reads n values of type T from possibly unaligned bytes and converts each with `f`.
template <class T, class F>
void convert_each(const uint8_t* b, size_t n, float* dst, F f) {
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, b + sizeof(T) * i, sizeof(T));
    dst[i] = f(v);
  }
}
}  // namespace

void to_f32(DType t, const void* src, float* dst, size_t n) {
  const auto* b = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32:
      if (n) std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: return convert_each<uint16_t>(b, n, dst, bf16_to_f32);
    case DType::F16: return convert_each<uint16_t>(b, n, dst, f16_to_f32);
    case DType::F64: return convert_each<double>(b, n, dst, [](double d) { return float(d); });
    default:
      break;
  }
  fail("cannot convert a tensor of dtype ", dtype_name(t), " to float");
}

}  // namespace gt
