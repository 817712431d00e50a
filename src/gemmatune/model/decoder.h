// The one decoder loop shared by prefill, decoding, scoring and (later) training. It runs a batch
// of sequence chunks (each with its own KV cache, or none) through every layer, driven by the
// LayerSpecs; it never branches on model names.
#pragma once
#include <cstdint>
#include <vector>

#include "gemmatune/model/kv_cache.h"
#include "gemmatune/model/model.h"

namespace gt {

struct SeqChunk {
  KvCache* cache = nullptr;  // null: positions start at 0 and nothing is retained
  const int32_t* tokens = nullptr;
  int64_t n = 0;
};

enum class LogitsFor { All, Last, None };

class Decoder {
 public:
  explicit Decoder(const Model& m);

  // Runs all chunks (their tokens concatenated) and advances their caches. Logits rows: every
  // token in order (All) or the last token of each chunk (Last); returns the number of rows and
  // fills `logits` with rows * vocab_rows floats.
  int64_t forward(const std::vector<SeqChunk>& chunks, LogitsFor mode, std::vector<float>& logits);

  // MoE routing statistics: tokens routed to each expert, per layer, since construction.
  const std::vector<std::vector<int64_t>>& expert_counts() const { return expert_counts_; }
  // Times each expert's weights were run (once per forward in which any token routed to it).
  const std::vector<std::vector<int64_t>>& expert_calls() const { return expert_calls_; }
  const Model& model() const { return m_; }

 private:
  void attention_block(int64_t layer, const std::vector<SeqChunk>& chunks, int64_t T);
  void mlp_block(int64_t layer, int64_t T);
  void moe_block(int64_t layer, const float* resid, int64_t T, float* out);
  void ple_inputs(const std::vector<SeqChunk>& chunks, int64_t T);

  const Model& m_;
  std::vector<std::vector<int64_t>> expert_counts_, expert_calls_;
  // Workspace, grown as needed and reused across calls.
  std::vector<int32_t> ids_;
  std::vector<int64_t> pos_;
  std::vector<float> h_, a_, q_, attn_, o_, g_, u_, act_, f_, f2_, ple_, tmp_;
  std::vector<std::vector<float>> new_k_, new_v_;
};

}  // namespace gt
