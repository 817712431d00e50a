// Mixed-adapter LoRA for a batch of few rows (decode steps of a serving batch): several adapters,
// each over its own contiguous rows, y[rows of g] += scale_g·(x[rows of g]·A_gᵀ)·B_gᵀ, in ONE
// parallel region for all groups (one fork/join per projection instead of two per adapter, which
// dominates when there are many adapters and few rows). Same result as lora_linear_forward per
// group up to f32 summation order. Forward only, no dropout (inference).
#pragma once
#include <cstdint>
#include <vector>

#include "gemmatune/kernels/lora_linear.h"

namespace gt {

struct LoraGroup {
  const LoraView* view = nullptr;  // null or empty: the group has no LoRA here
  int64_t t0 = 0, t1 = 0;          // its rows of x and y
};

// x: [*, in] (row stride in), y: [*, out] (row stride out); every view has this in and out.
// `t` is workspace (grown as needed).
void lora_linear_forward_grouped(const LoraGroup* groups, int64_t n_groups, const float* x, int64_t in, float* y,
                                 int64_t out, std::vector<float>& t);

}  // namespace gt
