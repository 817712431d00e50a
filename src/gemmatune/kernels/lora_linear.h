// LoRA next to a frozen Linear, unmerged (PEFT tuners/lora/layer.py): y += scale·(x·Aᵀ)·Bᵀ, and its
// backward (input gradient and the A/B gradients), over a plain view of the adapter's tensors.
// Routed experts (PEFT ParamWrapper over fused expert weights) are the same product on expert e's
// slices: A_e = rows [e·r, (e+1)·r) of A, B_e[:, k] = B[:, k·E + e]. The caller (the decoder) runs
// the frozen base product itself; these functions add the adapter's part. Workspace comes from a
// LoraScratch the caller owns and reuses: nothing is allocated per call once it has grown.
#pragma once
#include <cstdint>
#include <vector>

namespace gt {

struct LoraView {
  const float* A = nullptr;  // [experts·r, in] (expert-major rows; PEFT layout)
  const float* B = nullptr;  // [out, r·experts] (rank-major columns: B.reshape(out, r, E))
  int64_t r = 0, in = 0, out = 0, experts = 1;
  float scale = 1;           // alpha/r (or alpha/sqrt(r), rsLoRA) times the adapter's run-time scale
  int64_t slot = -1;         // the module's index in its adapter: gradient slots 2·slot (A) and 2·slot+1 (B),
                             // and the dropout stream
  explicit operator bool() const { return A != nullptr; }
  int64_t a_size() const { return experts * r * in; }
  int64_t b_size() const { return out * r * experts; }
};

// Training-time dropout on the adapter's input (lora_B(lora_A(dropout(x))), the base path sees x).
// The mask is a pure function of (seed, view.slot, t, i): see kernels/dropout.h.
struct LoraDropout {
  double p = 0;
  uint64_t seed = 0;
};

// Reused workspace (grown as needed).
struct LoraScratch {
  std::vector<float> t, ts, xd, dxd, u, bcol, dA, dB;
};

// y[T, out] += scale·(xd·Aᵀ)·Bᵀ with xd = dropout(x) when `drop` (p > 0) else x. `t_save` (may be
// null): receives xd·Aᵀ [T, r] for the backward.
void lora_linear_forward(const LoraView& v, const float* x, int64_t T, float* y, float* t_save,
                         const LoraDropout* drop, LoraScratch& ws);
// Given dy [T, out] and the forward's x and t_save: dx[T, in] += the adapter's input gradient;
// gA [r, in] += dL/dA and gB [out, r] += dL/dB. `drop` as in the forward (the same mask is redrawn).
void lora_linear_backward(const LoraView& v, const float* x, const float* t_save, const float* dy, int64_t T,
                          float* dx, float* gA, float* gB, const LoraDropout* drop, LoraScratch& ws);

// Expert e of a fused-experts view (no dropout, as PEFT's ParamWrapper): y[n, out] += scale·(x·A_eᵀ)·B_eᵀ.
void lora_expert_forward(const LoraView& v, int64_t e, const float* x, int64_t n, float* y, float* t_save,
                         LoraScratch& ws);
// Its backward: dx += input gradient; gA [E·r, in] and gB [out, r·E] (whole tensors) get expert e's part.
void lora_expert_backward(const LoraView& v, int64_t e, const float* x, const float* t_save, const float* dy,
                          int64_t n, float* dx, float* gA, float* gB, LoraScratch& ws);

}  // namespace gt
