// Decode path: y[m, n] (+)= x[m, k] · Wᵀ for small m, streaming the (memory-mapped) weight once.
//
// * The weight is read in its stored dtype straight from the mapping: no packed copy, no f32
//   expansion. bf16 is widened in registers with the even/odd trick: a 32-byte load holds 16 bf16
//   as 8 32-bit words; `vpslld 16` yields the even elements as f32 and `vpand 0xffff0000` the odd
//   ones. The activations are permuted once per call into the same order (per 16 elements: 8
//   even, then 8 odd), so 16 weights cost 1 load + 2 ALU ops instead of 2 vpmovzxwd + 2 shifts.
//   f16 uses vcvtph2ps (natural order), f32 plain loads.
// * Memory access (measured on this Zen 3, 1 thread, 512 MiB bf16 weight, same buffer as the
//   read-bandwidth probe, CPU-time rates): each thread cuts its contiguous row range in two halves
//   and walks them side by side, one row of each at a time: two sequential streams in different
//   pages. That reads at 100-101% of the probe; one row at a time (one stream) 88%, because it
//   needs one activation load per FMA and this core sustains only ~1 256-bit load per cycle;
//   the classic GEMV blocking of 2-8 *adjacent* rows in lockstep only 56-70%, because several
//   streams interleaved inside the same 4 KiB pages defeat the L2 stream prefetcher.
// * Software prefetch one cache line per line consumed, kPrefetch (1 KiB) ahead, into L1:
//   without it the paired kernel drops to ~60% of the probe; 2 KiB or more, L2 hints, or a second
//   (far) prefetch stream were slower.
// * Up to 4 activation rows share each converted weight vector. For m > 4 the same rows are
//   re-read from L1 for each further group of <= 4 activation rows (m <= kGemvMaxM here).
// * Rows are split statically across the OpenMP threads (contiguous ranges).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "gemmatune/kernels/gemv_common.h"
#include "gemmatune/kernels/linear.h"
#include "gemmatune/util/error.h"

namespace gt::linear_detail {

namespace {

constexpr int64_t kPrefetch = 1024;

struct LoadBF16 {
  using T = uint16_t;
  static constexpr bool kEvenOdd = true;
  static inline void load(const T* p, __m256& lo, __m256& hi) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
    hi = _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(int(0xffff0000u))));
  }
};

struct LoadF16 {
  using T = uint16_t;
  static constexpr bool kEvenOdd = false;
  static inline void load(const T* p, __m256& lo, __m256& hi) {
    lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  }
};

struct LoadF32 {
  using T = float;
  static constexpr bool kEvenOdd = false;
  static inline void load(const T* p, __m256& lo, __m256& hi) {
    lo = _mm256_loadu_ps(p);
    hi = _mm256_loadu_ps(p + 8);
  }
};

// Accumulators per (row, activation row): enough independent chains (>= 6-8) to hide the
// 4-cycle FMA latency on both pipes. NA=2 keeps the even and odd halves apart; NA=4 also
// alternates by chunk parity.
template <int NRW, int MB>
constexpr int num_acc() {
  return NRW * MB >= 3 ? (NRW * MB >= 6 ? 1 : 2) : 4;
}

// One 16-element chunk of NRW rows against MB activation rows (fully unrolled after inlining).
// When all 2*MB activation vectors fit in registers next to the accumulators, they are loaded
// once; otherwise (MB = 4) the chunk runs in two halves (the even, then the odd elements): the MB
// activation vectors of a half are loaded into registers once and shared by the NRW rows, that is
// NRW + MB loads per NRW * MB FMAs instead of one load per FMA (the load ports, not the FMA pipes,
// bound the m >= 4 GEMV otherwise). Every accumulator receives the same FMAs in the same order
// either way, so the results are bit-identical.
template <class L, int NRW, int MB, int NA>
__attribute__((always_inline)) inline void gemv_chunk(const typename L::T* const* src, int64_t off, const float* xc,
                                                      int64_t kp, __m256 (&acc)[NRW][MB][NA], int set) {
  constexpr bool kXInRegs = NRW * MB * NA + 2 * MB + 2 <= 15;
  constexpr bool kHalves = !kXInRegs && NRW * MB * NA + MB + 2 <= 16;
  const int i0 = NA == 4 ? 2 * set : 0;
  const int i1 = NA == 1 ? 0 : i0 + 1;
  if constexpr (kHalves) {
    // Each half re-reads the rows' 32 bytes from L1 and keeps only its own half of L::load (the
    // other is dead code): NRW + MB loads per NRW * MB FMAs, and few enough live registers
    // (accumulators, MB activations, one weight vector, a constant) that nothing spills.
    __m256 xv[MB];
#pragma GCC unroll 4
    for (int b = 0; b < MB; ++b) xv[b] = _mm256_loadu_ps(xc + b * kp);
#pragma GCC unroll 2
    for (int r = 0; r < NRW; ++r) {
      __m256 lo, hi;
      L::load(src[r] + off, lo, hi);
#pragma GCC unroll 4
      for (int b = 0; b < MB; ++b) acc[r][b][i0] = _mm256_fmadd_ps(lo, xv[b], acc[r][b][i0]);
    }
#pragma GCC unroll 4
    for (int b = 0; b < MB; ++b) xv[b] = _mm256_loadu_ps(xc + b * kp + 8);
#pragma GCC unroll 2
    for (int r = 0; r < NRW; ++r) {
      __m256 lo, hi;
      L::load(src[r] + off, lo, hi);
#pragma GCC unroll 4
      for (int b = 0; b < MB; ++b) acc[r][b][i1] = _mm256_fmadd_ps(hi, xv[b], acc[r][b][i1]);
    }
    return;
  }
  __m256 xl[MB], xh[MB];
  if constexpr (kXInRegs) {
#pragma GCC unroll 4
    for (int b = 0; b < MB; ++b) {
      xl[b] = _mm256_loadu_ps(xc + b * kp);
      xh[b] = _mm256_loadu_ps(xc + b * kp + 8);
    }
  }
#pragma GCC unroll 2
  for (int r = 0; r < NRW; ++r) {
    __m256 lo, hi;
    L::load(src[r] + off, lo, hi);
#pragma GCC unroll 4
    for (int b = 0; b < MB; ++b) {
      const __m256 x0 = kXInRegs ? xl[b] : _mm256_loadu_ps(xc + b * kp);
      const __m256 x1 = kXInRegs ? xh[b] : _mm256_loadu_ps(xc + b * kp + 8);
      acc[r][b][i0] = _mm256_fmadd_ps(lo, x0, acc[r][b][i0]);
      acc[r][b][i1] = _mm256_fmadd_ps(hi, x1, acc[r][b][i1]);
    }
  }
}

// NRW (1 or 2) weight rows `rows[r]` (k elements each) against MB activation rows of `xp`
// (permuted, zero-padded to kp = round_up(k, 16), row stride kp); writes ys[r][b * ldy].
template <class L, int NRW, int MB>
inline void gemv_rows_mb(const typename L::T* const* rows, int64_t k, const float* xp, int64_t kp, float* const* ys,
                         int64_t ldy, bool accumulate, int64_t pf) {
  using T = typename L::T;
  constexpr int NA = num_acc<NRW, MB>();
  __m256 acc[NRW][MB][NA];
#pragma GCC unroll 2
  for (int r = 0; r < NRW; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < MB; ++b)
#pragma GCC unroll 4
      for (int a = 0; a < NA; ++a) acc[r][b][a] = _mm256_setzero_ps();

  const int64_t k32 = k / 32 * 32;
  int64_t c = 0;
#pragma GCC unroll 2
  for (; c < k32; c += 32) {  // 32 elements = one cache line of bf16/f16, two of f32
    if (pf > 0) {
#pragma GCC unroll 2
      for (int r = 0; r < NRW; ++r) {
        const char* a = reinterpret_cast<const char*>(rows[r] + c) + pf;
        _mm_prefetch(a, _MM_HINT_T0);
        if constexpr (sizeof(T) == 4) _mm_prefetch(a + 64, _MM_HINT_T0);
      }
    }
    gemv_chunk<L, NRW, MB, NA>(rows, c, xp + c, kp, acc, 0);
    gemv_chunk<L, NRW, MB, NA>(rows, c + 16, xp + c + 16, kp, acc, 1);
  }
  for (; c + 16 <= k; c += 16) gemv_chunk<L, NRW, MB, NA>(rows, c, xp + c, kp, acc, 0);
  if (c < k) {  // tail: the last k % 16 weights, zero-padded (the padded activations are zero too)
    alignas(32) T tail[NRW][16] = {};
    const T* tp[NRW];
    for (int r = 0; r < NRW; ++r) {
      std::memcpy(tail[r], rows[r] + c, size_t(k - c) * sizeof(T));
      tp[r] = tail[r];
    }
    gemv_chunk<L, NRW, MB, NA>(tp, 0, xp + c, kp, acc, 1);
  }
#pragma GCC unroll 2
  for (int r = 0; r < NRW; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < MB; ++b) {
      __m256 v = acc[r][b][0];
#pragma GCC unroll 4
      for (int a = 1; a < NA; ++a) v = _mm256_add_ps(v, acc[r][b][a]);
      const float s = hsum(v);
      float* yo = ys[r] + b * ldy;
      *yo = accumulate ? *yo + s : s;
    }
}

// NRW rows against all m activation rows, in groups of <= 4 (rows re-read from L1 per group).
template <class L, int NRW>
inline void gemv_rows_all_m(const typename L::T* const* rows, int64_t k, const float* xp, int64_t kp, int64_t m,
                            float* const* ys, int64_t ldy, bool accumulate, int64_t pf) {
  int64_t i = 0;
  const typename L::T* const* r = rows;
  for (; i < m;) {
    float* yi[NRW];
    for (int q = 0; q < NRW; ++q) yi[q] = ys[q] + i * ldy;
    const float* xi = xp + i * kp;
    switch (std::min<int64_t>(m - i, 4)) {
      case 4: gemv_rows_mb<L, NRW, 4>(r, k, xi, kp, yi, ldy, accumulate, pf); i += 4; break;
      case 3: gemv_rows_mb<L, NRW, 3>(r, k, xi, kp, yi, ldy, accumulate, pf); i += 3; break;
      case 2: gemv_rows_mb<L, NRW, 2>(r, k, xi, kp, yi, ldy, accumulate, pf); i += 2; break;
      default: gemv_rows_mb<L, NRW, 1>(r, k, xi, kp, yi, ldy, accumulate, pf); i += 1; break;
    }
  }
}

// Rows [j0, j1) of W against all m activation rows. The range is cut in two halves that are
// walked side by side (see the top of the file).
template <class L>
void gemv_rows(const typename L::T* w, int64_t k, int64_t j0, int64_t j1, const float* xp, int64_t kp, int64_t m,
               float* y, int64_t ldy, bool accumulate, int64_t pf) {
  using T = typename L::T;
  const int64_t half = (j1 - j0) / 2;
  for (int64_t j = j0; j < j0 + half; ++j) {
    const T* rows[2] = {w + j * k, w + (j + half) * k};
    float* ys[2] = {y + j, y + j + half};
    gemv_rows_all_m<L, 2>(rows, k, xp, kp, m, ys, ldy, accumulate, pf);
  }
  for (int64_t j = j0 + 2 * half; j < j1; ++j) {
    const T* rows[1] = {w + j * k};
    float* ys[1] = {y + j};
    gemv_rows_all_m<L, 1>(rows, k, xp, kp, m, ys, ldy, accumulate, pf);
  }
}

template <class L>
void gemv_typed(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy) {
  using T = typename L::T;
  const int64_t k = w.k, n = w.n;
  const int64_t kp = (k + 15) / 16 * 16;
  // Permuted, zero-padded activations (a reused buffer: no allocation per token).
  thread_local std::vector<float> xbuf;
  if (xbuf.size() < size_t(m * kp)) xbuf.resize(size_t(m * kp));
  float* xp = xbuf.data();
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * ldx;
    float* pi = xp + i * kp;
    if constexpr (L::kEvenOdd) {
      const int64_t k16 = k / 16 * 16;
      for (int64_t c = 0; c < k16; c += 16)
        for (int e = 0; e < 8; ++e) {
          pi[c + e] = xi[c + 2 * e];
          pi[c + 8 + e] = xi[c + 2 * e + 1];
        }
      for (int64_t c = k16; c < kp; ++c) {
        const int64_t e = c - k16, src = k16 + (e < 8 ? 2 * e : 2 * (e - 8) + 1);
        pi[c] = src < k ? xi[src] : 0.0f;
      }
    } else {
      std::memcpy(pi, xi, size_t(k) * sizeof(float));
      for (int64_t c = k; c < kp; ++c) pi[c] = 0.0f;
    }
  }
  const T* wd = static_cast<const T*>(w.data);
  const int64_t pf = kPrefetch;
  gemv_split_rows(n, n * k * int64_t(sizeof(T)), m,
                  [&](int64_t j0, int64_t j1) { gemv_rows<L>(wd, k, j0, j1, xp, kp, m, y, ldy, accumulate, pf); });
}

}  // namespace


void gemv_forward(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy) {
  if (w.quantized()) return gemv_forward_quant(x, m, w, y, accumulate, ldx, ldy);
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  if (m <= 0 || w.n <= 0) return;
  if (w.k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(y + i * ldy, y + i * ldy + w.n, 0.0f);
    return;
  }
  switch (w.dtype) {
    case DType::BF16: gemv_typed<LoadBF16>(x, m, w, y, accumulate, ldx, ldy); break;
    case DType::F16: gemv_typed<LoadF16>(x, m, w, y, accumulate, ldx, ldy); break;
    case DType::F32: gemv_typed<LoadF32>(x, m, w, y, accumulate, ldx, ldy); break;
    default: fail("linear: weight '", w.name, "' has dtype ", dtype_name(w.dtype), ", expected F32, BF16 or F16");
  }
}

}  // namespace gt::linear_detail
