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

// Storage of a frozen weight: dense (dtype F32/BF16/F16) or ggml blocks packed per row (dtype U8;
// each row is k/32 blocks, k/256 for Q4_K; docs/QUANTIZATION.md), exactly ggml's block layouts:
//   Q8_0: 34-byte blocks: f16 scale d, 32 x int8 q;  w = d * q
//   Q4_0: 18-byte blocks: f16 scale d, 16 bytes;      w = d * (nibble - 8); byte j holds value j
//         (low nibble) and value j + 16 (high nibble).
//   Q4_K: 144-byte super-blocks of 256 values (8 sub-blocks of 32): f16 d, f16 dmin, 12 bytes of
//         6-bit sub-block scales sc and mins m (quant/blocks.h), 128 bytes of nibbles;
//         w = (d * sc) * q - (dmin * m), sub-blocks 2p / 2p+1 in the low / high nibbles of bytes
//         32p .. 32p+31.
enum class WFormat : uint8_t { Dense = 0, Q8_0 = 1, Q4_0 = 2, Q4_K = 3 };
const char* wformat_name(WFormat f);  // "dense", "q8_0", "q4_0", "q4_k"
// Values per block of f (32; 256 for Q4_K; 1 for dense): k must be a multiple of it.
int64_t wformat_block_values(WFormat f);
// Bytes of one row of k values in format f (dense: k * dtype_size(dt)); k a multiple of the block.
size_t wformat_row_bytes(WFormat f, DType dt, int64_t k);

struct Weight2D {
  std::string name;
  DType dtype = DType::F32;
  const void* data = nullptr;  // row-major [n, k] (dense) or n rows of packed blocks
  int64_t n = 0;               // output features (rows)
  int64_t k = 0;               // input features (columns)
  WFormat format = WFormat::Dense;

  bool empty() const { return data == nullptr; }
  bool quantized() const { return format != WFormat::Dense; }
  size_t row_bytes() const { return wformat_row_bytes(format, dtype, k); }
  size_t bytes() const { return size_t(n) * row_bytes(); }
};

// Rows [r0, r0 + nr) of w as f32 into out[nr, w.k] (dequantized for block formats: d * q in f32,
// exactly ggml's dequantization).
void weight_rows_to_f32(const Weight2D& w, int64_t r0, int64_t nr, float* out);

// Quantized weights (Q8_0/Q4_0/Q4_K) compute what f32 math computes on the dequantized weight, up
// to the f32 summation order: decode GEMV over the blocks (kernels/linear_quant.cc; AVX-512
// variant for Q8_0/Q4_0 in kernels/x86/gemv_q_avx512.cc), GEMM and backward-input on row panels
// dequantized to f32 (a bounded scratch, never the whole weight) fed to the f32 GEMM.
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
// Quantized weights (kernels/linear_quant.cc).
// isa: -1 = the CPU's best (AVX-512 when present; Q4_K always AVX2), 0 = AVX2, 1 = AVX-512 (fails
// if absent, or for Q4_K, which has no AVX-512 variant).
void gemv_forward_quant(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                        int64_t ldy, int isa = -1);
bool gemv_quant_avx512_supported();
// The decode GEMV with the activations quantized to int8 per block of 32 (llama.cpp's integer dot
// products; kernels/linear_quant_i8.cc): Q8_0 / Q4_0 weights. gemv_forward_quant with isa = -1
// takes it when gemm::selection().precision is Auto (the default; `--precision f32` keeps the exact
// f32 GEMV). Each output differs from exact mode by at most sum_b (dx_b / 2) * sum |w| of block b
// (plus f32 rounding), dx_b the activation block's scale.
void gemv_forward_quant_i8(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                           int64_t ldy);
// x[k] (k % 32 == 0) -> q[k] int8 and d[k / 32]: per block dx = max|x| / 127, q = round(x / dx)
// (to nearest, ties to even), so x ~ dx * q.
void quantize_activations_i8(const float* x, int64_t k, int8_t* q, float* d);
void gemm_forward_quant(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                        int64_t ldy);
void gemm_backward_input_quant(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate);

}  // namespace linear_detail
}  // namespace gt
