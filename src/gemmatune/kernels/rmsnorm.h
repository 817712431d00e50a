// RMSNorm over the last dimension: y = x * (mean(x²) + eps)^-½ * g, with g the effective gain
// ((1 + w) for Gemma 3, w for Gemma 4, or none for the scaleless variant: g == nullptr).
#pragma once
#include <cstdint>

namespace gt {

// rows x n, in place allowed (y == x). Stores 1/rms per row in `rstd` when non-null.
void rmsnorm_forward(const float* x, const float* g, float* y, int64_t rows, int64_t n, float eps, float* rstd = nullptr);

// Backward with respect to x (g frozen): dx = r·(g⊙dy) − (r³/n)·x·Σ(x⊙g⊙dy). dx may alias dy.
void rmsnorm_backward(const float* x, const float* g, const float* dy, const float* rstd, float* dx, int64_t rows,
                      int64_t n, bool accumulate = false);

}  // namespace gt
