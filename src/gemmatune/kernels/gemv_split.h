// The decode GEMVs' threading (linear_gemv.cc, linear_quant.cc, linear_quant_i8.cc): rows [0, n) of
// the weight split statically into contiguous ranges, one per OpenMP thread, run(j0, j1) on each.
// Below ~64 KiB of weight reads per call (bytes x max(1, m / 4)) the fork/join costs more than a
// second thread saves, so such calls run on the caller's thread.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace gt::linear_detail {

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
