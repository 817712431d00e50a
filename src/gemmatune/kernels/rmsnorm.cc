#include "gemmatune/kernels/rmsnorm.h"

#include <cmath>
#include <vector>

namespace gt {

void rmsnorm_forward(const float* x, const float* g, float* y, int64_t rows, int64_t n, float eps, float* rstd) {
#pragma omp parallel for schedule(static) if (rows * n > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * double(xr[i]);
    const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    if (rstd) rstd[r] = inv;
    if (g) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * inv) * g[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * inv;
    }
  }
}

void rmsnorm_backward(const float* x, const float* g, const float* dy, const float* rstd, float* dx, int64_t rows,
                      int64_t n, bool accumulate) {
#pragma omp parallel for schedule(static) if (rows * n > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    const float* dyr = dy + r * n;
    float* dxr = dx + r * n;
    const float inv = rstd[r];
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < n; ++i) dot += double(xr[i]) * double(g ? g[i] : 1.0f) * double(dyr[i]);
    const double di = inv, c = di * di * di * dot / double(n);
    for (int64_t i = 0; i < n; ++i) {
      const float v = float(di * double(g ? g[i] : 1.0f) * double(dyr[i]) - c * double(xr[i]));
      dxr[i] = accumulate ? dxr[i] + v : v;
    }
  }
}

}  // namespace gt
