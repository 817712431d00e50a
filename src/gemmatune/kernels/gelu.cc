#include "gemmatune/kernels/gelu.h"

#include <cmath>

namespace gt {

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoef = 0.044715f;
}  // namespace

float gelu_tanh(float x) { return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + kCoef * x * x * x))); }

float gelu_tanh_grad(float x) {
  const float t = std::tanh(kSqrt2OverPi * (x + kCoef * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kCoef * x * x);
}

void gelu_gate_forward(const float* gate, int64_t ldg, const float* up, int64_t ldu, float* out, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate + r * ldg;
    const float* u = up + r * ldu;
    float* o = out + r * n;
    for (int64_t i = 0; i < n; ++i) o[i] = gelu_tanh(g[i]) * u[i];
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
    for (int64_t i = 0; i < n; ++i) {
      dg[i] = da[i] * u[i] * gelu_tanh_grad(g[i]);
      du[i] = da[i] * gelu_tanh(g[i]);
    }
  }
}

}  // namespace gt
