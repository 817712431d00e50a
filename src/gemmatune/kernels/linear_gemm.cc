// Prefill/training path: a blocked AVX2 SGEMM in the BLIS/Goto style whose weight-packing step
// reads the stored weight (bf16/f16/f32) and writes f32 panels. The weight is therefore converted
// exactly once per call, a KC x NC panel at a time, into a buffer that stays in cache; it is never
// materialised whole in f32 and no per-weight state is kept.
//
//   C[m, nc] (+)= A[m, kr] · B[kr, nc]
//   forward:        A = x, B[p, j] = W[j, p]  (transpose while packing: 8x8 register transposes)
//   backward input: A = dy, B[p, j] = W[p, j]  (straight copy while packing)
//
// Loops (per thread, on its own block of C): jc (NC columns) > pc (KC of the reduction) > pack B
// > ic (MC rows) > pack A > jr (NR=16) > ir (MR=6) > 6x16 micro-kernel with 12 ymm accumulators
// (2 loads of B, 6 broadcasts of A, 12 FMAs per k step). B micro-panel KC x 16 (16 KiB) stays in
// L1 across the ir loop, the packed A block (MC x KC) in L2.
// Threads split C by columns (NR multiples) when it is wide enough, else by rows (MR multiples).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "gemmatune/kernels/linear.h"
#include "gemmatune/util/error.h"

namespace gt::linear_detail {

namespace {

constexpr int MR = 6;
constexpr int NR = 16;
// Blocking (Zen 3: 32 KiB L1D, 512 KiB L2 per core, 32 MiB shared L3). B micro-panel KC x 16 f32
// = 16 KiB (L1), A block MC x KC = 120 KiB (L2), B panel KC x NC = 1 MiB (L2/L3). Measured at
// m=512 (1 thread, best-of-rounds CPU-time rate): MC 72..240, KC 128..384, NC 256..2048 are all
// within noise (+-3%) of each other.
constexpr int64_t KC = 256;
constexpr int64_t MC = 120;   // multiple of MR
constexpr int64_t NC = 1024;  // multiple of NR

// 8 consecutive stored elements -> 8 floats.
template <DType D>
inline __m256 load8(const void* p) {
  if constexpr (D == DType::BF16) {
    const __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else if constexpr (D == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(static_cast<const __m128i*>(p)));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(p));
  }
}

template <DType D>
inline float load1(const void* p, int64_t i) {
  if constexpr (D == DType::BF16) {
    return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  } else if constexpr (D == DType::F16) {
    return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  } else {
    return static_cast<const float*>(p)[i];
  }
}

template <DType D>
constexpr int64_t esize() {
  return D == DType::F32 ? 4 : 2;
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

// Forward packing: Bp[panel][p][j] = W[j0 + panel*NR + j][p0 + p] for p < kc, j < NR (zero beyond nc).
template <DType D>
void pack_b_trans(const void* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc, float* bp) {
  const uint8_t* base = static_cast<const uint8_t*>(w);
  constexpr int64_t es = esize<D>();
  const int64_t kc8 = kc / 8 * 8;
  for (int64_t jp = 0; jp < nc; jp += NR) {
    float* dst = bp + (jp / NR) * kc * NR;
    const int64_t rows = std::min<int64_t>(NR, nc - jp);
    for (int half = 0; half < 2; ++half) {
      const int64_t rbeg = half * 8;
      const int64_t rcnt = std::clamp<int64_t>(rows - rbeg, 0, 8);
      const uint8_t* src[8];
      for (int r = 0; r < 8; ++r)
        src[r] = base + ((j0 + jp + rbeg + std::min<int64_t>(r, std::max<int64_t>(rcnt - 1, 0))) * ldw + p0) * es;
      if (rcnt == 0) {
        for (int64_t p = 0; p < kc; ++p) _mm256_storeu_ps(dst + p * NR + rbeg, _mm256_setzero_ps());
        continue;
      }
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

// Backward packing: Bp[panel][p][j] = W[p0 + p][j0 + panel*NR + j] (zero beyond nc).
template <DType D>
void pack_b_plain(const void* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc, float* bp) {
  const uint8_t* base = static_cast<const uint8_t*>(w);
  constexpr int64_t es = esize<D>();
  const int64_t nfull = nc / NR * NR;
  for (int64_t p = 0; p < kc; ++p) {
    const uint8_t* row = base + ((p0 + p) * ldw + j0) * es;
    int64_t jp = 0;
    for (; jp < nfull; jp += NR) {
      float* dst = bp + (jp / NR) * kc * NR + p * NR;
      _mm256_storeu_ps(dst, load8<D>(row + jp * es));
      _mm256_storeu_ps(dst + 8, load8<D>(row + (jp + 8) * es));
    }
    if (jp < nc) {
      float* dst = bp + (jp / NR) * kc * NR + p * NR;
      for (int64_t j = 0; j < NR; ++j) dst[j] = jp + j < nc ? load1<D>(row, jp + j) : 0.0f;
    }
  }
}

// Ap[panel][p][i] = A[i0 + panel*MR + i][p0 + p] (zero beyond mc). Full panels use 8x8 register
// transposes (rows 6, 7 are dummies); each 8-wide store writes 2 floats past its 6 that the next
// store (or the next panel, packed later, or the buffer slack) overwrites.
void pack_a(const float* a, int64_t lda, int64_t mc, int64_t kc, float* ap) {
  const int64_t kc8 = kc / 8 * 8;
  for (int64_t ip = 0; ip < mc; ip += MR) {
    float* dst = ap + (ip / MR) * kc * MR;
    const int64_t rows = std::min<int64_t>(MR, mc - ip);
    const float* src[MR];
    for (int i = 0; i < MR; ++i) src[i] = a + (ip + std::min<int64_t>(i, rows - 1)) * lda;
    if (rows == MR) {
      int64_t p = 0;
      for (; p < kc8; p += 8) {
        __m256 v[8];
        for (int i = 0; i < MR; ++i) v[i] = _mm256_loadu_ps(src[i] + p);
        v[6] = v[7] = _mm256_setzero_ps();
        transpose8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        for (int q = 0; q < 8; ++q) _mm256_storeu_ps(dst + (p + q) * MR, v[q]);
      }
      for (; p < kc; ++p)
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = src[i][p];
    } else {
      for (int64_t p = 0; p < kc; ++p)
        for (int i = 0; i < MR; ++i) dst[p * MR + i] = i < rows ? src[i][p] : 0.0f;
    }
  }
}

// C[6, 16] (+)= Ap[kc, 6]ᵀ-ish · Bp[kc, 16]; `add` selects C += vs C =. Edge tiles go through a
// local tile and only `mr` x `nr` entries are written.
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

float* aligned_buf(std::vector<float>& v, size_t n) {
  if (v.size() < n + 32) v.resize(n + 32);  // 64-byte alignment + 16 floats of slack
  auto p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

// One thread's block: C[m, nc] (+)= A[m, kr] · B[kr, j0 : j0 + nc].
template <DType D, bool kTrans>
void gemm_block(const float* a, int64_t lda, int64_t m, const void* w, int64_t ldw, int64_t j0, int64_t nc,
                int64_t kr, float* c, int64_t ldc, bool accumulate) {
  thread_local std::vector<float> abuf, bbuf;
  float* ap = aligned_buf(abuf, size_t(MC * KC));
  float* bp = aligned_buf(bbuf, size_t(KC * NC));
  for (int64_t jc = 0; jc < nc; jc += NC) {
    const int64_t ncb = std::min(NC, nc - jc);
    for (int64_t pc = 0; pc < kr; pc += KC) {
      const int64_t kc = std::min(KC, kr - pc);
      if constexpr (kTrans)
        pack_b_trans<D>(w, ldw, j0 + jc, ncb, pc, kc, bp);
      else
        pack_b_plain<D>(w, ldw, j0 + jc, ncb, pc, kc, bp);
      const bool add = accumulate || pc > 0;
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = std::min(MC, m - ic);
        pack_a(a + ic * lda + pc, lda, mc, kc, ap);
        for (int64_t jr = 0; jr < ncb; jr += NR) {
          const int nr = int(std::min<int64_t>(NR, ncb - jr));
          const float* bpp = bp + (jr / NR) * kc * NR;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = int(std::min<int64_t>(MR, mc - ir));
            ukernel(kc, ap + (ir / MR) * kc * MR, bpp, c + (ic + ir) * ldc + jc + jr, ldc, add, mr, nr);
          }
        }
      }
    }
  }
}

template <DType D, bool kTrans>
void gemm_threads(const float* a, int64_t lda, int64_t m, const void* w, int64_t ldw, int64_t ncols, int64_t kr,
                  float* c, int64_t ldc, bool accumulate) {
  const int maxt = omp_get_max_threads();
  // Work per thread must amortise the fork; tiny problems run on the calling thread.
  const double flops = 2.0 * double(m) * double(ncols) * double(kr);
  const int nt = flops < 2e6 ? 1 : maxt;
  // Columns: each thread packs (converts) only its part of the weight and all of A (cheap). An
  // A/B against splitting rows for the narrow 1152->256 shape at 2 threads showed no difference.
  const bool split_cols = ncols >= int64_t(nt) * NR * 4 || m < int64_t(nt) * MR * 2;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    if (split_cols) {
      const int64_t panels = (ncols + NR - 1) / NR;
      const int64_t p0 = panels * t / tn, p1 = panels * (t + 1) / tn;
      const int64_t j0 = p0 * NR, j1 = std::min(ncols, p1 * NR);
      if (j1 > j0) gemm_block<D, kTrans>(a, lda, m, w, ldw, j0, j1 - j0, kr, c + j0, ldc, accumulate);
    } else {
      const int64_t blocks = (m + MR - 1) / MR;
      const int64_t b0 = blocks * t / tn, b1 = blocks * (t + 1) / tn;
      const int64_t i0 = b0 * MR, i1 = std::min(m, b1 * MR);
      if (i1 > i0)
        gemm_block<D, kTrans>(a + i0 * lda, lda, i1 - i0, w, ldw, 0, ncols, kr, c + i0 * ldc, ldc, accumulate);
    }
  }
}

template <bool kTrans>
void gemm_dispatch(const float* a, int64_t lda, int64_t m, const Weight2D& w, int64_t ncols, int64_t kr, float* c,
                   int64_t ldc, bool accumulate) {
  if (m <= 0 || ncols <= 0) return;
  if (kr == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + ncols, 0.0f);
    return;
  }
  switch (w.dtype) {
    case DType::BF16: gemm_threads<DType::BF16, kTrans>(a, lda, m, w.data, w.k, ncols, kr, c, ldc, accumulate); break;
    case DType::F16: gemm_threads<DType::F16, kTrans>(a, lda, m, w.data, w.k, ncols, kr, c, ldc, accumulate); break;
    case DType::F32: gemm_threads<DType::F32, kTrans>(a, lda, m, w.data, w.k, ncols, kr, c, ldc, accumulate); break;
    default: fail("linear: weight '", w.name, "' has dtype ", dtype_name(w.dtype), ", expected F32, BF16 or F16");
  }
}

}  // namespace

void gemm_forward(const float* x, int64_t m, const Weight2D& w, float* y, bool accumulate, int64_t ldx, int64_t ldy) {
  if (ldx == 0) ldx = w.k;
  if (ldy == 0) ldy = w.n;
  gemm_dispatch<true>(x, ldx, m, w, w.n, w.k, y, ldy, accumulate);
}

void gemm_backward_input(const float* dy, int64_t m, const Weight2D& w, float* dx, bool accumulate) {
  gemm_dispatch<false>(dy, w.n, m, w, w.k, w.n, dx, w.k, accumulate);
}

}  // namespace gt::linear_detail
