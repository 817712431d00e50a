#include "gemmatune/kernels/rope.h"

#include <cmath>
#include <vector>

namespace gt {

namespace {
void rope_apply(float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t dim, const float* inv_freq,
                int64_t row_stride, float sign) {
  const int64_t half = dim / 2;
  if (row_stride == 0) row_stride = heads * dim;
#pragma omp parallel if (tokens > 16)
  {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tokens; ++t) {
      const float pos = float(positions[t]);
      for (int64_t j = 0; j < half; ++j) {
        const float a = pos * inv_freq[j];
        c[size_t(j)] = std::cos(a);
        s[size_t(j)] = sign * std::sin(a);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + t * row_stride + h * dim;
        for (int64_t j = 0; j < half; ++j) {
          const float a = v[j], b = v[j + half];
          v[j] = a * c[size_t(j)] - b * s[size_t(j)];
          v[j + half] = b * c[size_t(j)] + a * s[size_t(j)];
        }
      }
    }
  }
}
}  // namespace

void rope_forward(float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t dim, const float* inv_freq,
                  int64_t row_stride) {
  rope_apply(x, positions, tokens, heads, dim, inv_freq, row_stride, 1.0f);
}

void rope_backward(float* dx, const int64_t* positions, int64_t tokens, int64_t heads, int64_t dim, const float* inv_freq,
                   int64_t row_stride) {
  rope_apply(dx, positions, tokens, heads, dim, inv_freq, row_stride, -1.0f);
}

}  // namespace gt
