// Forward, KV-cached decode and greedy generation against every fixture's float64 goldens.
#include <gtest/gtest.h>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/tools/golden.h"
#include "golden_compare.h"
#include "test_util.h"

using namespace gt;

class FixtureGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureGolden, ForwardDecodeGreedy) {
  const std::string dir = test::fixture(GetParam());
  auto gj = test::golden_json(dir);
  const double atol = test::tolerance(gj, "logits_atol");
  TensorStore gs = TensorStore::open_file(dir + "/golden.safetensors");
  GoldenResult r = compute_golden(dir, {"forward", "decode", "greedy"});
  for (const char* name : {"logits", "decode_prefill_logits", "decode_logits", "greedy_logits"}) {
    double d = test::max_abs_diff(gs, name, r.tensors.at(name));
    EXPECT_LE(d, atol) << GetParam() << " " << name << " max abs diff " << d;
  }
  test::expect_ids_equal(gs, "greedy_ids", r.tensors.at("greedy_ids"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureGolden,
                         ::testing::Values("gemma3_causal", "gemma3_causal_bf16", "gemma3_conditional", "gemma4_dense",
                                           "gemma4_moe", "gemma4_small"));
