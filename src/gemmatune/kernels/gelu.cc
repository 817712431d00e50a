#include "gemmatune/kernels/gelu.h"

#include "gemmatune/kernels/vec_math.h"

namespace gt {

// gelu_tanh(x) = 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³), computed as x·σ(2u) (the same
// function: 1 + tanh(u) = 2σ(2u)), which has no cancellation for negative x. Its derivative:
// σ(2u) + x·2σ(2u)(1 − σ(2u))·√(2/π)·(1 + 3·0.044715·x²).
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoef = 0.044715f;

struct Gelu8 {
  __m256 value, grad;
};

// value and derivative of gelu_tanh on 8 lanes (grad only when `want_grad`).
inline Gelu8 gelu8(__m256 x, bool want_grad) {
  const __m256 x2 = _mm256_mul_ps(x, x);
  const __m256 k = _mm256_set1_ps(kSqrt2OverPi);
  const __m256 inner = _mm256_fmadd_ps(_mm256_set1_ps(kCoef), x2, _mm256_set1_ps(1.0f));  // 1 + c·x²
  const __m256 two_u = _mm256_mul_ps(_mm256_set1_ps(2.0f), _mm256_mul_ps(k, _mm256_mul_ps(x, inner)));
  const __m256 s = vec::sigmoid8(two_u);
  Gelu8 r{_mm256_mul_ps(x, s), _mm256_setzero_ps()};
  if (want_grad) {
    const __m256 du = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_set1_ps(3.0f * kCoef), x2, _mm256_set1_ps(1.0f)));
    const __m256 ds = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.0f), s), _mm256_sub_ps(_mm256_set1_ps(1.0f), s));
    r.grad = _mm256_fmadd_ps(_mm256_mul_ps(x, ds), du, s);
  }
  return r;
}
}  // namespace

float gelu_tanh(float x) { return vec::first_lane(gelu8(_mm256_set1_ps(x), false).value); }

float gelu_tanh_grad(float x) { return vec::first_lane(gelu8(_mm256_set1_ps(x), true).grad); }

void gelu_gate_forward(const float* gate, int64_t ldg, const float* up, int64_t ldu, float* out, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate + r * ldg;
    const float* u = up + r * ldu;
    float* o = out + r * n;
    for (int64_t i = 0; i < n; i += 8) {
      const __m256i m = vec::tail_mask(n - i);
      const Gelu8 a = gelu8(_mm256_maskload_ps(g + i, m), false);
      _mm256_maskstore_ps(o + i, m, _mm256_mul_ps(a.value, _mm256_maskload_ps(u + i, m)));
    }
  }
}

void gelu_gate_backward(const float* gate, int64_t ldg, const float* up, int64_t ldu, const float* dout, float* dgate,
                        int64_t lddg, float* dup, int64_t lddu, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate + r * ldg;
    const float* u = up + r * ldu;
    const float* da = dout + r * n;
    float* dg = dgate + r * lddg;
    float* du = dup + r * lddu;
    for (int64_t i = 0; i < n; i += 8) {
      const __m256i m = vec::tail_mask(n - i);
      const Gelu8 a = gelu8(_mm256_maskload_ps(g + i, m), true);
      const __m256 d = _mm256_maskload_ps(da + i, m);
      _mm256_maskstore_ps(dg + i, m, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_maskload_ps(u + i, m)), a.grad));
      _mm256_maskstore_ps(du + i, m, _mm256_mul_ps(d, a.value));
    }
  }
}

}  // namespace gt
