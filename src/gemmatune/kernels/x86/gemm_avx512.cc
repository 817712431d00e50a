// AVX-512 f32 GEMM kernel (AVX-512 F/BW/VL/DQ; this file only is compiled with those flags):
// 12x32 micro-kernel with 24 zmm accumulators (2 loads of B, 12 broadcasts of A, 24 FMAs per k
// step). bf16/f16 weights are widened to f32 while packing B (as in the avx2 kernel). KC = 256
// like the avx2 kernel, so both accumulate every output in the same order: bit-identical results.
// Blocking: A micro-panel 12 x KC f32 = 12 KiB stays in L1 while the 32-wide B micro-panels
// (32 KiB each) stream from L2/L3; A block MC x KC = 96 KiB, B panel KC x NC = 2 MiB. Tuned on
// Zen 4 at m = 512 with the bf16 kernel's sweep (MC 72..144, NC 512..2048 within ~5%).
#include <immintrin.h>

#include "gemmatune/kernels/gemm.h"
#include "gemmatune/kernels/x86/pack_f32.h"

namespace gt::gemm::x86 {
namespace {

#ifndef GT_TUNE_MR  // overridable only to try other blockings by hand
constexpr int MR = 12;
constexpr int NR = 32;
#else
constexpr int MR = GT_TUNE_MR;
constexpr int NR = GT_TUNE_NR;
#endif
#ifndef GT_TUNE_KC
constexpr int64_t KC = 256;  // = the avx2 kernel's (bit-identical results)
constexpr int64_t MC = 96;
constexpr int64_t NC = 2048;
#else
constexpr int64_t KC = GT_TUNE_KC;
constexpr int64_t MC = GT_TUNE_MC;
constexpr int64_t NC = GT_TUNE_NC;
#endif

// C[MR, NR] (+)= Ap · Bp over kc steps; NV = NR / 16 zmm vectors per row. Edge tiles (mr < MR
// or nr < NR) store through masks.
inline void ukernel(int64_t kc, const float* __restrict ap, const float* __restrict bp, float* c, int64_t ldc,
                    bool add, int mr, int nr) {
  constexpr int NV = NR / 16;
  if (add)
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * v), _MM_HINT_T0);
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = _mm512_load_ps(bp + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(ap[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
    ap += MR;
    bp += NR;
  }
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) {
    const int cnt = nr - 16 * v;
    mask[v] = cnt >= 16 ? __mmask16(0xffff) : cnt > 0 ? __mmask16((1u << cnt) - 1u) : __mmask16(0);
  }
  if (mr == MR && nr == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* ci = c + i * ldc + 16 * v;
        _mm512_storeu_ps(ci, add ? _mm512_add_ps(_mm512_loadu_ps(ci), acc[i][v]) : acc[i][v]);
      }
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      if (i >= mr) break;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* ci = c + i * ldc + 16 * v;
        _mm512_mask_storeu_ps(ci, mask[v], add ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], ci), acc[i][v]) : acc[i][v]);
      }
    }
  }
}

void macro(int64_t mc, int64_t nc, int64_t kc, const void* apv, const void* bpv, float* c, int64_t ldc, bool add) {
  const float* ap = static_cast<const float*>(apv);
  const float* bp = static_cast<const float*>(bpv);
  // A micro-panel (12 x KC, 12 KiB) stays in L1 while the B micro-panels stream from L2: a
  // 32-wide B micro-panel of KC = 256 is 32 KiB, too big to share L1 with A.
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = int(imin(MR, mc - ir));
    const float* app = ap + (ir / MR) * kc * MR;
    for (int64_t jr = 0; jr < nc; jr += NR) {
      const int nr = int(imin(NR, nc - jr));
      ukernel(kc, app, bp + (jr / NR) * kc * NR, c + ir * ldc + jr, ldc, add, mr, nr);
    }
  }
}

const GemmKernel kKernel = {"avx512", MR, NR, 1, 4, KC, MC, NC, pack_a_f32<MR>, pack_b_f32<NR>, macro};

}  // namespace

const GemmKernel* kernel_avx512() { return &kKernel; }

void peak_loop_zmm_fma(long iters) {
  asm volatile(
      "vxorps %%xmm0,%%xmm0,%%xmm0\n\tvxorps %%xmm1,%%xmm1,%%xmm1\n\tvxorps %%xmm2,%%xmm2,%%xmm2\n\t"
      "vxorps %%xmm3,%%xmm3,%%xmm3\n\tvxorps %%xmm4,%%xmm4,%%xmm4\n\tvxorps %%xmm5,%%xmm5,%%xmm5\n\t"
      "vxorps %%xmm6,%%xmm6,%%xmm6\n\tvxorps %%xmm7,%%xmm7,%%xmm7\n\tvxorps %%xmm8,%%xmm8,%%xmm8\n\t"
      "vxorps %%xmm9,%%xmm9,%%xmm9\n\tvxorps %%xmm10,%%xmm10,%%xmm10\n\tvxorps %%xmm11,%%xmm11,%%xmm11\n\t"
      "vxorps %%xmm12,%%xmm12,%%xmm12\n\tvxorps %%xmm13,%%xmm13,%%xmm13\n\t"
      "1:\n\t"
      "vfmadd231ps %%zmm12,%%zmm13,%%zmm0\n\tvfmadd231ps %%zmm12,%%zmm13,%%zmm1\n\t"
      "vfmadd231ps %%zmm12,%%zmm13,%%zmm2\n\tvfmadd231ps %%zmm12,%%zmm13,%%zmm3\n\t"
      "vfmadd231ps %%zmm12,%%zmm13,%%zmm4\n\tvfmadd231ps %%zmm12,%%zmm13,%%zmm5\n\t"
      "vfmadd231ps %%zmm12,%%zmm13,%%zmm6\n\tvfmadd231ps %%zmm12,%%zmm13,%%zmm7\n\t"
      "vfmadd231ps %%zmm12,%%zmm13,%%zmm8\n\tvfmadd231ps %%zmm12,%%zmm13,%%zmm9\n\t"
      "vfmadd231ps %%zmm12,%%zmm13,%%zmm10\n\tvfmadd231ps %%zmm12,%%zmm13,%%zmm11\n\t"
      "dec %0\n\tjnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "cc");
}

}  // namespace gt::gemm::x86
