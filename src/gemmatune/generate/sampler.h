// Token sampling from a logits row: greedy, temperature, top-k, top-p, min-p, repetition penalty,
// OpenAI's frequency and presence penalties, and log-probabilities.
#pragma once
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

namespace gt {

struct SamplingParams {
  float temperature = 1.0f;   // <= 0 means greedy
  int64_t top_k = 0;          // 0 = off
  float top_p = 1.0f;         // 1 = off
  float min_p = 0.0f;         // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off (HF/CTRL rule: positive logits /= p, negative *= p)
  // OpenAI: logit[j] -= count[j]·frequency_penalty + (count[j] > 0)·presence_penalty, count[j] =
  // times j was sampled so far by this sampler (the generated tokens, not the prompt). 0 = off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  uint64_t seed = 0;
};

// Log-probabilities of a sampled token: log-softmax of the logits after the penalties (before
// temperature and the top-k/top-p/min-p truncation, as vLLM and OpenAI report them).
struct SampledLogprobs {
  float logprob = 0;                           // of the chosen token
  std::vector<std::pair<int32_t, float>> top;  // the `top` most likely tokens, most likely first
};

int32_t argmax(const float* logits, int64_t n);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // Picks the next token. `history` is the tokens seen so far (for the repetition penalty).
  // The sampled token counts for the frequency/presence penalties. With `lp`: its log-probability
  // and the `top_n` most likely tokens'.
  int32_t sample(const float* logits, int64_t n, const std::vector<int32_t>& history, SampledLogprobs* lp = nullptr,
                 int64_t top_n = 0);
  // The candidate set and probabilities after every filter (for tests and debugging): highest first
  // when top-k, top-p or min-p is set (they need the order), otherwise every token in id order.
  std::vector<std::pair<int32_t, float>> distribution(const float* logits, int64_t n, const std::vector<int32_t>& history) const;
  const SamplingParams& params() const { return p_; }

 private:
  std::vector<float> penalized(const float* logits, int64_t n, const std::vector<int32_t>& history) const;
  std::vector<std::pair<int32_t, float>> filter(const std::vector<float>& l, int64_t n) const;

  SamplingParams p_;
  std::unordered_map<int32_t, int64_t> counts_;  // sampled tokens
  std::mt19937_64 rng_;
};

}  // namespace gt
