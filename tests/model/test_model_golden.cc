// Forward, KV-cached decode and greedy generation against every fixture's float64 goldens.
#include <gtest/gtest.h>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/tools/golden.h"
#include "gemmatune/train/adamw.h"
#include "gemmatune/util/fs.h"
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

// LoRA applied unmerged (logits, greedy), the training step (loss, every adapter gradient, one
// AdamW step) and the merge, against the same goldens.
TEST_P(FixtureGolden, LoraTrainMerge) {
  const std::string dir = test::fixture(GetParam());
  auto gj = test::golden_json(dir);
  TensorStore gs = TensorStore::open_file(dir + "/golden.safetensors");
  GoldenResult r = compute_golden(dir, {"lora", "train", "merge"});
  const double latol = test::tolerance(gj, "logits_atol");
  for (const char* name : {"lora_logits", "lora_greedy_logits"}) {
    double d = test::max_abs_diff(gs, name, r.tensors.at(name));
    EXPECT_LE(d, latol) << GetParam() << " " << name << " max abs diff " << d;
  }
  test::expect_ids_equal(gs, "lora_greedy_ids", r.tensors.at("lora_greedy_ids"));
  const double loss_atol = test::tolerance(gj, "loss_atol");
  EXPECT_NEAR(r.tensors.at("loss").f32[0], gs.get("loss").to_floats()[0], loss_atol);
  EXPECT_NEAR(r.tensors.at("base_loss").f32[0], gs.get("base_loss").to_floats()[0], loss_atol);

  const double grtol = test::tolerance(gj, "grads_rtol_vs_tensor_absmax");
  const double e2e_atol = test::tolerance(gj, "adamw_end_to_end_atol");
  const double e2e_all = test::tolerance(gj, "adamw_end_to_end_atol_all_entries");
  const double e2e_min_g = test::tolerance(gj, "adamw_end_to_end_applies_where_abs_golden_grad_ge");
  int grads_checked = 0;
  for (const auto& [key, info] : gj.at("lora").at("keys").items()) {
    (void)info;
    const auto& got = r.tensors.at(key + ".grad");
    const std::vector<float> want = gs.get(key + ".grad").to_floats();
    ASSERT_EQ(got.f32.size(), want.size()) << key;
    double amax = 0, d = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      amax = std::max(amax, std::fabs(double(want[i])));
      d = std::max(d, std::fabs(double(want[i]) - double(got.f32[i])));
    }
    EXPECT_LE(d, grtol * amax) << GetParam() << " grad " << key << " max diff " << d << " absmax " << amax;
    const std::vector<float> wa = gs.get(key + ".adamw").to_floats();
    const auto& ga = r.tensors.at(key + ".adamw").f32;
    double da = 0, dall = 0;
    for (size_t i = 0; i < wa.size(); ++i) {
      const double e = std::fabs(double(wa[i]) - double(ga[i]));
      dall = std::max(dall, e);
      if (std::fabs(want[i]) >= e2e_min_g) da = std::max(da, e);
    }
    EXPECT_LE(da, e2e_atol) << GetParam() << " adamw " << key;
    EXPECT_LE(dall, e2e_all) << GetParam() << " adamw (all entries) " << key;
    ++grads_checked;
  }
  EXPECT_GT(grads_checked, 0);
  const double matol = test::tolerance(gj, "merged_atol");
  int merged = 0;
  for (const auto& [name, t] : r.tensors) {
    if (name.size() < 7 || name.compare(name.size() - 7, 7, ".merged") != 0) continue;
    EXPECT_LE(test::max_abs_diff(gs, name, t), matol) << GetParam() << " " << name;
    ++merged;
  }
  EXPECT_GT(merged, 0);
}

// AdamW fed the golden gradients reproduces the golden step (bias correction, decoupled decay).
TEST_P(FixtureGolden, AdamWFromGoldenGrads) {
  const std::string dir = test::fixture(GetParam());
  auto gj = test::golden_json(dir);
  TensorStore gs = TensorStore::open_file(dir + "/golden.safetensors");
  TensorStore ad = TensorStore::open_file(dir + "/adapter/adapter_model.safetensors");
  const auto& tr = gj.at("train");
  AdamW opt(golden_adamw_config(gj));
  std::vector<std::vector<float>> params, grads;
  std::vector<std::string> keys;
  for (const auto& [key, info] : gj.at("lora").at("keys").items()) {
    (void)info;
    keys.push_back(key);
    params.push_back(ad.get(key).to_floats());
    grads.push_back(gs.get(key + ".grad").to_floats());
  }
  std::vector<std::vector<float>*> ptrs;
  for (auto& p : params) ptrs.push_back(&p);
  opt.step(ptrs, grads, tr.at("lr").get<double>());
  const double atol = test::tolerance(gj, "adamw_from_golden_grads_atol");
  for (size_t i = 0; i < keys.size(); ++i) {
    std::vector<float> want = gs.get(keys[i] + ".adamw").to_floats();
    double d = 0;
    for (size_t j = 0; j < want.size(); ++j) d = std::max(d, std::fabs(double(want[j]) - double(params[i][j])));
    EXPECT_LE(d, atol) << keys[i];
  }
}

// `golden --adapter DIR --adapter-scale S`: the lora part with scale 0 is the base model's forward,
// an adapter folder given by path is used instead of the fixture's, and a wrong path is an error.
TEST(GoldenCli, AdapterAndScaleFlags) {
  const std::string dir = test::fixture("gemma3_causal");
  auto gj = test::golden_json(dir);
  TensorStore gs = TensorStore::open_file(dir + "/golden.safetensors");
  const double atol = test::tolerance(gj, "logits_atol");
  const std::string out0 = test::scratch("golden_scale0.safetensors"), out1 = test::scratch("golden_path.safetensors");
  const std::string log = test::scratch("golden_cli.log");
  auto golden = [&](const std::string& args, const std::string& out) {
    std::string cmd = "'";  // built with append (GCC 12 -O3 misreports long + chains)
    cmd.append(test::binary()).append("' golden '").append(dir).append("' --parts lora --out '").append(out);
    cmd.append("' ").append(args).append(" >'").append(log).append("' 2>&1");
    return std::system(cmd.c_str());
  };
  ASSERT_EQ(golden("--adapter-scale 0", out0), 0) << read_file(log);
  TensorStore s0 = TensorStore::open_file(out0);
  GoldenResult::Tensor base;
  base.shape = s0.get("lora_logits").shape;
  base.f32 = s0.get("lora_logits").to_floats();
  EXPECT_LE(test::max_abs_diff(gs, "logits", base), atol);  // no adapter contribution
  EXPECT_GT(test::max_abs_diff(gs, "lora_logits", base), atol);  // ... which the fixture's adapter changes
  ASSERT_EQ(golden("--adapter '" + dir + "/adapter'", out1), 0) << read_file(log);
  TensorStore s1 = TensorStore::open_file(out1);
  GoldenResult::Tensor lora;
  lora.shape = s1.get("lora_logits").shape;
  lora.f32 = s1.get("lora_logits").to_floats();
  EXPECT_LE(test::max_abs_diff(gs, "lora_logits", lora), atol);
  EXPECT_NE(golden("--adapter '" + dir + "/no_such_adapter'", out1), 0);
  EXPECT_NE(read_file(log).find("no_such_adapter"), std::string::npos) << read_file(log);
}
