// Memory planner: what a configuration will need before anything is allocated, so commands can
// refuse one that does not fit in RAM with a clear message instead of being killed.
#pragma once
#include <cstdint>
#include <string>

#include "gemmatune/model/lora_views.h"
#include "gemmatune/model/model.h"

namespace gt {

struct PlanInput {
  int64_t context = 4096;      // tokens per sequence (prompt + generated)
  int64_t batch = 1;           // sequences
  int64_t chunk = 512;         // tokens per forward pass (prefill chunk / training sequence)
  bool train = false;          // add LoRA parameters, gradients and AdamW state
  int64_t lora_rank = kDefaultLoraRank;  // for --train: rank on every attention and MLP projection
  int64_t lora_params = 0;     // for --train: when > 0, the exact LoRA parameter count (rank_pattern and
                               // targets included), used instead of lora_rank
  bool checkpointing = false;  // for --train: only each layer's input is kept; one layer is recomputed at a time
  WFormat quantize = WFormat::Dense;  // plan the dense model as if loaded with --quantize (the policy's
                                      // tensors counted in blocks) without quantizing anything
};

struct MemoryPlan {
  size_t weights_total = 0;     // bytes of tensors in the checkpoint
  size_t weights_resident = 0;  // touched every step (stay in the page cache / RSS)
  size_t weights_cold = 0;      // mapped but only sparsely read (the per-layer-embedding table)
  size_t kv_cache = 0;          // window-aware; KV-shared layers count once
  size_t activations = 0;       // decoder workspace for one chunk, logits included
  size_t lora = 0;              // LoRA parameters + gradients + AdamW moments (train only)
  size_t runtime = 0;           // allocator, thread stacks, tokenizer, code
  size_t total() const { return weights_resident + kv_cache + activations + lora + runtime; }
  std::string report() const;
};

MemoryPlan plan_memory(const Model& m, const PlanInput& in);
// MemAvailable from /proc/meminfo (bytes), 0 if unknown.
size_t available_memory();
// Throws a clear error when the plan does not fit in the available memory.
void check_fits(const MemoryPlan& p, const std::string& what);

}  // namespace gt
