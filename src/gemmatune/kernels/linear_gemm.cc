// Prefill/training path of `linear`: the blocked GEMM of kernels/gemm.h with the kernel the
// process selected for the weight's dtype (avx2 / avx512 f32, or avx512bf16 for BF16 weights
// where that is the fast path and precision allows). The packing converts the stored weight one
// cache-resident panel at a time; it is never materialised whole in f32 and no per-weight state
// is kept.
//   forward:        C = x · Wᵀ   (W is [n, k]: B[p, j] = W[j, p])
//   backward input: C = dy · W   (B[p, j] = W[p, j])
#include "gemmatune/kernels/gemm.h"
#include "gemmatune/kernels/linear.h"

namespace gt::linear_detail {

void gemm_forward(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy) {
  if (w.quantized()) return gemm_forward_quant(x, m, w, y, accumulate, ldx, ldy);
  gemm_forward_isa(gemm::kernel_for(w.dtype), x, m, w, y, accumulate, ldx, ldy);
}

void gemm_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
  if (w.quantized()) return gemm_backward_input_quant(dy, m, w, dx, accumulate);
  gemm_backward_input_isa(gemm::kernel_for(w.dtype), dy, m, w, dx, accumulate);
}

void gemm_forward_isa(gemm::Isa isa, const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate,
                      int64_t ldx, int64_t ldy) {
  if (w.quantized()) return gemm_forward_quant(x, m, w, y, accumulate, ldx, ldy);
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  gemm::gemm(isa, x, ldx, m, w.dtype, w.data, w.k, /*trans=*/true, w.n, w.k, y, ldy, accumulate);
}

void gemm_backward_input_isa(gemm::Isa isa, const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
  if (w.quantized()) return gemm_backward_input_quant(dy, m, w, dx, accumulate);
  gemm::gemm(isa, dy, w.n, m, w.dtype, w.data, w.k, /*trans=*/false, w.k, w.n, dx, w.k, accumulate);
}

}  // namespace gt::linear_detail
