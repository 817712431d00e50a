// Decode GEMV over Q8_0 / Q4_0 weights with integer dot products (as llama.cpp computes them).
//
// The activations are quantized once per call, per block of 32 values, to int8 with one f32 scale
// (dx = max|x| / 127, qx = round-to-nearest-even(x / dx)); each weight block then costs one 32-byte
// integer dot product (I8Q8 / I8Q4 below: vpmaddubsw multiplies and adds pairs into int16 exactly,
// vpmaddwd adds those into 8 int32 lanes exactly) and one FMA that adds them, times dw * dx, into
// f32 lanes. Per block that is 8-11 instructions instead of the ~24 of widening 32 weights to f32,
// so the 4-bit GEMV is much less compute-bound.
//
// Numerics (the precision contract, docs/QUANTIZATION.md): the result is the f32 dot product of
// the dequantized weight with the *int8-rounded* activations; the only difference from exact mode
// is the activation rounding, |x - dx * qx| <= dx / 2 per element, so per output
//     |y_i8 - y_exact| <= sum over blocks of (dx_b / 2) * sum_i |w_i|   (+ f32 rounding).
// linear() uses this path for quantized weights at decode sizes when the precision is `auto` (the
// default); `--precision f32` (GEMMATUNE_PRECISION=f32, the test suite's default) keeps the exact
// f32 GEMV of linear_quant.cc.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gemmatune/kernels/gemv_common.h"
#include "gemmatune/kernels/linear.h"
#include "gemmatune/util/error.h"

namespace gt::linear_detail {

namespace {

// Weight block -> 32 int32 partial sums (8 lanes) of sum(w * x) over one block, x in [-127, 127]
// (32 signed bytes in natural order), plus the block's correction `c` (see Q4).
struct I8Q8 {
  static constexpr size_t kBytes = 34;
  // w signed, |w| <= 128 (a file may hold -128): vpsignb makes it unsigned (-128 -> 128) and moves
  // its sign onto x; vpmaddubsw's pairs are <= 2 * 128 * 127 < 2^15 (exact), vpmaddwd adds them
  // into 8 int32 lanes (exact).
  static inline __m256i dot(const uint8_t* blk, __m256i x, __m256i /*c*/) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i aw = _mm256_sign_epi8(w, w);
    const __m256i sx = _mm256_sign_epi8(x, w);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
  }
};
struct I8Q4 {
  static constexpr size_t kBytes = 18;
  // w = q - 8 with q the unsigned nibble: sum((q - 8) x) = sum(q x) - 8 sum(x). vpmaddubsw takes q
  // unsigned directly (pairs <= 2 * 15 * 127, exact) and `c` holds 8 sum(x) over each lane's 4
  // bytes, precomputed once per call: two instructions fewer per block than the sign trick, and
  // the same int32 lanes exactly (lane l = sum over bytes 4l .. 4l + 3 of (q - 8) x).
  static inline __m256i dot(const uint8_t* blk, __m256i x, __m256i c) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    // byte j: value j (low nibble), value j + 16 (high nibble)
    const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0f));
    return _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1)), c);
  }
};

// NR weight rows against MB quantized activation rows (qx: int8 [MB][k], dx: [MB][nb], cx: the
// per-block corrections, 8 int32 per block, [MB][nb][8]). The hardware prefetcher follows the NR
// sequential block streams.
template <class B, int NR, int MB>
inline void rows_i8(const uint8_t* const* rows, int64_t nb, const int8_t* qx, const float* dx, const int32_t* cx,
                    int64_t k, float* const* ys, int64_t ldy, bool accumulate) {
  __m256 acc[NR][MB];
  for (int r = 0; r < NR; ++r)
    for (int b = 0; b < MB; ++b) acc[r][b] = _mm256_setzero_ps();
  for (int64_t blk = 0; blk < nb; ++blk) {
#pragma GCC unroll 2
    for (int r = 0; r < NR; ++r) {
      const uint8_t* p = rows[r] + size_t(blk) * B::kBytes;
      const float dw = block_scale(p);
#pragma GCC unroll 4
      for (int b = 0; b < MB; ++b) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + b * k + blk * 32));
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cx + (b * nb + blk) * 8));
        const __m256 s = _mm256_set1_ps(dw * dx[b * nb + blk]);
        acc[r][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(B::dot(p, x, c)), s, acc[r][b]);
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int b = 0; b < MB; ++b) {
      const float s = hsum(acc[r][b]);
      float* yo = ys[r] + b * ldy;
      *yo = accumulate ? *yo + s : s;
    }
}

template <class B, int NR>
inline void rows_all_m(const uint8_t* const* rows, int64_t nb, const int8_t* qx, const float* dx, const int32_t* cx,
                       int64_t k, int64_t m, float* const* ys, int64_t ldy, bool accumulate) {
  for (int64_t i = 0; i < m;) {
    float* yi[NR];
    for (int q = 0; q < NR; ++q) yi[q] = ys[q] + i * ldy;
    const int8_t* qi = qx + i * k;
    const float* di = dx + i * nb;
    const int32_t* ci = cx + i * nb * 8;
    switch (std::min<int64_t>(m - i, 4)) {
      case 4: rows_i8<B, NR, 4>(rows, nb, qi, di, ci, k, yi, ldy, accumulate); i += 4; break;
      case 3: rows_i8<B, NR, 3>(rows, nb, qi, di, ci, k, yi, ldy, accumulate); i += 3; break;
      case 2: rows_i8<B, NR, 2>(rows, nb, qi, di, ci, k, yi, ldy, accumulate); i += 2; break;
      default: rows_i8<B, NR, 1>(rows, nb, qi, di, ci, k, yi, ldy, accumulate); i += 1; break;
    }
  }
}

// Rows [j0, j1), cut in two halves walked side by side (two sequential streams, as the other GEMVs).
template <class B>
void gemv_rows_i8(const uint8_t* w, size_t row_bytes, int64_t k, int64_t j0, int64_t j1, const int8_t* qx,
                  const float* dx, const int32_t* cx, int64_t m, float* y, int64_t ldy, bool accumulate) {
  const int64_t nb = k / 32, half = (j1 - j0) / 2;
  for (int64_t j = j0; j < j0 + half; ++j) {
    const uint8_t* rows[2] = {w + size_t(j) * row_bytes, w + size_t(j + half) * row_bytes};
    float* ys[2] = {y + j, y + j + half};
    rows_all_m<B, 2>(rows, nb, qx, dx, cx, k, m, ys, ldy, accumulate);
  }
  for (int64_t j = j0 + 2 * half; j < j1; ++j) {
    const uint8_t* rows[1] = {w + size_t(j) * row_bytes};
    float* ys[1] = {y + j};
    rows_all_m<B, 1>(rows, nb, qx, dx, cx, k, m, ys, ldy, accumulate);
  }
}

}  // namespace

void quantize_activations_i8(const float* x, int64_t k, int8_t* q, float* d) {
  GT_CHECK(k % 32 == 0, "quantize_activations_i8: k=", k, " is not a multiple of 32");
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < k / 32; ++b) {
    const float* xb = x + b * 32;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float am = _mm_cvtss_f32(m4);
    const float db = am / 127.0f;
    d[b] = db;
    const __m256 id = _mm256_set1_ps(am > 0.0f ? 127.0f / am : 0.0f);
    __m256i qi[4];
    for (int i = 0; i < 4; ++i)  // MXCSR's default rounding: to nearest, ties to even; |x * id| <= 127
      qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));
    // packs interleave the 128-bit lanes: [0-3 8-11 4-7 12-15] -> bytes [0-3 8-11 16-19 24-27 4-7 ...]
    const __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]), p16b = _mm256_packs_epi32(qi[2], qi[3]);
    const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * 32), _mm256_permutevar8x32_epi32(p8, perm));
  }
}

void gemv_forward_quant_i8(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                           int64_t ldy) {
  GT_CHECK(w.format == WFormat::Q8_0 || w.format == WFormat::Q4_0, "linear: weight '", w.name,
           "': the int8 GEMV takes Q8_0 or Q4_0 blocks, not ", wformat_name(w.format));
  GT_CHECK(w.k % 32 == 0, "linear: quantized weight '", w.name, "' has k=", w.k, ", not a multiple of 32");
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  if (m <= 0 || w.n <= 0) return;
  const int64_t k = w.k, n = w.n, nb = k / 32;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(y + i * ldy, y + i * ldy + n, 0.0f);
    return;
  }
  thread_local std::vector<int8_t> qx;
  thread_local std::vector<float> dx;
  thread_local std::vector<int32_t> cx;
  if (qx.size() < size_t(m * k)) qx.resize(size_t(m * k));
  if (dx.size() < size_t(m * nb)) dx.resize(size_t(m * nb));
  if (cx.size() < size_t(m * nb * 8)) cx.resize(size_t(m * nb * 8));
  const bool q8 = w.format == WFormat::Q8_0;
  for (int64_t i = 0; i < m; ++i) {
    int8_t* qi = qx.data() + i * k;
    quantize_activations_i8(x + i * ldx, k, qi, dx.data() + i * nb);
    // Q4_0's correction per block: lane l = 8 (x[4l] + .. + x[4l + 3]), the bytes vpmaddwd adds
    // into lane l. Q8_0 has none (I8Q8::dot never reads it).
    if (q8) continue;
    int32_t* ci = cx.data() + i * nb * 8;
    for (int64_t b = 0; b < nb; ++b) {
      const __m256i xb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qi + b * 32));
      const __m256i c = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), xb), _mm256_set1_epi16(1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ci + b * 8), c);
    }
  }
  const uint8_t* wd = static_cast<const uint8_t*>(w.data);
  const size_t rb = w.row_bytes();
  const int8_t* qp = qx.data();
  const float* dp = dx.data();
  const int32_t* cp = cx.data();
  auto run = [&](int64_t j0, int64_t j1) {
    if (q8)
      gemv_rows_i8<I8Q8>(wd, rb, k, j0, j1, qp, dp, cp, m, y, ldy, accumulate);
    else
      gemv_rows_i8<I8Q4>(wd, rb, k, j0, j1, qp, dp, cp, m, y, ldy, accumulate);
  };
  gemv_split_rows(n, int64_t(w.bytes()), m, run);
}

}  // namespace gt::linear_detail
