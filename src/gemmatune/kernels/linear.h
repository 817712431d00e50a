// Linear layers over frozen weights: y[M,N] = x[M,K] · Wᵀ with W stored [N,K] (nn.Linear layout)
// in its checkpoint dtype (F32, BF16 or F16). Weights are never expanded to f32 in memory as a
// whole; activations and accumulation are f32.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "gemmatune/tensor/dtype.h"

namespace gt {

struct Weight2D {
  std::string name;
  DType dtype = DType::F32;
  const void* data = nullptr;  // row-major [n, k]
  int64_t n = 0;               // output features (rows)
  int64_t k = 0;               // input features (columns)

  // Opaque per-weight state a kernel may build once and reuse (e.g. a pre-packed layout).
  mutable std::shared_ptr<void> packed;

  bool empty() const { return data == nullptr; }
  size_t bytes() const { return size_t(n) * size_t(k) * dtype_size(dtype); }
};

// y = x Wᵀ, or y += x Wᵀ when `accumulate`. x is [m, w.k] with row stride `ldx` (0 = w.k),
// y is [m, w.n] with row stride `ldy` (0 = w.n). Threads: the caller's OpenMP setting.
void linear(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate = false,
            int64_t ldx = 0, int64_t ldy = 0);

// dx[m,k] (+)= dy[m,n] · W : the activation gradient through a frozen weight (backward of linear).
void linear_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate = false);

}  // namespace gt
