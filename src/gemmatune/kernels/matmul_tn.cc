#include "gemmatune/kernels/matmul_tn.h"

#include <algorithm>
#include <cstddef>
#include <vector>

namespace gt {

void matmul_tn_acc(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t T, int64_t M, int64_t N, float* c,
                   float alpha) {
  // Parallel over rows of c; each row accumulates over the tokens in double (these are the LoRA
  // weight gradients: small sums of many terms, where an f32 running sum would add noise that
  // Adam's first step amplifies on near-zero entries), then adds alpha·sum once.
#pragma omp parallel if (M * N * T > 65536)
  {
    std::vector<double> acc(static_cast<std::size_t>(N));
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const double av = a[t * lda + m];
        if (av == 0.0) continue;
        const float* br = b + t * ldb;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) acc[std::size_t(n)] += av * double(br[n]);
      }
      float* cr = c + m * N;
      for (int64_t n = 0; n < N; ++n) cr[n] = float(double(cr[n]) + double(alpha) * acc[std::size_t(n)]);
    }
  }
}

}  // namespace gt
