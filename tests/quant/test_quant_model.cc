// Quantized models compute what f32 math computes on their dequantized weights: a fixture is
// quantized (gemmatune quantize), its dequantized weights written as an f32 model folder, and the
// golden tool runs on both (forward, KV-cached decode, greedy, LoRA logits, loss, every adapter
// gradient and one AdamW step): they agree within the fixture's f32 tolerances. Also: --quantize at
// load time gives the same model as the quantized folder; quantize -> dequantize -> quantize is
// stable (Q4_K: bounded, see check_round_trip); a lying folder gets a clear error. Q4_K runs on a
// widened fixture (rows of 256 values) and falls back to Q4_0 on rows that are not.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/model/model.h"
#include "gemmatune/model/plan.h"
#include "gemmatune/model/quantize.h"
#include "gemmatune/quant/blocks.h"
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

// The gemma3_causal fixture widened so that Q4_K applies (every fixture's hidden size is 64, not a
// whole 256-value super-block): hidden 64 -> 256, attention 4 x 24 -> 4 x 64 = 256 (kv 48 -> 128),
// intermediate 96 -> 288. 288 is not a multiple of 256, so down_proj takes the Q4_0 fallback and
// the model holds both formats. Weights and adapter are seeded random with each tensor's RMS
// (matrices scaled by sqrt(k_old / k_new)); inputs, decode/greedy lengths, AdamW settings and
// tolerances are the fixture's (golden.json / golden.safetensors).
std::string wide_fixture() {
  const std::string fx = test::fixture("gemma3_causal"), out = test::scratch("qm_wide_fixture");
  if (fs::exists(out + "/golden.json")) return out;
  fs::create_directories(out + "/model");
  fs::create_directories(out + "/adapter");
  auto cfg = nlohmann::json::parse(read_file(fx + "/model/config.json"));
  cfg["hidden_size"] = 256;
  cfg["intermediate_size"] = 288;
  cfg["head_dim"] = 64;
  write_file_atomic(out + "/model/config.json", cfg.dump(2));
  auto new_dim = [](const std::string& name, int64_t d) -> int64_t {
    switch (d) {
      case 64: return 256;
      case 96: return name.find(".mlp.") != std::string::npos ? 288 : 256;
      case 48: return 128;
      case 24: return 64;
      default: return d;
    }
  };
  std::mt19937 rng(20261202);
  auto widen = [&](const std::string& src, const std::string& dst, bool adapter) {
    const TensorStore st = TensorStore::open_file(src);
    std::vector<std::vector<float>> keep;
    std::vector<TensorOut> outs;
    const auto names = st.names();
    keep.reserve(names.size());
    for (const auto& n : names) {
      const TensorView& v = st.get(n);
      const std::vector<float> old = v.to_floats();
      double ss = 0;
      for (float x : old) ss += double(x) * double(x);
      double sd = std::max(std::sqrt(ss / double(old.size())), adapter ? 0.01 : 0.0);
      std::vector<int64_t> shape = v.shape;
      for (auto& d : shape) d = new_dim(n, d);
      const bool embed = n.find("embed_tokens") != std::string::npos;
      if (shape.size() == 2 && !embed) sd *= std::sqrt(double(v.shape[1]) / double(shape[1]));
      std::normal_distribution<float> nd(0.0f, float(sd));
      int64_t numel = 1;
      for (auto d : shape) numel *= d;
      keep.emplace_back(size_t(numel));
      for (auto& x : keep.back()) x = nd(rng);
      outs.push_back(TensorOut{n, DType::F32, shape, keep.back().data(), keep.back().size() * 4});
    }
    write_safetensors(dst, outs);
  };
  widen(fx + "/model/model.safetensors", out + "/model/model.safetensors", false);
  widen(fx + "/adapter/adapter_model.safetensors", out + "/adapter/adapter_model.safetensors", true);
  fs::copy_file(fx + "/adapter/adapter_config.json", out + "/adapter/adapter_config.json");
  fs::copy_file(fx + "/golden.safetensors", out + "/golden.safetensors");
  fs::copy_file(fx + "/golden.json", out + "/golden.json");  // last: marks the folder complete
  return out;
}

// quantize -> dequantize -> quantize. Q8_0 / Q4_0: the same blocks. Q4_K: not a fixed point (nor
// is it in ggml: the scale/min fit of dequantized values can pick another pair; see
// test_quant_blocks.cc); what holds is that the second pass moves each tensor's values by less
// than the first pass's quantization error (RMS) and leaves most super-blocks unchanged.
void check_round_trip(const std::string& dense, const std::string& qdir, const std::string& ddir,
                      const std::string& rdir, const std::string& type) {
  quantize_folder(ddir, rdir, type, false);
  const TensorStore a = TensorStore::open_folder(qdir), b = TensorStore::open_folder(rdir);
  const TensorStore x0 = TensorStore::open_folder(dense);
  const auto qc = nlohmann::json::parse(read_file(qdir + "/config.json"))["quantization_config"]["tensors"];
  for (const auto& n : a.names()) {
    const TensorView &x = a.get(n), &y = b.get(n);
    if (x.dtype != DType::U8) continue;
    ASSERT_EQ(x.nbytes, y.nbytes) << n;
    const std::string t = qc[n]["type"].get<std::string>();
    if (t != "q4_k") {
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0) << "round trip changed the " << t << " blocks of " << n;
      continue;
    }
    const auto bt = quant::BlockType::Q4_K;
    const std::vector<float> orig = x0.get(n).to_floats();
    const int64_t cnt = int64_t(orig.size());
    std::vector<float> y1(orig.size()), y2(orig.size());
    quant::dequantize(bt, static_cast<const uint8_t*>(x.data), cnt, y1.data());
    quant::dequantize(bt, static_cast<const uint8_t*>(y.data), cnt, y2.data());
    double e1 = 0, e2 = 0;
    for (size_t i = 0; i < orig.size(); ++i) {
      e1 += double(orig[i] - y1[i]) * double(orig[i] - y1[i]);
      e2 += double(y2[i] - y1[i]) * double(y2[i] - y1[i]);
    }
    EXPECT_LT(e2, e1) << "round trip moved the values of " << n << " more than quantization did";
    int64_t changed = 0;
    for (int64_t blk = 0; blk < cnt / 256; ++blk)
      changed += std::memcmp(static_cast<const uint8_t*>(x.data) + 144 * blk,
                             static_cast<const uint8_t*>(y.data) + 144 * blk, 144) != 0;
    EXPECT_LE(changed, cnt / 256 / 4) << "round trip changed " << changed << " of " << cnt / 256
                                      << " super-blocks of " << n;
  }
}

// The quantized fixture vs its dequantized f32 twin: golden parts within the f32 tolerances;
// --quantize at load time gives the folder's results bit for bit; the round trip.
void check_quant_model(const std::string& fx, const std::string& name, const std::string& type,
                       const std::string& want_quantization) {
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
    EXPECT_EQ(q.quantization(), want_quantization);
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

  check_round_trip(fx + "/model", qdir + "/model", ddir + "/model", root + "/r", type);
}

using Param = std::tuple<std::string, std::string>;  // fixture, type
class QuantModel : public ::testing::TestWithParam<Param> {};

TEST_P(QuantModel, MatchesF32OnDequantizedWeights) {
  const auto& [name, type] = GetParam();
  check_quant_model(test::fixture(name), name, type, type);
}

// Q4_K (and its Q4_0 fallback for down_proj, k = 288) on the widened fixture.
TEST(QuantModelQ4K, MatchesF32OnDequantizedWeights) {
  const std::string fx = wide_fixture();
  {
    const Model m = Model::load(fx + "/model", LoadOptions{"q4_k"});
    const auto& l = m.weights().layers[0];
    EXPECT_EQ(l.q.format, WFormat::Q4_K);
    EXPECT_EQ(l.o.format, WFormat::Q4_K);
    EXPECT_EQ(l.gate.format, WFormat::Q4_K);
    EXPECT_EQ(l.down.format, WFormat::Q4_0);  // k = 288
    EXPECT_EQ(m.weights().embed.format, WFormat::Q4_K);
  }
  check_quant_model(fx, "gemma3_wide", "q4_k", "q4_k,q4_0");
}

// With rows of 64 / 96 values, q4_k gives every tensor the Q4_0 fallback: the same blocks as
// --type q4_0, the config says so, and --quantize q4_k loads the folder (no re-quantize error).
TEST(QuantModelQ4K, NarrowRowsFallBackToQ4_0) {
  const std::string fx = test::fixture("gemma3_causal"), root = test::scratch("qm_q4k_fallback");
  const QuantizeReport rep = quantize_folder(fx + "/model", root + "/k", "q4_k", false);
  quantize_folder(fx + "/model", root + "/4", "q4_0", false);
  int q4 = 0;
  for (const auto& r : rep.rows) {
    EXPECT_NE(r.type, "q4_k") << r.name;
    q4 += r.type == "q4_0";
  }
  EXPECT_GT(q4, 5);
  const auto cfg = nlohmann::json::parse(read_file(root + "/k/config.json"))["quantization_config"];
  EXPECT_EQ(cfg["type"], "q4_k");
  EXPECT_TRUE(cfg.contains("fallback"));
  EXPECT_EQ(cfg["tensors"]["model.layers.0.self_attn.q_proj.weight"]["type"], "q4_0");
  const TensorStore a = TensorStore::open_folder(root + "/k"), b = TensorStore::open_folder(root + "/4");
  for (const auto& n : a.names()) {
    if (a.get(n).dtype != DType::U8) continue;
    EXPECT_EQ(std::memcmp(a.get(n).data, b.get(n).data, a.get(n).nbytes), 0) << n;
  }
  EXPECT_EQ(Model::load(root + "/k", LoadOptions{"q4_k"}).quantization(), "q4_0");
  EXPECT_EQ(Model::load(fx + "/model", LoadOptions{"q4_k"}).quantization(), "q4_0");
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
  e = with([&](nlohmann::json& c) { c["quantization_config"]["tensors"][key]["type"] = "q4_k"; });
  EXPECT_TRUE(test::contains(e, key) && test::contains(e, "not a multiple of 256")) << e;
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
  for (const char* name : {"gemma3_causal", "gemma4_moe", "gemma3_wide"})
    for (const char* type : {"q8_0", "q4_0", "q4_k"}) {
      const std::string fx = std::string(name) == "gemma3_wide" ? wide_fixture() : test::fixture(name);
      const std::string out = test::scratch(std::string("qplan_") + name + type);
      quantize_folder(fx + "/model", out, type, false);
      PlanInput in;
      in.context = 64;
      in.train = true;
      const std::string t = type;
      in.quantize = t == "q8_0" ? WFormat::Q8_0 : t == "q4_0" ? WFormat::Q4_0 : WFormat::Q4_K;
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
