// Linear layers over frozen weights: y[M,N] = x[M,K] · Wᵀ with W stored [N,K] (nn.Linear layout)
// in its checkpoint dtype (F32, BF16 or F16). Weights are never expanded to f32 in memory as a
// whole; activations and accumulation are f32.
//
// Paths (chosen by `linear` from m). The numbers below are one host's (a 2-core Zen 3 VM, AVX2
// only; bench/bench_linear.cc); other hosts differ (docs/PERFORMANCE.md, ../shared/DESIGN.md):
//  * decode, m <= kGemvMaxM: a streaming GEMV (linear_gemv.cc) that reads the mapped weight once
//    (two sequential row streams per thread), converts bf16/f16 -> f32 in registers and FMAs into
//    f32 accumulators, with software prefetch; rows split statically across the OpenMP threads.
//    m=1 runs at ~100% of the measured read bandwidth.
//  * prefill/training, larger m: the blocked GEMM of kernels/gemm.h (linear_gemm.cc), with the
//    kernel chosen once per process for this CPU: avx2 (6x16 ymm), avx512 (12x32 zmm), or
//    avx512bf16 (vdpbf16ps, BF16 weights only: activations rounded to bf16, f32 accumulation).
//    The packing converts one cache-resident weight panel at a time, so the whole weight is never
//    materialised in f32 and no per-weight state is kept.
//  * linear_backward_input uses the same GEMM with the weight read untransposed.
// No weight is pre-packed: packing (convert + transpose) per call costs ~3% of the GEMM time at
// m=512 (a whole m=6 call, packing included, takes 3.9 ms vs 100 ms at m=512 for 6912x1152), and
// not pre-packing keeps one copy of each weight in memory (the mapping).
#pragma once
#include <cstdint>
#include <string>

#include "gemmatune/tensor/dtype.h"

namespace gt {
namespace gemm {
enum class Isa : int;
}

struct Weight2D {
  std::string name;
  DType dtype = DType::F32;
  const void* data = nullptr;  // row-major [n, k]
  int64_t n = 0;               // output features (rows)
  int64_t k = 0;               // input features (columns)

  bool empty() const { return data == nullptr; }
  size_t bytes() const { return size_t(n) * size_t(k) * dtype_size(dtype); }
};

// y = x Wᵀ, or y += x Wᵀ when `accumulate`. x is [m, w.k] with row stride `ldx` (0 = w.k),
// y is [m, w.n] with row stride `ldy` (0 = w.n). Threads: the caller's OpenMP setting.
void linear(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate = false,
            int64_t ldx = 0, int64_t ldy = 0);

// dx[m,k] (+)= dy[m,n] · W : the activation gradient through a frozen weight (backward of linear).
void linear_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate = false);

// ---- Individual paths, for tests and benchmarks (the model calls the two functions above). ----
namespace linear_detail {

// Largest m that `linear` sends to the GEMV path. Measured (1 thread, 6912x1152 bf16 streamed
// from DRAM, CPU-time GFLOP/s): GEMV ~56 flat for m >= 4; GEMM 19 / 30 / 47 / 59 at m = 4 / 8 /
// 16 / 24 (its per-call weight packing is amortised over m rows). They cross at m ~ 24.
inline constexpr int64_t kGemvMaxM = 20;

enum class Path {
  Auto,       // what linear()/linear_backward_input() use
  Gemv,       // streaming GEMV (forward only; any m, but meant for small m)
  Gemm,       // own blocked GEMM, kernel per kernels/gemm.h's selection
  OneDnn,     // oneDNN f32 matmul on weight panels converted to f32 per call (comparison path)
  Reference,  // naive scalar loops
};
const char* path_name(Path p);

void linear_path(Path p, const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                 int64_t ldy);
void linear_backward_input_path(Path p, const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate);

// Building blocks (threads: omp_get_max_threads(), called from outside a parallel region).
void gemv_forward(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy);
// C[m, nc] (+)= A[m, kr] · B where B[p, j] = W[j, p] (transposed = forward) or W[p, j] (backward).
void gemm_forward(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy);
void gemm_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate);
// The same GEMMs with a given kernel (must be supported by this CPU; see kernels/gemm.h).
void gemm_forward_isa(gemm::Isa isa, const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate,
                      int64_t ldx, int64_t ldy);
void gemm_backward_input_isa(gemm::Isa isa, const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate);
void onednn_forward(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy);
void onednn_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate);

}  // namespace linear_detail
}  // namespace gt
