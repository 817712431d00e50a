// The training loss: final RMSNorm → LM head → final logit softcap → cross-entropy against the next
// token, over the scored rows only, in chunks of rows so the [tokens, vocab] logits are never
// materialised whole (kLossChunkRows rows at a time); and its backward into the hidden states.
// Also the softcap on its own (the forward's logits).
#pragma once
#include <cstdint>
#include <vector>

#include "gemmatune/kernels/linear.h"

namespace gt {

// Logit rows materialised at once by the loss: 128 × 262144 floats = 128 MiB for Gemma's vocabulary.
// Every chunk streams (and packs) the whole LM head twice (forward and input gradient), so fewer,
// larger chunks cut that traffic: at 32 rows it was ~5% of a gemma3-1b training step.
inline constexpr int64_t kLossChunkRows = 128;

// x = cap·tanh(x / cap) over n values; cap <= 0: unchanged.
void softcap_forward(float* x, int64_t n, float cap);

// Cross-entropy of one row of raw logits l[V] against `target`, softcapped first when cap > 0
// (in place). Returns lse − l[target] (double). With `grad`, l is overwritten by the gradient of
// CE/denom with respect to the raw (pre-softcap) logits: (softmax − onehot)/denom · (1 − tanh²).
double cross_entropy_row(float* l, int64_t V, int32_t target, float cap, double denom, bool grad);

struct LmHeadLoss {
  const float* norm_weight = nullptr;  // final RMSNorm gain (effective: see kernels/rmsnorm.h)
  float eps = 1e-6f;
  const Weight2D* head = nullptr;      // [V, H]
  float softcap = 0;                   // 0: none
};

// Rows rows[i] of h [*, H] predict targets[i]. Returns Σ CE. With dh: dh[rows[i]] = dL/dh for
// L = Σ CE / denom (other rows are not written).
double cross_entropy_chunked(const LmHeadLoss& lm, const float* h, int64_t H, const int64_t* rows,
                             const int32_t* targets, int64_t n, double denom, float* dh);

}  // namespace gt
