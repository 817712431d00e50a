// Decode GEMV over Q8_0 / Q4_0 blocks with AVX-512 (F/BW/VL/DQ; Q4_K uses the AVX2 kernel on every
// host): the same algorithm as the AVX2 kernel of kernels/linear_quant.cc (two row streams per
// thread, <= 4 activation rows per pass, per block d * Σ x q in f32) on zmm registers: one block is
// 2 zmm of 16 values, so widening and FMAs take half the instructions. Compiled with its own ISA
// flags (CMakeLists.txt); called only after the CPUID check. Everything but the entry point has
// internal linkage (tests/kernels/isa_isolation.cmake).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace gt::gemm::x86 {
namespace {

// The zero-masked forms of the widening intrinsics: GCC 12 warns (-Wmaybe-uninitialized) about
// the _mm512_undefined_* pass-through operand of the plain ones once they are inlined here.
inline __m512 widen(__m128i q) {
  return _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepi8_epi32(0xffff, q));
}

inline float reduce(__m512 v) {  // through memory: the register forms warn as above
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  float a = 0.0f, b = 0.0f;
  for (int i = 0; i < 16; i += 2) a += t[i], b += t[i + 1];
  return a + b;
}

constexpr int64_t kPrefetch = 1024;

inline float scale_of(const uint8_t* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(int(h))));
}

struct Q8 {
  static constexpr size_t kBytes = 34;
  static inline void load(const uint8_t* blk, __m512& w0, __m512& w1) {
    w0 = widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    w1 = widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18)));
  }
};

struct Q4 {
  static constexpr size_t kBytes = 18;
  static inline void load(const uint8_t* blk, __m512& w0, __m512& w1) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i m4 = _mm_set1_epi8(0x0f), b8 = _mm_set1_epi8(8);
    w0 = widen(_mm_sub_epi8(_mm_and_si128(raw, m4), b8));
    w1 = widen(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), b8));
  }
};

template <class B, int NR, int MB>
inline void block_rows(const uint8_t* const* rows, int64_t nb, const float* x, int64_t ldx, float* const* ys,
                       int64_t ldy, bool accumulate) {
  __m512 acc[NR][MB];
  for (int r = 0; r < NR; ++r)
    for (int b = 0; b < MB; ++b) acc[r][b] = _mm512_setzero_ps();
  for (int64_t blk = 0; blk < nb; ++blk) {
    const float* xb = x + blk * 32;
#pragma GCC unroll 2
    for (int r = 0; r < NR; ++r) {
      const uint8_t* p = rows[r] + size_t(blk) * B::kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch, _MM_HINT_T0);
      __m512 w0, w1;
      B::load(p, w0, w1);
      const __m512 d = _mm512_set1_ps(scale_of(p));
#pragma GCC unroll 4
      for (int b = 0; b < MB; ++b) {
        const float* xp = xb + b * ldx;
        __m512 s = _mm512_mul_ps(w0, _mm512_loadu_ps(xp));
        s = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xp + 16), s);
        acc[r][b] = _mm512_fmadd_ps(s, d, acc[r][b]);
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int b = 0; b < MB; ++b) {
      const float s = reduce(acc[r][b]);
      float* yo = ys[r] + b * ldy;
      *yo = accumulate ? *yo + s : s;
    }
}

template <class B, int NR>
inline void all_m(const uint8_t* const* rows, int64_t nb, const float* x, int64_t m, int64_t ldx, float* const* ys,
                  int64_t ldy, bool accumulate) {
  for (int64_t i = 0; i < m;) {
    float* yi[NR];
    for (int q = 0; q < NR; ++q) yi[q] = ys[q] + i * ldy;
    const float* xi = x + i * ldx;
    const int64_t left = m - i;
    if (left >= 4) {
      block_rows<B, NR, 4>(rows, nb, xi, ldx, yi, ldy, accumulate);
      i += 4;
    } else if (left == 3) {
      block_rows<B, NR, 3>(rows, nb, xi, ldx, yi, ldy, accumulate);
      i += 3;
    } else if (left == 2) {
      block_rows<B, NR, 2>(rows, nb, xi, ldx, yi, ldy, accumulate);
      i += 2;
    } else {
      block_rows<B, NR, 1>(rows, nb, xi, ldx, yi, ldy, accumulate);
      i += 1;
    }
  }
}

template <class B>
void rows_range(const uint8_t* w, size_t rb, int64_t k, int64_t j0, int64_t j1, const float* x, int64_t m,
                int64_t ldx, float* y, int64_t ldy, bool accumulate) {
  const int64_t nb = k / 32, half = (j1 - j0) / 2;
  for (int64_t j = j0; j < j0 + half; ++j) {
    const uint8_t* rows[2] = {w + size_t(j) * rb, w + size_t(j + half) * rb};
    float* ys[2] = {y + j, y + j + half};
    all_m<B, 2>(rows, nb, x, m, ldx, ys, ldy, accumulate);
  }
  for (int64_t j = j0 + 2 * half; j < j1; ++j) {
    const uint8_t* rows[1] = {w + size_t(j) * rb};
    float* ys[1] = {y + j};
    all_m<B, 1>(rows, nb, x, m, ldx, ys, ldy, accumulate);
  }
}

}  // namespace

// format: 1 = Q8_0, 2 = Q4_0 (gt::WFormat). Rows [j0, j1) of w (row stride row_bytes). Q4_K has no
// AVX-512 variant: linear_quant.cc runs its AVX2 kernel on every host and never calls this for it.
void gemv_q_avx512(int format, const uint8_t* w, size_t row_bytes, int64_t k, int64_t j0, int64_t j1, const float* x,
                   int64_t m, int64_t ldx, float* y, int64_t ldy, bool accumulate) {
  if (format == 1)
    rows_range<Q8>(w, row_bytes, k, j0, j1, x, m, ldx, y, ldy, accumulate);
  else if (format == 2)
    rows_range<Q4>(w, row_bytes, k, j0, j1, x, m, ldx, y, ldy, accumulate);
  else
    std::abort();  // unreachable (see above)
}

}  // namespace gt::gemm::x86
