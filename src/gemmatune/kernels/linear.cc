// Dispatch for the linear layers (see linear.h for the paths and linear_gemv.cc / linear_gemm.cc
// for the kernels), plus the naive reference used by tests.
#include "gemmatune/kernels/linear.h"

#include <omp.h>

#include <vector>

#include "gemmatune/util/error.h"

namespace gt {

namespace linear_detail {

namespace {

// Row r of w as floats into `out` (k entries).
inline void load_row(const Weight2D& w, int64_t r, float* out) { weight_rows_to_f32(w, r, 1, out); }

void reference_forward(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                       int64_t ldy) {
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

void reference_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
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

void check_weight(const Weight2D& w, const char* fn) {
  GT_CHECK(w.data != nullptr || w.n * w.k == 0, fn, ": weight '", w.name, "' has no data");
  if (w.quantized()) {
    const int64_t bv = wformat_block_values(w.format);
    GT_CHECK(w.k % bv == 0, fn, ": quantized weight '", w.name, "' (", wformat_name(w.format), ") has k=", w.k,
             ", not a multiple of ", bv);
    return;
  }
  GT_CHECK(w.dtype == DType::F32 || w.dtype == DType::BF16 || w.dtype == DType::F16, fn, ": weight '", w.name,
           "' has dtype ", dtype_name(w.dtype), ", expected F32, BF16 or F16");
}

}  // namespace

const char* path_name(Path p) {
  switch (p) {
    case Path::Auto: return "auto";
    case Path::Gemv: return "gemv";
    case Path::Gemm: return "gemm";
    case Path::OneDnn: return "onednn";
    case Path::Reference: return "reference";
  }
  return "?";
}

void linear_path(Path p, const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                 int64_t ldy) {
  check_weight(w, "linear");
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  GT_CHECK(ldx >= w.k && ldy >= w.n, "linear: weight '", w.name, "': row strides ldx=", ldx, ", ldy=", ldy,
           " are smaller than k=", w.k, ", n=", w.n);
  if (m <= 0 || w.n <= 0) return;
  if (p == Path::Auto) p = m <= kGemvMaxM ? Path::Gemv : Path::Gemm;
  if (w.quantized() && p == Path::OneDnn) p = Path::Gemm;  // no oneDNN path for blocks
  switch (p) {
    case Path::Gemv: return gemv_forward(x, m, w, y, accumulate, ldx, ldy);
    case Path::Gemm: return gemm_forward(x, m, w, y, accumulate, ldx, ldy);
    case Path::OneDnn: return onednn_forward(x, m, w, y, accumulate, ldx, ldy);
    default: return reference_forward(x, m, w, y, accumulate, ldx, ldy);
  }
}

void linear_backward_input_path(Path p, const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
  check_weight(w, "linear_backward_input");
  if (m <= 0 || w.k <= 0) return;
  if (w.quantized() && p == Path::OneDnn) p = Path::Gemm;
  switch (p) {
    case Path::Auto:
    case Path::Gemv:
    case Path::Gemm: return gemm_backward_input(dy, m, w, dx, accumulate);
    case Path::OneDnn: return onednn_backward_input(dy, m, w, dx, accumulate);
    default: return reference_backward_input(dy, m, w, dx, accumulate);
  }
}

}  // namespace linear_detail

void linear(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy) {
  linear_detail::linear_path(linear_detail::Path::Auto, x, m, w, y, accumulate, ldx, ldy);
}

void linear_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
  linear_detail::linear_backward_input_path(linear_detail::Path::Auto, dy, m, w, dx, accumulate);
}

}  // namespace gt
