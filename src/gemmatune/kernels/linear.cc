#include "gemmatune/kernels/linear.h"

#include <omp.h>

#include <vector>

#include "gemmatune/util/error.h"

namespace gt {

namespace {

// Row r of w as floats into `out` (k entries).
inline void load_row(const Weight2D& w, int64_t r, float* out) {
  const size_t es = dtype_size(w.dtype);
  to_f32(w.dtype, static_cast<const uint8_t*>(w.data) + size_t(r) * size_t(w.k) * es, out, size_t(w.k));
}

}  // namespace

void linear(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy) {
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  GT_CHECK(w.data != nullptr, "linear: weight '", w.name, "' has no data");
#pragma omp parallel
  {
    std::vector<float> row(size_t(w.k));
#pragma omp for schedule(static)
    for (int64_t j = 0; j < w.n; ++j) {
      load_row(w, j, row.data());
      for (int64_t i = 0; i < m; ++i) {
        const float* xi = x + i * ldx;
        float acc = 0.0f;
        for (int64_t t = 0; t < w.k; ++t) acc += xi[t] * row[size_t(t)];
        float* yi = y + i * ldy + j;
        *yi = accumulate ? *yi + acc : acc;
      }
    }
  }
}

void linear_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
  GT_CHECK(w.data != nullptr, "linear_backward_input: weight '", w.name, "' has no data");
  std::vector<float> row(size_t(w.k));
  if (!accumulate)
    for (int64_t i = 0; i < m * w.k; ++i) dx[i] = 0.0f;
  for (int64_t j = 0; j < w.n; ++j) {
    load_row(w, j, row.data());
    for (int64_t i = 0; i < m; ++i) {
      float g = dy[i * w.n + j];
      float* d = dx + i * w.k;
      for (int64_t t = 0; t < w.k; ++t) d[t] += g * row[size_t(t)];
    }
  }
}

}  // namespace gt
