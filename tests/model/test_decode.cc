// KV-cached decoding equals the full forward: prefill lengths around the sliding-window edge,
// chunked prefill, batches of sequences of different lengths, and the cache's memory bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gemmatune/model/decoder.h"
#include "gemmatune/util/error.h"
#include "golden_compare.h"
#include "test_util.h"

using namespace gt;

namespace {

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(3, int32_t(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  t[0] = 2;  // <bos>
  for (int64_t i = 1; i < n; ++i) t[size_t(i)] = d(rng);
  return t;
}

double max_diff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

}  // namespace

class DecodeVsFull : public ::testing::TestWithParam<std::string> {};

TEST_P(DecodeVsFull, AroundTheWindowEdge) {
  const std::string dir = test::fixture(GetParam());
  const double atol = test::tolerance(test::golden_json(dir), "decode_vs_full_atol");
  Model m = Model::load(dir + "/model");
  Decoder dec(m);
  const int64_t W = m.config().sliding_window, V = m.vocab_rows();
  const int64_t L = 2 * W + 3 + 4;
  auto toks = random_tokens(L, m.config().vocab_size, 7);
  std::vector<float> full;
  dec.forward({SeqChunk{nullptr, toks.data(), L}}, LogitsFor::All, full);
  for (int64_t P : {W - 1, W, W + 1, 2 * W + 3}) {
    for (int64_t chunk : {int64_t(1), int64_t(3), P}) {
      KvCache cache(m, L);
      std::vector<float> lg;
      for (int64_t s = 0; s < P; s += chunk) {
        const int64_t n = std::min(chunk, P - s);
        dec.forward({SeqChunk{&cache, toks.data() + s, n}}, LogitsFor::All, lg);
        EXPECT_LE(max_diff(lg.data(), full.data() + s * V, n * V), atol) << "prefill P=" << P << " chunk=" << chunk << " at " << s;
      }
      for (int64_t t = P; t < L; ++t) {
        dec.forward({SeqChunk{&cache, toks.data() + t, 1}}, LogitsFor::Last, lg);
        EXPECT_LE(max_diff(lg.data(), full.data() + t * V, V), atol) << "decode step at position " << t << " after P=" << P;
      }
      // Memory: a sliding layer's cache holds at most its window; shared layers hold nothing.
      for (const LayerSpec& s : m.specs()) {
        const LayerCache& lc = cache.layer(s.index);
        if (s.kv_donor >= 0) {
          EXPECT_FALSE(lc.present) << "KV-shared layer " << s.index << " must not own a cache";
          EXPECT_EQ(lc.k.capacity(), 0u);
        } else if (s.window > 0) {
          EXPECT_LE(lc.cap, s.window) << "sliding layer " << s.index;
          EXPECT_LE(lc.k.capacity(), size_t(s.window * lc.row));
        } else {
          EXPECT_EQ(lc.cap, L);
        }
      }
    }
  }
}

TEST_P(DecodeVsFull, BatchOfDifferentLengths) {
  const std::string dir = test::fixture(GetParam());
  const double atol = test::tolerance(test::golden_json(dir), "decode_vs_full_atol");
  Model m = Model::load(dir + "/model");
  Decoder dec(m);
  const int64_t V = m.vocab_rows();
  auto a = random_tokens(13, m.config().vocab_size, 1), b = random_tokens(21, m.config().vocab_size, 2);
  std::vector<float> fa, fb, both;
  dec.forward({SeqChunk{nullptr, a.data(), 13}}, LogitsFor::All, fa);
  dec.forward({SeqChunk{nullptr, b.data(), 21}}, LogitsFor::All, fb);
  // Both prompts prefilled in one batch, each into its own cache, then decoded together.
  KvCache ca(m, 30), cb(m, 30);
  dec.forward({SeqChunk{&ca, a.data(), 9}, SeqChunk{&cb, b.data(), 17}}, LogitsFor::All, both);
  EXPECT_LE(max_diff(both.data(), fa.data(), 9 * V), atol);
  EXPECT_LE(max_diff(both.data() + 9 * V, fb.data(), 17 * V), atol);
  for (int64_t s = 0; s < 4; ++s) {
    dec.forward({SeqChunk{&ca, a.data() + 9 + s, 1}, SeqChunk{&cb, b.data() + 17 + s, 1}}, LogitsFor::Last, both);
    EXPECT_LE(max_diff(both.data(), fa.data() + (9 + s) * V, V), atol) << "seq a step " << s;
    EXPECT_LE(max_diff(both.data() + V, fb.data() + (17 + s) * V, V), atol) << "seq b step " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecodeVsFull,
                         ::testing::Values("gemma3_causal", "gemma3_causal_bf16", "gemma3_conditional", "gemma4_dense",
                                           "gemma4_moe", "gemma4_small"));

TEST(KvCache, ExceedingTheContextIsAnError) {
  Model m = Model::load(test::fixture("gemma3_causal") + "/model");
  Decoder dec(m);
  KvCache cache(m, 4);
  auto t = random_tokens(5, m.config().vocab_size, 3);
  std::vector<float> lg;
  EXPECT_THROW(dec.forward({SeqChunk{&cache, t.data(), 5}}, LogitsFor::Last, lg), Error);
}

TEST(Moe, TokensReadOnlyTheirExperts) {
  Model m = Model::load(test::fixture("gemma4_moe") + "/model");
  const auto& c = m.config();
  auto t = random_tokens(6, c.vocab_size, 5);
  {
    // One token: every MoE layer runs exactly top_k experts, once each.
    Decoder dec(m);
    std::vector<float> lg;
    dec.forward({SeqChunk{nullptr, t.data(), 1}}, LogitsFor::Last, lg);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      int64_t run = 0;
      for (int64_t e = 0; e < c.num_experts; ++e) {
        EXPECT_LE(dec.expert_calls()[size_t(l)][size_t(e)], 1);
        EXPECT_EQ(dec.expert_calls()[size_t(l)][size_t(e)], dec.expert_counts()[size_t(l)][size_t(e)]);
        run += dec.expert_calls()[size_t(l)][size_t(e)];
      }
      EXPECT_EQ(run, c.top_k_experts) << "layer " << l;
    }
  }
  {
    // A batch: each routed expert's weights are run once per forward, whatever its token count.
    Decoder dec(m);
    std::vector<float> lg;
    dec.forward({SeqChunk{nullptr, t.data(), 6}}, LogitsFor::Last, lg);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      int64_t routed = 0;
      for (int64_t e = 0; e < c.num_experts; ++e) {
        const int64_t calls = dec.expert_calls()[size_t(l)][size_t(e)], toks = dec.expert_counts()[size_t(l)][size_t(e)];
        EXPECT_EQ(calls, toks > 0 ? 1 : 0) << "layer " << l << " expert " << e;
        routed += toks;
      }
      EXPECT_EQ(routed, 6 * c.top_k_experts);
    }
  }
}
