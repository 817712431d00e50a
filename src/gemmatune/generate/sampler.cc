#include "gemmatune/generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "gemmatune/util/error.h"

namespace gt {

int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return int32_t(best);
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {
  GT_CHECK(p.top_k >= 0, "top-k must be >= 0, got ", p.top_k);
  GT_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "top-p must be in (0, 1], got ", p.top_p);
  GT_CHECK(p.min_p >= 0.0f && p.min_p < 1.0f, "min-p must be in [0, 1), got ", p.min_p);
  GT_CHECK(p.repetition_penalty > 0.0f, "repetition penalty must be > 0, got ", p.repetition_penalty);
  GT_CHECK(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f, "frequency penalty must be in [-2, 2], got ",
           p.frequency_penalty);
  GT_CHECK(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f, "presence penalty must be in [-2, 2], got ",
           p.presence_penalty);
}

std::vector<float> Sampler::penalized(const float* logits, int64_t n, const std::vector<int32_t>& history) const {
  std::vector<float> l(logits, logits + n);
  if (p_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t id : seen)
      if (id >= 0 && id < n) l[size_t(id)] = l[size_t(id)] > 0 ? l[size_t(id)] / p_.repetition_penalty : l[size_t(id)] * p_.repetition_penalty;
  }
  if (p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f)
    for (const auto& [id, c] : counts_)
      if (id >= 0 && id < n) l[size_t(id)] -= float(c) * p_.frequency_penalty + p_.presence_penalty;
  return l;
}

std::vector<std::pair<int32_t, float>> Sampler::distribution(const float* logits, int64_t n,
                                                               const std::vector<int32_t>& history) const {
  return filter(penalized(logits, n, history), n);
}

std::vector<std::pair<int32_t, float>> Sampler::filter(const std::vector<float>& l, int64_t n) const {
  std::vector<std::pair<int32_t, float>> cand;
  if (p_.temperature <= 0.0f) {
    cand.push_back({argmax(l.data(), n), 1.0f});
    return cand;
  }
  cand.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) cand.push_back({int32_t(i), l[size_t(i)] / p_.temperature});
  // Highest first, ties by id. Only as much of the order as a filter needs is established: a full
  // sort of a 262k vocabulary costs ~20 ms per token, more than a decode step of a small model.
  auto by_value = [](const auto& a, const auto& b) { return a.second > b.second || (a.second == b.second && a.first < b.first); };
  size_t sorted = 0;  // cand[0, sorted) holds the `sorted` highest, in order
  if (p_.top_k > 0 && p_.top_k < n) {
    std::partial_sort(cand.begin(), cand.begin() + p_.top_k, cand.end(), by_value);
    cand.resize(size_t(p_.top_k));
    sorted = cand.size();
  }
  // Softmax over the candidates.
  float mx = cand.front().second;
  for (const auto& c : cand) mx = std::max(mx, c.second);
  double sum = 0;
  for (auto& c : cand) sum += (c.second = std::exp(c.second - mx));
  for (auto& c : cand) c.second = float(c.second / sum);
  if (p_.top_p < 1.0f) {
    // The smallest prefix of the sorted order that holds top_p of the mass: sort a growing prefix
    // (64, 512, ... candidates) until it holds that much.
    size_t k = sorted ? sorted : std::min(cand.size(), size_t(64));
    for (;;) {
      if (k > sorted) {
        std::partial_sort(cand.begin(), cand.begin() + std::ptrdiff_t(k), cand.end(), by_value);
        sorted = k;
      }
      double cum = 0;
      size_t keep = 0;
      while (keep < k) {
        cum += cand[keep].second;
        ++keep;
        if (cum >= p_.top_p) break;
      }
      if (cum >= p_.top_p || k == cand.size()) {
        cand.resize(keep);
        sorted = keep;
        break;
      }
      k = std::min(cand.size(), k * 8);
    }
  }
  if (p_.min_p > 0.0f) {
    float top = 0.0f;
    for (const auto& c : cand) top = std::max(top, c.second);
    const float thr = p_.min_p * top;
    cand.erase(std::remove_if(cand.begin(), cand.end(), [&](const auto& c) { return c.second < thr; }), cand.end());
    if (sorted < cand.size()) std::sort(cand.begin(), cand.end(), by_value);
    sorted = cand.size();
  }
  // Without top-k / top-p / min-p every token stays a candidate, in id order (no sort needed).
  double s = 0;
  for (auto& c : cand) s += c.second;
  for (auto& c : cand) c.second = float(c.second / s);
  return cand;
}

int32_t Sampler::sample(const float* logits, int64_t n, const std::vector<int32_t>& history, SampledLogprobs* lp,
                        int64_t top_n) {
  const std::vector<float> l = penalized(logits, n, history);
  auto cand = filter(l, n);
  int32_t pick = cand.back().first;
  if (cand.size() == 1) {
    pick = cand[0].first;
  } else {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    double r = u(rng_), cum = 0;
    for (const auto& c : cand) {
      cum += c.second;
      if (r < cum) {
        pick = c.first;
        break;
      }
    }
  }
  ++counts_[pick];
  if (lp) {
    // log-softmax in double: logprob[j] = l[j] - max - log Σ exp(l - max)
    const float mx = *std::max_element(l.begin(), l.end());
    double sum = 0;
    for (float v : l) sum += std::exp(double(v) - mx);
    const double lse = double(mx) + std::log(sum);
    lp->logprob = float(std::min(0.0, double(l[size_t(pick)]) - lse));
    lp->top.clear();
    const int64_t k = std::min(top_n, n);
    if (k > 0) {
      std::vector<int32_t> idx(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = int32_t(i);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
        return l[size_t(a)] > l[size_t(b)] || (l[size_t(a)] == l[size_t(b)] && a < b);
      });
      for (int64_t i = 0; i < k; ++i)
        lp->top.push_back({idx[size_t(i)], float(std::min(0.0, double(l[size_t(idx[size_t(i)])]) - lse))});
    }
  }
  return pick;
}

}  // namespace gt
