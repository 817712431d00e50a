// f32 packing of B (the weight) for the f32 kernels, shared as source by the ISA translation units
// (each compiles its own private copy: anonymous namespace). 8x8 ymm register transposes.
//   forward (trans): Bp[panel][p][j] = W[j0 + panel*NR + j][p0 + p]   (zero beyond nc)
//   backward:        Bp[panel][p][j] = W[p0 + p][j0 + panel*NR + j]   (zero beyond nc)
// D: 0 = f32, 1 = bf16, 2 = f16 (widened to f32 here).
#pragma once
#include <immintrin.h>

#include "gemmatune/kernels/x86/isa_common.h"

namespace gt::gemm::x86 {
namespace {

template <int D>
inline __m256 load8(const void* p) {
  if constexpr (D == 1) {
    const __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else if constexpr (D == 2) {
    return _mm256_cvtph_ps(_mm_loadu_si128(static_cast<const __m128i*>(p)));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(p));
  }
}

inline void transpose8(__m256& r0, __m256& r1, __m256& r2, __m256& r3, __m256& r4, __m256& r5, __m256& r6,
                       __m256& r7) {
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r0 = _mm256_permute2f128_ps(s0, s4, 0x20);
  r1 = _mm256_permute2f128_ps(s1, s5, 0x20);
  r2 = _mm256_permute2f128_ps(s2, s6, 0x20);
  r3 = _mm256_permute2f128_ps(s3, s7, 0x20);
  r4 = _mm256_permute2f128_ps(s0, s4, 0x31);
  r5 = _mm256_permute2f128_ps(s1, s5, 0x31);
  r6 = _mm256_permute2f128_ps(s2, s6, 0x31);
  r7 = _mm256_permute2f128_ps(s3, s7, 0x31);
}

template <int NR, int D>
void pack_b_trans_f32(const void* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc, float* bp) {
  const uint8_t* base = static_cast<const uint8_t*>(w);
  constexpr int64_t es = esize<D>();
  const int64_t kc8 = kc / 8 * 8;
  for (int64_t jp = 0; jp < nc; jp += NR) {
    float* dst = bp + (jp / NR) * kc * NR;
    const int64_t rows = imin(NR, nc - jp);
    for (int g = 0; g < NR / 8; ++g) {
      const int64_t rbeg = g * 8;
      const int64_t rcnt = imax(0, imin(rows - rbeg, 8));
      if (rcnt == 0) {
        for (int64_t p = 0; p < kc; ++p) _mm256_storeu_ps(dst + p * NR + rbeg, _mm256_setzero_ps());
        continue;
      }
      const uint8_t* src[8];
      for (int r = 0; r < 8; ++r) src[r] = base + ((j0 + jp + rbeg + imin(r, rcnt - 1)) * ldw + p0) * es;
      int64_t p = 0;
      for (; p < kc8; p += 8) {
        __m256 v[8];
        for (int r = 0; r < 8; ++r) v[r] = r < rcnt ? load8<D>(src[r] + p * es) : _mm256_setzero_ps();
        transpose8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        for (int q = 0; q < 8; ++q) _mm256_storeu_ps(dst + (p + q) * NR + rbeg, v[q]);
      }
      for (; p < kc; ++p)
        for (int r = 0; r < 8; ++r) dst[p * NR + rbeg + r] = r < rcnt ? load1<D>(src[r], p) : 0.0f;
    }
  }
}

template <int NR, int D>
void pack_b_plain_f32(const void* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc, float* bp) {
  const uint8_t* base = static_cast<const uint8_t*>(w);
  constexpr int64_t es = esize<D>();
  const int64_t nfull = nc / NR * NR;
  for (int64_t p = 0; p < kc; ++p) {
    const uint8_t* row = base + ((p0 + p) * ldw + j0) * es;
    int64_t jp = 0;
    for (; jp < nfull; jp += NR) {
      float* dst = bp + (jp / NR) * kc * NR + p * NR;
      for (int g = 0; g < NR; g += 8) _mm256_storeu_ps(dst + g, load8<D>(row + (jp + g) * es));
    }
    if (jp < nc) {
      float* dst = bp + (jp / NR) * kc * NR + p * NR;
      for (int64_t j = 0; j < NR; ++j) dst[j] = jp + j < nc ? load1<D>(row, jp + j) : 0.0f;
    }
  }
}

template <int NR>
void pack_b_f32(DType dt, bool trans, const void* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                void* bpv) {
  float* bp = static_cast<float*>(bpv);
  const int d = int(dt);
  if (trans) {
    if (d == 1) return pack_b_trans_f32<NR, 1>(w, ldw, j0, nc, p0, kc, bp);
    if (d == 2) return pack_b_trans_f32<NR, 2>(w, ldw, j0, nc, p0, kc, bp);
    return pack_b_trans_f32<NR, 0>(w, ldw, j0, nc, p0, kc, bp);
  }
  if (d == 1) return pack_b_plain_f32<NR, 1>(w, ldw, j0, nc, p0, kc, bp);
  if (d == 2) return pack_b_plain_f32<NR, 2>(w, ldw, j0, nc, p0, kc, bp);
  return pack_b_plain_f32<NR, 0>(w, ldw, j0, nc, p0, kc, bp);
}

// Ap[panel][p][i] = A[panel*MR + i][p] (zero beyond mc). Rows go through 8x8 transposes in groups
// of 8 (dummy rows beyond MR); each 8-wide store may write up to 7 floats past its group, which
// the next store (or the next panel, packed later, or the buffer slack) overwrites.
template <int MR>
void pack_a_f32(const float* a, int64_t lda, int64_t mc, int64_t kc, void* apv) {
  float* ap = static_cast<float*>(apv);
  const int64_t kc8 = kc / 8 * 8;
  constexpr int G = (MR + 7) / 8;
  for (int64_t ip = 0; ip < mc; ip += MR) {
    float* dst = ap + (ip / MR) * kc * MR;
    const int64_t rows = imin(MR, mc - ip);
    const float* src[MR];
    for (int i = 0; i < MR; ++i) src[i] = a + (ip + imin(i, rows - 1)) * lda;
    if (rows == MR) {
      int64_t p = 0;
      for (; p < kc8; p += 8) {
        __m256 v[G][8];
        for (int g = 0; g < G; ++g) {
          for (int r = 0; r < 8; ++r) v[g][r] = g * 8 + r < MR ? _mm256_loadu_ps(src[g * 8 + r] + p) : _mm256_setzero_ps();
          transpose8(v[g][0], v[g][1], v[g][2], v[g][3], v[g][4], v[g][5], v[g][6], v[g][7]);
        }
        for (int q = 0; q < 8; ++q)
          for (int g = 0; g < G; ++g) _mm256_storeu_ps(dst + (p + q) * MR + g * 8, v[g][q]);
      }
      for (; p < kc; ++p)
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = src[i][p];
    } else {
      for (int64_t p = 0; p < kc; ++p)
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = i < rows ? src[i][p] : 0.0f;
    }
  }
}

}  // namespace
}  // namespace gt::gemm::x86
