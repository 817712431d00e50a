// AVX512_BF16 GEMM kernel (this file only is compiled with -mavx512bf16 and AVX-512 F/BW/VL/DQ):
// vdpbf16ps, i.e. C += Σ over pairs (a[2q]·b[2q] + a[2q+1]·b[2q+1]) with bf16 inputs and f32
// accumulation. Used for BF16 weights only (gemm.cc sends other dtypes to the avx512 f32 kernel):
// the weight stays bf16 (no widening), the f32 activations are rounded to bf16 (round to nearest
// even, vcvtne2ps2bf16) while packing A. 12x32 micro-kernel, 24 zmm accumulators; one k step
// consumes a pair of reduction elements.
//
//   Ap[panel][q][i]  = (bf16(A[i][p0+2q]), bf16(A[i][p0+2q+1]))            (32 bits, zero beyond)
//   forward:  Bp[panel][q][j] = (W[j][p0+2q], W[j][p0+2q+1])             (a 32-bit transpose of W)
//   backward: Bp[panel][q][j] = (W[p0+2q][j], W[p0+2q+1][j])             (two rows interleaved)
// Blocking (tuned on Zen 4 at m = 512, 1 thread, CPU-time rates, Gemma-1B shapes): KC = 768
// reduction elements (384 pairs), MC = 96, NC = 2048; the A micro-panel (12 x 384 pairs, 18 KiB)
// stays in L1 while 32-wide B micro-panels stream from L2/L3. KC 256..1024, MC 72..144 and
// NC 512..2048 were within ~5% of each other; NC = 512 was the slowest (A repacked more often).
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
constexpr int64_t KC = 768;  // elements (multiple of 8)
constexpr int64_t MC = 96;
constexpr int64_t NC = 2048;
#else
constexpr int64_t KC = GT_TUNE_KC;
constexpr int64_t MC = GT_TUNE_MC;
constexpr int64_t NC = GT_TUNE_NC;
#endif

inline uint32_t pair_bits(float lo, float hi) {
  return uint32_t(f32_to_bf16_bits(lo)) | (uint32_t(f32_to_bf16_bits(hi)) << 16);
}

// A: rows of f32 -> bf16 pairs, pair-major per panel. Full panels: per 16 reduction elements, each
// row's 8 pairs come from one vcvtne2ps2bf16, and 8x8 transposes of 32-bit pairs put them in
// place (rows in groups of 8, dummies beyond MR); each 8-wide store may write up to 4 pairs past
// its group, which the next store (or the tail, the next panel, or the buffer slack) overwrites.
void pack_a(const float* a, int64_t lda, int64_t mc, int64_t kc, void* apv) {
  uint32_t* ap = static_cast<uint32_t*>(apv);
  const int64_t kq = (kc + 1) / 2;
  const int64_t kc16 = kc / 16 * 16;
  constexpr int G = (MR + 7) / 8;
  for (int64_t ip = 0; ip < mc; ip += MR) {
    uint32_t* dst = ap + (ip / MR) * kq * MR;
    const int64_t rows = imin(MR, mc - ip);
    int64_t p = 0;
    if (rows == MR) {
      float* df = reinterpret_cast<float*>(dst);
      for (; p < kc16; p += 16) {
        __m256 v[G][8];
        for (int g = 0; g < G; ++g) {
          for (int r = 0; r < 8; ++r) {
            const int i = g * 8 + r;
            if (i < MR) {
              const float* src = a + (ip + i) * lda + p;
              v[g][r] = (__m256)_mm256_cvtne2ps_pbh(_mm256_loadu_ps(src + 8), _mm256_loadu_ps(src));
            } else {
              v[g][r] = _mm256_setzero_ps();
            }
          }
          transpose8(v[g][0], v[g][1], v[g][2], v[g][3], v[g][4], v[g][5], v[g][6], v[g][7]);
        }
        for (int e = 0; e < 8; ++e)
          for (int g = 0; g < G; ++g) _mm256_storeu_ps(df + (p / 2 + e) * MR + g * 8, v[g][e]);
      }
    }
    for (int i = 0; i < MR; ++i) {
      const float* src = a + (ip + imin(i, rows - 1)) * lda;
      for (int64_t pp = p; pp < kc; pp += 2)
        dst[(pp / 2) * MR + i] = i < rows ? pair_bits(src[pp], pp + 1 < kc ? src[pp + 1] : 0.0f) : 0u;
    }
  }
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Forward: 8x8 transposes of 32-bit pairs (as floats: pure data movement).
void pack_b_trans(const uint16_t* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc, uint32_t* bp) {
  const int64_t kq = (kc + 1) / 2;
  const int64_t kq8 = (kc / 16) * 8;  // full blocks of 8 pairs inside kc
  for (int64_t jp = 0; jp < nc; jp += NR) {
    uint32_t* dst = bp + (jp / NR) * kq * NR;
    const int64_t rows = imin(NR, nc - jp);
    for (int g = 0; g < NR / 8; ++g) {
      const int64_t rbeg = g * 8;
      const int64_t rcnt = imax(0, imin(rows - rbeg, 8));
      float* df = reinterpret_cast<float*>(dst);
      if (rcnt == 0) {
        for (int64_t q = 0; q < kq; ++q) _mm256_storeu_ps(df + q * NR + rbeg, _mm256_setzero_ps());
        continue;
      }
      const uint8_t* src[8];
      for (int r = 0; r < 8; ++r)
        src[r] = reinterpret_cast<const uint8_t*>(w + (j0 + jp + rbeg + imin(r, rcnt - 1)) * ldw + p0);
      int64_t q = 0;
      for (; q < kq8; q += 8) {
        __m256 v[8];
        for (int r = 0; r < 8; ++r) v[r] = r < rcnt ? _mm256_loadu_ps(reinterpret_cast<const float*>(src[r] + q * 4)) : _mm256_setzero_ps();
        transpose8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        for (int e = 0; e < 8; ++e) _mm256_storeu_ps(df + (q + e) * NR + rbeg, v[e]);
      }
      for (; q < kq; ++q)
        for (int r = 0; r < 8; ++r) {
          uint32_t v = 0;
          if (r < rcnt) {
            const uint16_t* s = reinterpret_cast<const uint16_t*>(src[r]);
            v = uint32_t(s[2 * q]) | (2 * q + 1 < kc ? uint32_t(s[2 * q + 1]) << 16 : 0u);
          }
          dst[q * NR + rbeg + r] = v;
        }
    }
  }
}

// Backward: rows p0+2q and p0+2q+1 interleaved element by element (16 columns per zmm).
void pack_b_plain(const uint16_t* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc, uint32_t* bp) {
  const int64_t kq = (kc + 1) / 2;
  const int64_t n16 = nc / 16 * 16;
  for (int64_t q = 0; q < kq; ++q) {
    const uint16_t* r0 = w + (p0 + 2 * q) * ldw + j0;
    const bool has1 = 2 * q + 1 < kc;
    const uint16_t* r1 = has1 ? r0 + ldw : r0;
    int64_t j = 0;
    for (; j < n16; j += 16) {
      uint32_t* dst = bp + (j / NR) * kq * NR + q * NR + j % NR;
      // (maskz forms: the plain ones trip GCC 12's -Wmaybe-uninitialized inside the intrinsics)
      const __mmask16 all = 0xffff;
      const __m512i lo = _mm512_maskz_cvtepu16_epi32(all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + j)));
      const __m512i hi = _mm512_maskz_cvtepu16_epi32(has1 ? all : 0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1 + j)));
      _mm512_storeu_si512(dst, _mm512_or_si512(lo, _mm512_maskz_slli_epi32(all, hi, 16)));
    }
    for (; j < (nc + NR - 1) / NR * NR; ++j) {
      uint32_t* dst = bp + (j / NR) * kq * NR + q * NR + j % NR;
      *dst = j < nc ? uint32_t(r0[j]) | (has1 ? uint32_t(r1[j]) << 16 : 0u) : 0u;
    }
  }
}

void pack_b(DType dt, bool trans, const void* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
            void* bp) {
  if (dt != DType::BF16) __builtin_trap();  // gemm.cc routes other dtypes to the f32 kernel
  const uint16_t* wb = static_cast<const uint16_t*>(w);
  if (trans) return pack_b_trans(wb, ldw, j0, nc, p0, kc, static_cast<uint32_t*>(bp));
  return pack_b_plain(wb, ldw, j0, nc, p0, kc, static_cast<uint32_t*>(bp));
}

// C[MR, NR] (+)= Ap · Bp over kq pair steps; NV = NR / 16 zmm vectors per row. Edge tiles
// (mr < MR or nr < NR) store through masks.
inline void ukernel(int64_t kq, const uint32_t* __restrict ap, const uint32_t* __restrict bp, float* c, int64_t ldc,
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
  for (int64_t q = 0; q < kq; ++q) {
    __m512bh b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_load_si512(bp + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(ap[i]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
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
  const uint32_t* ap = static_cast<const uint32_t*>(apv);
  const uint32_t* bp = static_cast<const uint32_t*>(bpv);
  const int64_t kq = (kc + 1) / 2;
  // A micro-panel stays in L1 while the B micro-panels stream from L2 (see gemm_avx512.cc).
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = int(imin(MR, mc - ir));
    const uint32_t* app = ap + (ir / MR) * kq * MR;
    for (int64_t jr = 0; jr < nc; jr += NR) {
      const int nr = int(imin(NR, nc - jr));
      ukernel(kq, app, bp + (jr / NR) * kq * NR, c + ir * ldc + jr, ldc, add, mr, nr);
    }
  }
}

const GemmKernel kKernel = {"avx512bf16", MR, NR, 2, 2, KC, MC, NC, pack_a, pack_b, macro};

}  // namespace

const GemmKernel* kernel_avx512bf16() { return &kKernel; }

void peak_loop_zmm_dpbf16(long iters) {
  asm volatile(
      "vxorps %%xmm0,%%xmm0,%%xmm0\n\tvxorps %%xmm1,%%xmm1,%%xmm1\n\tvxorps %%xmm2,%%xmm2,%%xmm2\n\t"
      "vxorps %%xmm3,%%xmm3,%%xmm3\n\tvxorps %%xmm4,%%xmm4,%%xmm4\n\tvxorps %%xmm5,%%xmm5,%%xmm5\n\t"
      "vxorps %%xmm6,%%xmm6,%%xmm6\n\tvxorps %%xmm7,%%xmm7,%%xmm7\n\tvxorps %%xmm8,%%xmm8,%%xmm8\n\t"
      "vxorps %%xmm9,%%xmm9,%%xmm9\n\tvxorps %%xmm10,%%xmm10,%%xmm10\n\tvxorps %%xmm11,%%xmm11,%%xmm11\n\t"
      "vxorps %%xmm12,%%xmm12,%%xmm12\n\tvxorps %%xmm13,%%xmm13,%%xmm13\n\t"
      "1:\n\t"
      "vdpbf16ps %%zmm12,%%zmm13,%%zmm0\n\tvdpbf16ps %%zmm12,%%zmm13,%%zmm1\n\t"
      "vdpbf16ps %%zmm12,%%zmm13,%%zmm2\n\tvdpbf16ps %%zmm12,%%zmm13,%%zmm3\n\t"
      "vdpbf16ps %%zmm12,%%zmm13,%%zmm4\n\tvdpbf16ps %%zmm12,%%zmm13,%%zmm5\n\t"
      "vdpbf16ps %%zmm12,%%zmm13,%%zmm6\n\tvdpbf16ps %%zmm12,%%zmm13,%%zmm7\n\t"
      "vdpbf16ps %%zmm12,%%zmm13,%%zmm8\n\tvdpbf16ps %%zmm12,%%zmm13,%%zmm9\n\t"
      "vdpbf16ps %%zmm12,%%zmm13,%%zmm10\n\tvdpbf16ps %%zmm12,%%zmm13,%%zmm11\n\t"
      "dec %0\n\tjnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "cc");
}

}  // namespace gt::gemm::x86
