// Linear layers over quantized weights (Q8_0 / Q4_0 / Q4_K blocks packed per row; see linear.h).
//
// Contract: every path computes what f32 math computes on the dequantized weight (w = d * q, and
// for Q4_K w = (d * sc) * q - (dmin * m), in f32, exactly ggml's dequantization), differing only in
// the f32 summation order:
//  * decode GEMV (m <= kGemvMaxM): streams the blocks once.
//    Q8_0 / Q4_0: per block the 32 products x·q are summed in f32 and multiplied by the block
//    scale (d · Σ x q instead of Σ x (d q): one more rounding per block, the same f32 math).
//    AVX2 here; an AVX-512 variant in kernels/x86/gemv_q_avx512.cc is used when the CPU has
//    AVX-512 (chosen at run time).
//    Q4_K: the weights themselves are dequantized in registers, bit-identical to
//    quant::dequantize_q4_k (see q4k_sub_block), and FMA'd into 8 f32 lanes per (weight row, activation row): lane l
//    accumulates x[i]·w[i] for i = l mod 8 in increasing i (each sub-block of 32 adds 4 FMAs per
//    lane, sub-blocks and super-blocks in order); the 8 lanes are summed at the end of the row.
//    So the result is Σ x w over the exact dequantized w, only the order of the sum differs.
//    AVX2 only: AVX-512 hosts run this kernel for Q4_K too.
//    These exact GEMVs run under `--precision f32`; under `auto` (the default) Q8_0/Q4_0 decode
//    takes the int8-activation GEMV of linear_quant_i8.cc (llama.cpp's numerics; its bound is there).
//  * prefill / training GEMM and the backward-input product: the f32 GEMM of kernels/gemm.h with
//    the blocks dequantized inside its packing (gemm::gemm_blocks: strips of 64 columns into an
//    L2-sized per-thread scratch, never the whole weight). Its blocking, threads and accumulation
//    order are those of gemm() on a dequantized f32 copy of the weight, so the forward AND the
//    backward-input results are bit-identical to that. Columns are dequantized in units of 32 (a
//    block, or a Q4_K sub-block with its super-block's scales).
//    (Measured alternative, llama.cpp's int8 activations quantized per block: not kept, see
//    docs/QUANTIZATION.md.)
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gemmatune/kernels/gemm.h"
#include "gemmatune/kernels/gemv_common.h"
#include "gemmatune/kernels/linear.h"
#include "gemmatune/util/cpu.h"
#include "gemmatune/util/error.h"

namespace gt {

namespace gemm::x86 {
// kernels/x86/gemv_q_avx512.cc (AVX-512 F/BW/VL/DQ; called only after the CPUID check).
void gemv_q_avx512(int format, const uint8_t* w, size_t row_bytes, int64_t k, int64_t j0, int64_t j1,
                   const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy, bool accumulate);
}  // namespace gemm::x86

namespace {

using linear_detail::block_scale;
using linear_detail::hsum;

// One block as 32 floats q (Q8_0: q, Q4_0: nibble - 8) in 4 ymm, natural order.
struct BlockQ8 {
  static constexpr size_t kBytes = 34;
  static inline void load(const uint8_t* blk, __m256 (&w)[4]) {
    const uint8_t* q = blk + 2;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
      w[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * i))));
  }
};

struct BlockQ4 {
  static constexpr size_t kBytes = 18;
  static inline void load(const uint8_t* blk, __m256 (&w)[4]) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i m4 = _mm_set1_epi8(0x0f), b8 = _mm_set1_epi8(8);
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m4), b8);                     // values 0..15
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), b8);  // values 16..31
    w[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    w[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    w[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    w[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
  }
};

// ---- Q4_K: 144-byte super-blocks of 256 values (8 sub-blocks of 32). ----
constexpr size_t kQ4KBytes = 144;

// The sub-block scales d*sc and offsets dmin*m of a super-block, as ggml's dequantize_row_q4_K
// computes them (f32 products of the f16 d / dmin and the 6-bit integers).
inline void q4k_scales(const uint8_t* blk, float (&dd)[8], float (&mm)[8]) {
  const float d = block_scale(blk), dmin = block_scale(blk + 2);
  const uint8_t* s = blk + 4;
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    if (j < 4) {
      sc = s[j] & 63;
      m = s[j + 4] & 63;
    } else {
      sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
      m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    dd[j] = d * float(sc);
    mm[j] = dmin * float(m);
  }
}

// Sub-block j (0..7) of a super-block as 32 f32 weights in 4 ymm, natural order: dd * q - mm, as
// ggml computes them. The product is exact (dd = f16 d x 6-bit sc has <= 17 significant bits, q
// 4 bits), so the result is the same whether or not the compiler fuses it with the subtract.
inline void q4k_sub_block(const uint8_t* blk, int j, __m256 dd, __m256 mm, __m256 (&w)[4]) {
  const uint8_t* q = blk + 16 + 32 * (j / 2);
  const __m128i m4 = _mm_set1_epi8(0x0f);
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * h));
    const __m128i v = _mm_and_si128(j % 2 ? _mm_srli_epi16(raw, 4) : raw, m4);
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)));
    w[2 * h] = _mm256_sub_ps(_mm256_mul_ps(dd, lo), mm);
    w[2 * h + 1] = _mm256_sub_ps(_mm256_mul_ps(dd, hi), mm);
  }
}

// Rows [0, nr) of Q4_K w, sub-blocks [s0, s1) (columns 32 s0 .. 32 s1) of each, into out.
void dequant_rows_q4k(const uint8_t* w, size_t row_bytes, int64_t s0, int64_t s1, int64_t nr, float* out,
                      int64_t ldo) {
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* row = w + size_t(r) * row_bytes;
    float* o = out + r * ldo;
    for (int64_t s = s0; s < s1;) {
      const int64_t sb = s / 8;
      const uint8_t* blk = row + size_t(sb) * kQ4KBytes;
      float dd[8], mm[8];
      q4k_scales(blk, dd, mm);
      for (; s < s1 && s / 8 == sb; ++s) {
        __m256 v[4];
        q4k_sub_block(blk, int(s % 8), _mm256_set1_ps(dd[s % 8]), _mm256_set1_ps(mm[s % 8]), v);
        for (int i = 0; i < 4; ++i) _mm256_storeu_ps(o + (s - s0) * 32 + 8 * i, v[i]);
      }
    }
  }
}

// Rows [0, nr) of w, blocks [b0, b1) of each, into out (row stride ldo floats).
template <class B>
void dequant_rows(const uint8_t* w, size_t row_bytes, int64_t b0, int64_t b1, int64_t nr, float* out, int64_t ldo) {
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* row = w + size_t(r) * row_bytes;
    float* o = out + r * ldo;
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* blk = row + size_t(b) * B::kBytes;
      __m256 q[4];
      B::load(blk, q);
      const __m256 d = _mm256_set1_ps(block_scale(blk));
      for (int i = 0; i < 4; ++i) _mm256_storeu_ps(o + (b - b0) * 32 + 8 * i, _mm256_mul_ps(q[i], d));
    }
  }
}

// Rows [r0, r0 + nr), columns [32 b0, 32 b1) of a quantized w into out (row stride ldo).
void dequant_slice(const Weight2D& w, int64_t r0, int64_t nr, int64_t b0, int64_t b1, float* out, int64_t ldo) {
  const uint8_t* base = static_cast<const uint8_t*>(w.data) + size_t(r0) * w.row_bytes();
  if (w.format == WFormat::Q8_0)
    dequant_rows<BlockQ8>(base, w.row_bytes(), b0, b1, nr, out, ldo);
  else if (w.format == WFormat::Q4_0)
    dequant_rows<BlockQ4>(base, w.row_bytes(), b0, b1, nr, out, ldo);
  else
    dequant_rows_q4k(base, w.row_bytes(), b0, b1, nr, out, ldo);
}

constexpr int64_t kPrefetch = 1024;

// NR weight rows (block streams) against MB activation rows.
template <class B, int NR, int MB>
inline void gemv_q_block_rows(const uint8_t* const* rows, int64_t nb, const float* x, int64_t ldx, float* const* ys,
                              int64_t ldy, bool accumulate) {
  __m256 acc[NR][MB];
  for (int r = 0; r < NR; ++r)
    for (int b = 0; b < MB; ++b) acc[r][b] = _mm256_setzero_ps();
  for (int64_t blk = 0; blk < nb; ++blk) {
    const float* xb = x + blk * 32;
#pragma GCC unroll 2
    for (int r = 0; r < NR; ++r) {
      const uint8_t* p = rows[r] + size_t(blk) * B::kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch, _MM_HINT_T0);
      __m256 w[4];
      B::load(p, w);
      const __m256 d = _mm256_set1_ps(block_scale(p));
#pragma GCC unroll 4
      for (int b = 0; b < MB; ++b) {
        const float* xp = xb + b * ldx;
        __m256 s = _mm256_mul_ps(w[0], _mm256_loadu_ps(xp));
        s = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xp + 8), s);
        s = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xp + 16), s);
        s = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xp + 24), s);
        acc[r][b] = _mm256_fmadd_ps(s, d, acc[r][b]);
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

// Q4_K: NR weight rows against MB activation rows, nsb super-blocks (summation order: see the top).
template <int NR, int MB>
inline void gemv_q4k_block_rows(const uint8_t* const* rows, int64_t nsb, const float* x, int64_t ldx,
                                float* const* ys, int64_t ldy, bool accumulate) {
  __m256 acc[NR][MB];
  for (int r = 0; r < NR; ++r)
    for (int b = 0; b < MB; ++b) acc[r][b] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const float* xs = x + sb * 256;
    for (int r = 0; r < NR; ++r) {
      const uint8_t* p = rows[r] + size_t(sb) * kQ4KBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch + 64, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetch + 128, _MM_HINT_T0);
      float dd[8], mm[8];
      q4k_scales(p, dd, mm);
      for (int j = 0; j < 8; ++j) {
        __m256 w[4];
        q4k_sub_block(p, j, _mm256_set1_ps(dd[j]), _mm256_set1_ps(mm[j]), w);
#pragma GCC unroll 4
        for (int b = 0; b < MB; ++b) {
          const float* xp = xs + 32 * j + b * ldx;
          acc[r][b] = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xp), acc[r][b]);
          acc[r][b] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xp + 8), acc[r][b]);
          acc[r][b] = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xp + 16), acc[r][b]);
          acc[r][b] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xp + 24), acc[r][b]);
        }
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

// Adapts the Q4_K kernel to gemv_q_all_m / gemv_q_rows (nb counts blocks of 32 there).
struct BlockQ4K {
  template <int NR, int MB>
  static inline void rows(const uint8_t* const* rows, int64_t nb, const float* x, int64_t ldx, float* const* ys,
                          int64_t ldy, bool accumulate) {
    gemv_q4k_block_rows<NR, MB>(rows, nb / 8, x, ldx, ys, ldy, accumulate);
  }
};
template <class B>
struct BlockKernel {
  template <int NR, int MB>
  static inline void rows(const uint8_t* const* rows, int64_t nb, const float* x, int64_t ldx, float* const* ys,
                          int64_t ldy, bool accumulate) {
    gemv_q_block_rows<B, NR, MB>(rows, nb, x, ldx, ys, ldy, accumulate);
  }
};

template <class K, int NR>
inline void gemv_q_all_m(const uint8_t* const* rows, int64_t nb, const float* x, int64_t m, int64_t ldx,
                         float* const* ys, int64_t ldy, bool accumulate) {
  for (int64_t i = 0; i < m;) {
    float* yi[NR];
    for (int q = 0; q < NR; ++q) yi[q] = ys[q] + i * ldy;
    const float* xi = x + i * ldx;
    switch (std::min<int64_t>(m - i, 4)) {
      case 4: K::template rows<NR, 4>(rows, nb, xi, ldx, yi, ldy, accumulate); i += 4; break;
      case 3: K::template rows<NR, 3>(rows, nb, xi, ldx, yi, ldy, accumulate); i += 3; break;
      case 2: K::template rows<NR, 2>(rows, nb, xi, ldx, yi, ldy, accumulate); i += 2; break;
      default: K::template rows<NR, 1>(rows, nb, xi, ldx, yi, ldy, accumulate); i += 1; break;
    }
  }
}

// Rows [j0, j1): the range is cut in two halves walked side by side (two sequential streams, as
// the dense GEMV does; see linear_gemv.cc).
template <class K>
void gemv_q_rows(const uint8_t* w, size_t row_bytes, int64_t k, int64_t j0, int64_t j1, const float* x, int64_t m,
                 int64_t ldx, float* y, int64_t ldy, bool accumulate) {
  const int64_t nb = k / 32, half = (j1 - j0) / 2;
  for (int64_t j = j0; j < j0 + half; ++j) {
    const uint8_t* rows[2] = {w + size_t(j) * row_bytes, w + size_t(j + half) * row_bytes};
    float* ys[2] = {y + j, y + j + half};
    gemv_q_all_m<K, 2>(rows, nb, x, m, ldx, ys, ldy, accumulate);
  }
  for (int64_t j = j0 + 2 * half; j < j1; ++j) {
    const uint8_t* rows[1] = {w + size_t(j) * row_bytes};
    float* ys[1] = {y + j};
    gemv_q_all_m<K, 1>(rows, nb, x, m, ldx, ys, ldy, accumulate);
  }
}

void check_quant(const Weight2D& w, const char* fn) {
  GT_CHECK(w.format == WFormat::Q8_0 || w.format == WFormat::Q4_0 || w.format == WFormat::Q4_K, fn, ": weight '",
           w.name, "' has an unknown format");
  const int64_t bv = wformat_block_values(w.format);
  GT_CHECK(w.k % bv == 0, fn, ": quantized weight '", w.name, "' (", wformat_name(w.format), ") has k=", w.k,
           ", not a multiple of ", bv);
}

bool use_avx512_gemv() {
  static const int mode = [] {
    const char* e = std::getenv("GEMMATUNE_CPU_DISABLE");
    const bool hidden = e && std::string(e).find("avx512") != std::string::npos;
    return cpu_info().avx512_core() && !hidden ? 1 : 0;
  }();
  return mode == 1;
}

}  // namespace

void weight_rows_to_f32(const Weight2D& w, int64_t r0, int64_t nr, float* out) {
  GT_CHECK(r0 >= 0 && nr >= 0 && r0 + nr <= w.n, "weight '", w.name, "': rows [", r0, ", ", r0 + nr,
           ") out of range (", w.n, " rows)");
  if (w.quantized()) {
    check_quant(w, "weight_rows_to_f32");
    return dequant_slice(w, r0, nr, 0, w.k / 32, out, w.k);
  }
  const uint8_t* base = static_cast<const uint8_t*>(w.data) + size_t(r0) * w.row_bytes();
  to_f32(w.dtype, base, out, size_t(nr) * size_t(w.k));
}

namespace linear_detail {

bool gemv_quant_avx512_supported() { return cpu_info().avx512_core(); }

void gemv_forward_quant(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                        int64_t ldy, int isa) {
  check_quant(w, "linear");
  GT_CHECK(isa != 1 || cpu_info().avx512_core(), "linear: the AVX-512 quantized GEMV needs AVX-512 F/BW/VL/DQ");
  GT_CHECK(isa != 1 || w.format != WFormat::Q4_K, "linear: weight '", w.name,
           "': there is no AVX-512 Q4_K GEMV (the AVX2 kernel serves AVX-512 hosts)");
  // Precision auto: integer dot products on int8 activations (linear_quant_i8.cc); f32: exact.
  if (isa < 0 && (w.format == WFormat::Q8_0 || w.format == WFormat::Q4_0) &&
      gemm::selection().precision == gemm::Precision::Auto)
    return gemv_forward_quant_i8(x, m, w, y, accumulate, ldx, ldy);
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  if (m <= 0 || w.n <= 0) return;
  if (w.k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(y + i * ldy, y + i * ldy + w.n, 0.0f);
    return;
  }
  const uint8_t* wd = static_cast<const uint8_t*>(w.data);
  const size_t rb = w.row_bytes();
  const int64_t n = w.n, k = w.k;
  const WFormat f = w.format;
  // The AVX-512 kernel knows Q8_0 and Q4_0 only: never called for Q4_K.
  const bool z = f != WFormat::Q4_K && (isa < 0 ? use_avx512_gemv() : isa == 1);
  auto run = [&](int64_t j0, int64_t j1) {
    if (z)
      gemm::x86::gemv_q_avx512(int(f), wd, rb, k, j0, j1, x, m, ldx, y, ldy, accumulate);
    else if (f == WFormat::Q8_0)
      gemv_q_rows<BlockKernel<BlockQ8>>(wd, rb, k, j0, j1, x, m, ldx, y, ldy, accumulate);
    else if (f == WFormat::Q4_0)
      gemv_q_rows<BlockKernel<BlockQ4>>(wd, rb, k, j0, j1, x, m, ldx, y, ldy, accumulate);
    else
      gemv_q_rows<BlockQ4K>(wd, rb, k, j0, j1, x, m, ldx, y, ldy, accumulate);
  };
  gemv_split_rows(n, int64_t(w.bytes()), m, run);
}

// Prefill / training: the f32 GEMM of kernels/gemm.cc with the blocks dequantized strip by strip
// inside its packing (gemm::gemm_blocks): no f32 copy of a weight, and the same blocking, threads
// and accumulation order as the GEMM on the dequantized f32 weight (bit-identical to it).
namespace {
void fill_blocks(const void* ctx, int64_t r0, int64_t nr, int64_t b0, int64_t b1, float* out, int64_t ldo) {
  dequant_slice(*static_cast<const Weight2D*>(ctx), r0, nr, b0, b1, out, ldo);
}
}  // namespace

void gemm_forward_quant(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx,
                        int64_t ldy) {
  check_quant(w, "linear");
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  const gemm::BlockSource src{fill_blocks, &w};
  gemm::gemm_blocks(gemm::kernel_for(DType::F32), x, ldx, m, src, /*trans=*/true, w.n, w.k, y, ldy, accumulate);
}

void gemm_backward_input_quant(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
  check_quant(w, "linear_backward_input");
  // dx[m, k] (+)= dy[m, n] · W[n, k]
  const gemm::BlockSource src{fill_blocks, &w};
  gemm::gemm_blocks(gemm::kernel_for(DType::F32), dy, w.n, m, src, /*trans=*/false, w.k, w.n, dx, w.k, accumulate);
}

}  // namespace linear_detail
}  // namespace gt
