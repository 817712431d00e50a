// The Gemma 4 MoE router (transformers Gemma4TextRouter), forward and backward. The router weights
// are frozen but the router is differentiable in its input (the residual stream):
//   z     = rmsnorm_scaleless(x) ⊙ scale · H^-½
//   probs = softmax(z · Wᵀ)                       [T, E]
//   topk  = the K largest probs (ties: lower id)  [T, K]
//   topw  = probs[topk] / Σ_k probs[topk] · per_expert_scale[topk]
#pragma once
#include <cstdint>
#include <vector>

#include "gemmatune/kernels/linear.h"

namespace gt {

struct MoeRouter {
  const Weight2D* proj = nullptr;           // [E, H]
  const float* scale = nullptr;             // [H]
  const float* per_expert_scale = nullptr;  // [E]
  int64_t E = 0, K = 0;
  float eps = 1e-6f;
};

// x [T, H] → z [T, H] and its 1/rms rs [T], probs [T, E], topk [T, K], topw [T, K].
void moe_router_forward(const MoeRouter& r, const float* x, int64_t T, int64_t H, float* z, float* rs, float* probs,
                        int32_t* topk, float* topw);

// dx [T, H] += the gradient through the router, given dL/dtopw `dw` [T, K] and, optionally, an
// extra dL/dprobs [T, E] (the load-balance loss). x, rs, probs and topk are the forward's.
void moe_router_backward(const MoeRouter& r, const float* x, const float* rs, const float* probs, const int32_t* topk,
                         const float* dw, const float* dprobs, int64_t T, int64_t H, float* dx);

// The experts' outputs, one row per (token, slot) in `slots` [T·K, H], summed per token:
// out[t] = Σ_k w[t,k]·slots[t·K + k] (w = null: weight 1), the slots of a token added in ascending
// expert id (topk [T, K]): the order of a serial loop over the experts, whatever order they ran in.
void moe_combine_slots(const int32_t* topk, const float* topw, const float* slots, int64_t T, int64_t K, int64_t H,
                       float* out);

}  // namespace gt
