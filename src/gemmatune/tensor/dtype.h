// Storage dtypes of checkpoint tensors and scalar conversions to float.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace gt {

enum class DType { F32, BF16, F16, I32, I64, U8, BOOL, F64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);        // safetensors spelling: "F32", "BF16", ...
bool dtype_from_name(const std::string& s, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round-to-nearest-even, NaN kept quiet (matches torch's float -> bfloat16 cast).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of `src` (stored as `t`, a floating dtype) into float.
void to_f32(DType t, const void* src, float* dst, size_t n);

}  // namespace gt
