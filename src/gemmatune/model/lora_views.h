// What the decoder knows of a LoRA adapter: one plain view (kernels/lora_linear.h) per adapted
// projection of each layer. The decoder never sees an Adapter; lora/ binds one to a model and
// produces these views (lora/adapter.h: bind_adapter), PEFT's shape: the adapter wraps the base.
#pragma once
#include <cstdint>
#include <vector>

#include "gemmatune/kernels/lora_linear.h"
#include "gemmatune/model/proj.h"

namespace gt {

// LoRA defaults (PEFT's are r=8, alpha=8; ours follow common SFT practice): the one place they live.
inline constexpr int64_t kDefaultLoraRank = 16;
inline constexpr double kDefaultLoraAlpha = 32;

struct LoraViews {
  bool bound = false;            // an adapter is bound (possibly adapting nothing)
  int64_t modules = 0;           // the adapter's module count: gradients come in 2·modules slots (A, B)
  double dropout = 0;            // lora_dropout, applied in training only
  std::vector<LoraView> views;   // [layer · kNumProj + proj]; an empty view where not adapted

  const LoraView& at(int64_t layer, Proj p) const { return views[size_t(layer * kNumProj + proj_index(p))]; }
  LoraView& at(int64_t layer, Proj p) { return views[size_t(layer * kNumProj + proj_index(p))]; }
};

}  // namespace gt
