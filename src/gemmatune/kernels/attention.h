// Causal multi-head attention with GQA and optional sliding window, for one sequence chunk.
// Keys/values at positions < `start` come from a cache (linear or ring storage); keys/values at
// positions start..start+C-1 come from the chunk's own freshly computed K/V. A query at position q
// sees keys p <= q, and with a window W only q - p < W (itself and the W-1 before it).
#pragma once
#include <cstdint>

namespace gt {

struct KvSource {
  const float* cache_k = nullptr;  // [cap, row] ; slot of position p: ring ? p % cap : p
  const float* cache_v = nullptr;
  int64_t cap = 0;
  bool ring = false;
  const float* new_k = nullptr;  // [C, row] (row stride `new_stride`), positions start..start+C-1
  const float* new_v = nullptr;
  int64_t new_stride = 0;
  int64_t row = 0;  // floats per cached position (= nKV * hd)
};

struct AttnShape {
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
  float scale = 1.0f;
  int64_t window = 0;  // 0 = full causal
};

// q: [C, nH*hd] (row stride q_stride); out: [C, nH*hd] (row stride out_stride).
// When `probs` is non-null, the softmax probabilities are stored there as [C, nH, start + C]
// (zeros where masked) for the backward pass.
void attention_forward(const AttnShape& s, const float* q, int64_t q_stride, int64_t C, int64_t start, const KvSource& kv,
                       float* out, int64_t out_stride, float* probs = nullptr);

}  // namespace gt

namespace gt {

// Backward of attention_forward for a cache-less chunk (start = 0): recomputes the softmax per
// query and head. dq is written; dk and dv are accumulated (+=), so KV-shared layers can add
// their gradients into their donor's. q, dq: [C, nH*hd]; k, v, dk, dv: [C, nKV*hd]; dout: [C, nH*hd].
void attention_backward(const AttnShape& s, const float* q, const float* k, const float* v, int64_t C, const float* dout,
                        float* dq, float* dk, float* dv);

}  // namespace gt
