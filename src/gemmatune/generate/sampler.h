// Token sampling from a logits row: greedy, temperature, top-k, top-p, min-p, repetition penalty.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace gt {

struct SamplingParams {
  float temperature = 1.0f;   // <= 0 means greedy
  int64_t top_k = 0;          // 0 = off
  float top_p = 1.0f;         // 1 = off
  float min_p = 0.0f;         // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off (HF/CTRL rule: positive logits /= p, negative *= p)
  uint64_t seed = 0;
};

int32_t argmax(const float* logits, int64_t n);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // Picks the next token. `history` is the tokens seen so far (for the repetition penalty).
  int32_t sample(const float* logits, int64_t n, const std::vector<int32_t>& history);
  // The candidate set and probabilities after every filter (for tests and debugging).
  std::vector<std::pair<int32_t, float>> distribution(const float* logits, int64_t n, const std::vector<int32_t>& history) const;
  const SamplingParams& params() const { return p_; }

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

}  // namespace gt
