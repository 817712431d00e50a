#include "gemmatune/kernels/dropout.h"

#include <cmath>

namespace gt {

namespace {
inline uint64_t mix64(uint64_t z) {  // splitmix64 finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

void dropout_apply(const float* x, float* y, int64_t rows, int64_t n, double p, uint64_t seed, uint64_t stream) {
  // Keep when the 32-bit uniform u >= p·2³²: P(keep) = 1 - p up to 2⁻³².
  const uint64_t threshold = uint64_t(std::llround(p * 4294967296.0));
  const float scale = float(1.0 / (1.0 - p));
  const uint64_t base = mix64(seed ^ mix64(stream + 0x9E3779B97F4A7C15ull));
#pragma omp parallel for schedule(static) if (rows * n >= (int64_t(1) << 16))
  for (int64_t t = 0; t < rows; ++t) {
    const uint64_t rb = mix64(base + uint64_t(t) * 0xD1B54A32D192ED03ull);
    const float* xr = x + t * n;
    float* yr = y + t * n;
    for (int64_t i = 0; i < n; i += 2) {
      const uint64_t h = mix64(rb + uint64_t(i >> 1));
      yr[i] = (h & 0xFFFFFFFFull) >= threshold ? xr[i] * scale : 0.0f;
      if (i + 1 < n) yr[i + 1] = (h >> 32) >= threshold ? xr[i + 1] * scale : 0.0f;
    }
  }
}

}  // namespace gt
