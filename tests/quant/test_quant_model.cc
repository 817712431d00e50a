// Quantized models compute what f32 math computes on their dequantized weights: a fixture is
// quantized (gemmatune quantize), its dequantized weights written as an f32 model folder, and the
// golden tool runs on both (forward, KV-cached decode, greedy, LoRA logits, loss, every adapter
// gradient and one AdamW step): they agree within the fixture's f32 tolerances. Also: --quantize at
// load time gives the same model as the quantized folder; quantize -> dequantize -> quantize is
// stable; a lying folder gets a clear error.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/model/model.h"
#include "gemmatune/model/plan.h"
#include "gemmatune/model/quantize.h"
#include "gemmatune/tools/golden.h"
#include "gemmatune/util/fs.h"
#include "golden_compare.h"
#include "test_util.h"

namespace gt {
namespace {
namespace fs = std::filesystem;

// A fixture folder whose model is `model_dir` (golden.json, golden.safetensors, adapter linked).
std::string fixture_with_model(const std::string& fixture, const std::string& dir) {
  fs::create_directories(dir);
  for (const char* f : {"golden.json", "golden.safetensors"})
    fs::copy_file(fixture + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
  if (!fs::exists(dir + "/adapter")) fs::create_directory_symlink(fixture + "/adapter", dir + "/adapter");
  return dir;
}

using Param = std::tuple<std::string, std::string>;  // fixture, type
class QuantModel : public ::testing::TestWithParam<Param> {};

TEST_P(QuantModel, MatchesF32OnDequantizedWeights) {
  const auto& [name, type] = GetParam();
  const std::string fx = test::fixture(name);
  const std::string root = test::scratch("qm_" + name + "_" + type);
  const std::string qdir = fixture_with_model(fx, root + "/q"), ddir = fixture_with_model(fx, root + "/d");
  const QuantizeReport rep = quantize_folder(fx + "/model", qdir + "/model", type, false);
  int quantized = 0;
  for (const auto& r : rep.rows)
    if (r.type == type) {
      ++quantized;
      EXPECT_GT(r.rms_rel_error, 0.0) << r.name;
      EXPECT_LT(r.rms_rel_error, type == "q8_0" ? 0.01 : 0.2) << r.name;
    }
  EXPECT_GT(quantized, 5);
  EXPECT_LT(rep.bytes_out, rep.bytes_in);
  dequantize_folder(qdir + "/model", ddir + "/model", false);
  {
    const Model q = Model::load(qdir + "/model", LoadOptions{});
    EXPECT_EQ(q.quantization(), type);
    EXPECT_TRUE(q.weights().layers[0].q.quantized());
    EXPECT_TRUE(q.weights().embed.quantized());
    const Model d = Model::load(ddir + "/model", LoadOptions{});
    EXPECT_EQ(d.quantization(), "");
  }

  const std::vector<std::string> parts = {"forward", "decode", "greedy", "lora", "train"};
  const GoldenResult rq = compute_golden(qdir, parts), rd = compute_golden(ddir, parts);
  const auto gj = test::golden_json(fx);
  const double logits_atol = test::tolerance(gj, "logits_atol"), loss_atol = test::tolerance(gj, "loss_atol");
  const double grtol = test::tolerance(gj, "grads_rtol_vs_tensor_absmax");
  const double e2e_all = test::tolerance(gj, "adamw_end_to_end_atol_all_entries");
  int logits = 0, grads = 0, adamw = 0, ids = 0;
  for (const auto& [key, want] : rd.tensors) {
    ASSERT_TRUE(rq.tensors.count(key)) << key;
    const auto& got = rq.tensors.at(key);
    ASSERT_EQ(got.shape, want.shape) << key;
    if (want.is_int) {
      EXPECT_EQ(got.i32, want.i32) << key;
      ++ids;
      continue;
    }
    double amax = 0, d = 0;
    for (size_t i = 0; i < want.f32.size(); ++i) {
      amax = std::max(amax, std::fabs(double(want.f32[i])));
      d = std::max(d, std::fabs(double(want.f32[i]) - double(got.f32[i])));
    }
    auto ends = [&](const char* s) { return key.size() >= std::strlen(s) && key.rfind(s) == key.size() - std::strlen(s); };
    if (ends(".grad")) {
      EXPECT_LE(d, grtol * amax) << name << " " << type << " " << key;
      ++grads;
    } else if (ends(".adamw")) {
      EXPECT_LE(d, e2e_all) << name << " " << type << " " << key;
      ++adamw;
    } else if (key.find("loss") != std::string::npos) {
      EXPECT_LE(d, loss_atol) << name << " " << type << " " << key;
    } else {
      EXPECT_LE(d, logits_atol) << name << " " << type << " " << key;
      ++logits;
    }
  }
  EXPECT_GE(logits, 5);
  EXPECT_GT(grads, 0);
  EXPECT_GT(adamw, 0);
  EXPECT_GE(ids, 2);

  // --quantize at load time: the same blocks as the folder, hence the same results bit for bit.
  set_default_load_options(LoadOptions{type});
  const GoldenResult rl = compute_golden(fx, {"forward", "decode"});
  set_default_load_options(LoadOptions{});
  for (const char* key : {"logits", "decode_logits"})
    EXPECT_EQ(rl.tensors.at(key).f32, rq.tensors.at(key).f32) << name << " " << type << " --quantize " << key;

  // quantize -> dequantize -> quantize gives the same blocks.
  quantize_folder(ddir + "/model", root + "/r", type, false);
  const TensorStore a = TensorStore::open_folder(qdir + "/model"), b = TensorStore::open_folder(root + "/r");
  for (const auto& n : a.names()) {
    const TensorView &x = a.get(n), &y = b.get(n);
    if (x.dtype != DType::U8) continue;
    ASSERT_EQ(x.nbytes, y.nbytes) << n;
    EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0) << "round trip changed the blocks of " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantModel,
                         ::testing::Combine(::testing::Values("gemma3_causal", "gemma3_conditional", "gemma4_moe",
                                                              "gemma4_small"),
                                            ::testing::Values("q8_0", "q4_0")),
                         [](const auto& i) { return std::get<0>(i.param) + "_" + std::get<1>(i.param); });

// A quantized folder whose config or tensors lie is refused with the tensor's name.
TEST(QuantModelErrors, LyingFolder) {
  const std::string fx = test::fixture("gemma3_causal");
  const std::string root = test::scratch("qm_err");
  quantize_folder(fx + "/model", root + "/q", "q4_0", false);
  auto cfg = nlohmann::json::parse(read_file(root + "/q/config.json"));
  const std::string key = "model.layers.0.self_attn.q_proj.weight";
  ASSERT_TRUE(cfg["quantization_config"]["tensors"].contains(key));

  auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
    fs::remove_all(root + "/bad");
    fs::create_directories(root + "/bad");
    fs::copy_file(root + "/q/model.safetensors", root + "/bad/model.safetensors");
    nlohmann::json c = cfg;
    edit(c);
    write_file_atomic(root + "/bad/config.json", c.dump());
    return test::error_of([&] { Model::load(root + "/bad", LoadOptions{}); });
  };
  std::string e = with([&](nlohmann::json& c) { c["quantization_config"]["tensors"][key]["shape"] = {96, 32}; });
  EXPECT_TRUE(test::contains(e, key) && test::contains(e, "shape")) << e;
  e = with([&](nlohmann::json& c) { c["quantization_config"]["tensors"][key]["type"] = "q8_0"; });
  EXPECT_TRUE(test::contains(e, key) && test::contains(e, "expected U8")) << e;
  e = with([&](nlohmann::json& c) { c["quantization_config"]["tensors"][key]["type"] = "q3_x"; });
  EXPECT_TRUE(test::contains(e, "unknown quantization type 'q3_x'")) << e;
  e = with([&](nlohmann::json& c) { c["quantization_config"]["quant_method"] = "bitsandbytes"; });
  EXPECT_TRUE(test::contains(e, "gemmatune")) << e;
  e = with([&](nlohmann::json& c) { c["quantization_config"]["tensors"].erase(key); });
  EXPECT_TRUE(test::contains(e, key) && test::contains(e, "has shape [96, 36], expected [96, 64]")) << e;

  // quantize refuses an already quantized folder and a bad type; --quantize refuses re-quantizing.
  EXPECT_TRUE(test::contains(test::error_of([&] { quantize_folder(root + "/q", root + "/qq", "q8_0", false); }),
                             "already quantized"));
  EXPECT_TRUE(test::contains(test::error_of([&] { quantize_folder(fx + "/model", root + "/x", "q5_1", false); }),
                             "unknown quantization type"));
  EXPECT_TRUE(test::contains(test::error_of([&] { Model::load(root + "/q", LoadOptions{"q8_0"}); }),
                             "cannot re-quantize"));
  EXPECT_TRUE(test::contains(test::error_of([&] { Model::load(fx + "/model", LoadOptions{"q2"}); }),
                             "unknown quantization type"));
}

}  // namespace
}  // namespace gt

namespace gt {
namespace {
// plan with --quantize counts what the quantized folder holds, without quantizing.
TEST(QuantPlan, PlannedBytesMatchTheQuantizedFolder) {
  for (const char* name : {"gemma3_causal", "gemma4_moe"})
    for (const char* type : {"q8_0", "q4_0"}) {
      const std::string fx = test::fixture(name), out = test::scratch(std::string("qplan_") + name + type);
      quantize_folder(fx + "/model", out, type, false);
      PlanInput in;
      in.context = 64;
      in.train = true;
      in.quantize = std::string(type) == "q8_0" ? WFormat::Q8_0 : WFormat::Q4_0;
      const MemoryPlan planned = plan_memory(Model::load(fx + "/model", LoadOptions{}), in);
      in.quantize = WFormat::Dense;
      const Model q = Model::load(out, LoadOptions{});
      const MemoryPlan real = plan_memory(q, in);
      EXPECT_EQ(planned.weights_total, real.weights_total) << name << " " << type;
      EXPECT_EQ(planned.weights_resident, real.weights_resident) << name << " " << type;
      const MemoryPlan dense = plan_memory(Model::load(fx + "/model", LoadOptions{}), in);
      EXPECT_LT(planned.weights_total, dense.weights_total) << name << " " << type;
    }
}
}  // namespace
}  // namespace gt
