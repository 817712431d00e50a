// Sampling options: seeded determinism, and that top-k / top-p / min-p really restrict the support.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "gemmatune/generate/sampler.h"
#include "gemmatune/util/error.h"

using namespace gt;

namespace {
std::vector<float> logits_for(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}
std::set<int32_t> support(Sampler& s, const std::vector<float>& l, int draws, const std::vector<int32_t>& hist = {}) {
  std::set<int32_t> seen;
  for (int i = 0; i < draws; ++i) seen.insert(s.sample(l.data(), int64_t(l.size()), hist));
  return seen;
}
}  // namespace

TEST(Sampler, GreedyIsArgmax) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  std::vector<float> l = {0.1f, 3.0f, -1.0f, 2.9f};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
  EXPECT_EQ(argmax(l.data(), 4), 1);
}

TEST(Sampler, SeededDeterminism) {
  std::vector<float> l = logits_for({0.2, 0.2, 0.2, 0.2, 0.2});
  SamplingParams p;
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<int32_t> ra, rb;
  for (int i = 0; i < 50; ++i) {
    ra.push_back(a.sample(l.data(), 5, {}));
    rb.push_back(b.sample(l.data(), 5, {}));
  }
  EXPECT_EQ(ra, rb);
  p.seed = 43;
  Sampler c(p);
  std::vector<int32_t> rc;
  for (int i = 0; i < 50; ++i) rc.push_back(c.sample(l.data(), 5, {}));
  EXPECT_NE(ra, rc);
  EXPECT_GT(std::set<int32_t>(ra.begin(), ra.end()).size(), 3u);  // it really samples
}

TEST(Sampler, TopKRestrictsSupport) {
  std::vector<float> l = logits_for({0.3, 0.25, 0.2, 0.15, 0.1});
  SamplingParams p;
  p.top_k = 2;
  Sampler s(p);
  EXPECT_EQ(support(s, l, 400), (std::set<int32_t>{0, 1}));
}

TEST(Sampler, TopPRestrictsSupport) {
  std::vector<float> l = logits_for({0.5, 0.3, 0.1, 0.06, 0.04});
  SamplingParams p;
  p.top_p = 0.75f;  // 0.5 + 0.3 reaches it: {0, 1}
  Sampler s(p);
  EXPECT_EQ(support(s, l, 400), (std::set<int32_t>{0, 1}));
  auto d = s.distribution(l.data(), 5, {});
  ASSERT_EQ(d.size(), 2u);
  EXPECT_NEAR(d[0].second, 0.5 / 0.8, 1e-5);
}

TEST(Sampler, MinPRestrictsSupport) {
  std::vector<float> l = logits_for({0.5, 0.3, 0.1, 0.06, 0.04});
  SamplingParams p;
  p.min_p = 0.15f;  // threshold 0.075: keeps 0.5, 0.3, 0.1
  Sampler s(p);
  EXPECT_EQ(support(s, l, 600), (std::set<int32_t>{0, 1, 2}));
}

TEST(Sampler, TemperatureSharpens) {
  std::vector<float> l = logits_for({0.6, 0.4});
  SamplingParams p;
  p.temperature = 0.5f;
  Sampler s(p);
  auto d = s.distribution(l.data(), 2, {});
  EXPECT_NEAR(d[0].second, 0.36 / (0.36 + 0.16), 1e-5);
}

TEST(Sampler, RepetitionPenaltyDemotesSeenTokens) {
  std::vector<float> l = {2.0f, 1.9f, -1.0f};
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 1.5f;
  Sampler s(p);
  EXPECT_EQ(s.sample(l.data(), 3, {0}), 1);  // 2.0 / 1.5 < 1.9
  EXPECT_EQ(s.sample(l.data(), 3, {}), 0);
}

TEST(Sampler, BadParametersAreRejected) {
  SamplingParams p;
  p.top_p = 0;
  EXPECT_THROW(Sampler{p}, Error);
  p = SamplingParams{};
  p.min_p = 1.5f;
  EXPECT_THROW(Sampler{p}, Error);
  p = SamplingParams{};
  p.top_k = -1;
  EXPECT_THROW(Sampler{p}, Error);
}

// Over a Gemma-sized vocabulary, top-p and min-p keep exactly the candidates (and probabilities) a
// full sort gives, although only a growing prefix is sorted; temperature alone keeps every token.
TEST(Sampler, LargeVocabularyFiltersEqualAFullSort) {
  const int64_t n = 262144;
  std::vector<float> l(static_cast<size_t>(n));
  uint32_t st = 12345;
  for (auto& v : l) {  // xorshift: flat-ish logits, so top-p needs thousands of candidates
    st ^= st << 13, st ^= st >> 17, st ^= st << 5;
    v = float(st % 100000) / 20000.0f;
  }
  l[77] = 6.0f;  // a favourite above the flat rest
  for (float top_p : {0.01f, 0.2f, 0.5f, 0.95f}) {
    for (float min_p : {0.0f, 0.05f}) {
      SamplingParams p;
      p.temperature = 0.7f;
      p.top_p = top_p;
      p.min_p = min_p;
      Sampler s(p);
      auto got = s.distribution(l.data(), n, {});
      // Reference: softmax over all, full sort (highest first, ties by id), prefix to top_p, min_p, renormalise.
      std::vector<std::pair<double, int32_t>> ref;
      double mx = -1e30, sum = 0;
      for (float v : l) mx = std::max(mx, double(v / 0.7f));
      for (int64_t i = 0; i < n; ++i) {
        const double e = std::exp(double(l[size_t(i)] / 0.7f) - mx);
        ref.push_back({e, int32_t(i)});
        sum += e;
      }
      std::sort(ref.begin(), ref.end(), [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
      size_t keep = 0;
      double cum = 0;
      while (keep < ref.size()) {
        cum += ref[keep].first / sum;
        ++keep;
        if (cum >= top_p) break;
      }
      ref.resize(keep);
      const double thr = min_p * ref[0].first;
      while (!ref.empty() && ref.back().first < thr) ref.pop_back();
      ASSERT_EQ(got.size(), ref.size()) << "top_p " << top_p << " min_p " << min_p;
      double rs = 0;
      for (const auto& r : ref) rs += r.first;
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_EQ(got[i].first, ref[i].second) << "candidate " << i << ", top_p " << top_p;
        ASSERT_NEAR(got[i].second, ref[i].first / rs, 1e-5 * ref[i].first / rs + 1e-9);
      }
      if (top_p >= 0.5f) {
        EXPECT_GT(got.size(), 512u) << "the prefix had to grow past 64 and 512";
      }
    }
  }
  SamplingParams p;
  p.temperature = 1.0f;
  Sampler s(p);
  auto all = s.distribution(l.data(), n, {});
  ASSERT_EQ(all.size(), size_t(n));
  double tot = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(all[size_t(i)].first, int32_t(i));
    tot += all[size_t(i)].second;
  }
  EXPECT_NEAR(tot, 1.0, 1e-6);
}
