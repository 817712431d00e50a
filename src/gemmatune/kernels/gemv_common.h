// What the decode GEMVs (linear_gemv.cc, linear_quant.cc, linear_quant_i8.cc) share: the horizontal
// sum of an accumulator, a block's f16 scale, and the threading: rows [0, n) of
// the weight split statically into contiguous ranges, one per OpenMP thread, run(j0, j1) on each.
// Below ~64 KiB of weight reads per call (bytes x max(1, m / 4)) the fork/join costs more than a
// second thread saves, so such calls run on the caller's thread.
#pragma once
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace gt::linear_detail {

// The sum of the 8 lanes of v.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The f16 value at p (a ggml block's scale: Q8_0/Q4_0 d, Q4_K d and dmin), as f32.
inline float block_scale(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

template <class Run>
void gemv_split_rows(int64_t n, int64_t weight_bytes, int64_t m, Run&& run) {
  const int64_t bytes = weight_bytes * std::max<int64_t>(1, m / 4);
  const int nt = bytes < (int64_t(64) << 10) ? 1 : int(std::min<int64_t>(omp_get_max_threads(), n));
  if (nt == 1) return run(int64_t(0), n);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    run(n * t / tn, n * (t + 1) / tn);
  }
}

}  // namespace gt::linear_detail
