// c[M,N] += alpha · Σ_t a[t,M] · b[t,N]: the weight-gradient product of LoRA (one side is the
// small rank dimension), over T tokens.
#pragma once
#include <cstdint>

namespace gt {

void matmul_tn_acc(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t T, int64_t M, int64_t N, float* c,
                   float alpha);

}  // namespace gt
