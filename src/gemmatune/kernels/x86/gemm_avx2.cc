// AVX2 + FMA GEMM kernel (any x86-64-v3 CPU): 6x16 micro-kernel with 12 ymm accumulators
// (2 loads of B, 6 broadcasts of A, 12 FMAs per k step). Packing converts bf16/f16 weights to f32
// panels. Blocking (Zen 3: 32 KiB L1D, 512 KiB L2): B micro-panel KC x 16 f32 = 16 KiB (L1), A
// block MC x KC = 120 KiB (L2), B panel KC x NC = 1 MiB. Measured at m=512 (1 thread): MC 72..240,
// KC 128..384, NC 256..2048 are all within noise (+-3%) of each other. KC must stay 256: the f32
// kernels share the accumulation order (see gemm.h).
//
//   forward packing:  Bp[panel][p][j] = W[j0 + panel*16 + j][p0 + p]  (8x8 register transposes)
//   backward packing: Bp[panel][p][j] = W[p0 + p][j0 + panel*16 + j]  (straight copies)
//   Ap[panel][p][i] = A[panel*6 + i][p]
#include <immintrin.h>

#include "gemmatune/kernels/gemm.h"
#include "gemmatune/kernels/x86/pack_f32.h"

namespace gt::gemm::x86 {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;
constexpr int64_t KC = 256;
constexpr int64_t MC = 120;
constexpr int64_t NC = 1024;

inline void ukernel(int64_t kc, const float* __restrict ap, const float* __restrict bp, float* c, int64_t ldc,
                    bool add, int mr, int nr) {
  if (add)
    for (int i = 0; i < MR; ++i) {  // C rows are used at the end: start their cache misses now
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 15), _MM_HINT_T0);
    }
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(ap + 0);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(ap + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(ap + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(ap + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(ap + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(ap + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
    ap += MR;
    bp += NR;
  }
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == MR && nr == NR) {
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
      if (add) {
        _mm256_storeu_ps(ci, _mm256_add_ps(_mm256_loadu_ps(ci), acc[i][0]));
        _mm256_storeu_ps(ci + 8, _mm256_add_ps(_mm256_loadu_ps(ci + 8), acc[i][1]));
      } else {
        _mm256_storeu_ps(ci, acc[i][0]);
        _mm256_storeu_ps(ci + 8, acc[i][1]);
      }
    }
  } else {
    alignas(32) float t[MR][NR];
    for (int i = 0; i < MR; ++i) {
      _mm256_store_ps(t[i], acc[i][0]);
      _mm256_store_ps(t[i] + 8, acc[i][1]);
    }
    for (int i = 0; i < mr; ++i)
      for (int j = 0; j < nr; ++j) c[i * ldc + j] = add ? c[i * ldc + j] + t[i][j] : t[i][j];
  }
}

void macro(int64_t mc, int64_t nc, int64_t kc, const void* apv, const void* bpv, float* c, int64_t ldc, bool add) {
  const float* ap = static_cast<const float*>(apv);
  const float* bp = static_cast<const float*>(bpv);
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int nr = int(imin(NR, nc - jr));
    const float* bpp = bp + (jr / NR) * kc * NR;
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int mr = int(imin(MR, mc - ir));
      ukernel(kc, ap + (ir / MR) * kc * MR, bpp, c + ir * ldc + jr, ldc, add, mr, nr);
    }
  }
}

const GemmKernel kKernel = {"avx2", MR, NR, 1, 4, KC, MC, NC, pack_a_f32<MR>, pack_b_f32<NR>, macro};

}  // namespace

const GemmKernel* kernel_avx2() { return &kKernel; }

}  // namespace gt::gemm::x86
