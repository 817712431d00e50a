// The LoRA fine-tuning loop behind `gemmatune train`: data (chat template → SFT examples → packed
// batches, prepared ahead on its own thread), forward + backward through the one decoder, gradient
// accumulation normalised by trained tokens, global-norm clipping, AdamW with warmup and a
// cosine/linear/constant schedule, metrics, evaluation, atomic checkpoints and exact resume.
#pragma once
#include <cstdint>
#include <string>

#include "gemmatune/train/options.h"

namespace gt {

struct TrainSummary {
  int64_t steps = 0;            // optimizer steps done in total (resumed ones included)
  double first_loss = 0, last_loss = 0;
  double tokens_per_s = 0;
  double eval_loss = -1;        // -1: no eval data
  std::string adapter_dir;      // the final adapter (PEFT folder)
};

TrainSummary train(const std::string& model_dir, const std::string& out_dir, const TrainOptions& o);

// Learning rate at optimizer step `step` (0-based) of `total`.
double lr_at(const TrainOptions& o, int64_t step, int64_t total);

}  // namespace gt
