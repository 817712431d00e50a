// Loading model folders: both config.json styles, defaults, nested text_config, prefixes, and
// every bad-input case producing a clear error that names the file/tensor and what was expected.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

using namespace gt;
using json = nlohmann::json;

namespace {

std::string fresh_dir(const std::string& name) {
  std::string d = test::scratch("load_" + name);
  std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str());
  return d;
}

// Copies a fixture model, letting `edit` change the tensor list and config before writing.
std::string mutated(const std::string& fixture, const std::string& name,
                    const std::function<void(std::vector<TensorOut>&, json&)>& edit) {
  const std::string src = test::fixture(fixture) + "/model";
  TensorStore s = TensorStore::open_folder(src);
  std::vector<TensorOut> ts;
  for (const auto& n : s.names()) {
    const TensorView& v = s.get(n);
    ts.push_back(TensorOut{n, v.dtype, v.shape, v.data, v.nbytes});
  }
  json cfg = json::parse(read_file(src + "/config.json"));
  edit(ts, cfg);
  std::string d = fresh_dir(name);
  write_safetensors(d + "/model.safetensors", ts);
  write_file_atomic(d + "/config.json", cfg.dump());
  return d;
}

std::string load_error(const std::string& dir) {
  try {
    Model::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void erase_tensor(std::vector<TensorOut>& ts, const std::string& name) {
  ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const TensorOut& t) { return t.name == name; }), ts.end());
}

}  // namespace

TEST(Config, OldStyleGemma3) {
  ModelConfig c = load_config(test::fixture("gemma3_causal") + "/model");
  EXPECT_EQ(c.family, Family::Gemma3);
  EXPECT_TRUE(c.causal_lm);
  ASSERT_EQ(c.layer_types.size(), 7u);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(c.layer_types[size_t(i)], i == 5 ? AttnType::Full : AttnType::Sliding) << i;
  EXPECT_EQ(c.rope_full.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_full.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_full.theta, 1e6);
  EXPECT_EQ(c.rope_sliding.type, "default");
  EXPECT_DOUBLE_EQ(c.rope_sliding.theta, 1e4);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_ids, (std::vector<int32_t>{1, 106}));
  EXPECT_DOUBLE_EQ(c.query_pre_attn_scalar, 48);
}

TEST(Config, NewStyleNestedTextConfig) {
  ModelConfig c = load_config(test::fixture("gemma3_conditional") + "/model");
  EXPECT_FALSE(c.causal_lm);
  EXPECT_EQ(c.vocab_size, 320);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.layer_types[2], AttnType::Full);
  EXPECT_EQ(c.rope_full.type, "linear");
  Model m = Model::load(test::fixture("gemma3_conditional") + "/model");
  EXPECT_EQ(m.key_prefix(), "model.language_model.");
}

TEST(Config, DefaultsFollowTransformers) {
  json g3 = {{"architectures", {"Gemma3ForConditionalGeneration"}}, {"text_config", {{"hidden_size", 2560}, {"num_hidden_layers", 34}}}};
  ModelConfig c = parse_config(g3, "mem");
  EXPECT_EQ(c.vocab_size, 262208);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_DOUBLE_EQ(c.query_pre_attn_scalar, 256);
  EXPECT_EQ(c.layer_types[5], AttnType::Full);
  EXPECT_EQ(c.layer_types[33], AttnType::Sliding);  // Gemma 3 does not force the last layer
  json g4 = {{"architectures", {"Gemma4ForConditionalGeneration"}}, {"text_config", {{"num_hidden_layers", 7}}}};
  ModelConfig d = parse_config(g4, "mem");
  EXPECT_EQ(d.hidden_size_per_layer_input, 256);  // PLE on by default
  EXPECT_EQ(d.global_head_dim, 512);
  EXPECT_EQ(d.layer_types[6], AttnType::Full);  // Gemma 4 forces the last layer to full attention
  EXPECT_EQ(d.rope_full.type, "proportional");
  EXPECT_DOUBLE_EQ(d.rope_full.partial_rotary_factor, 0.25);
  EXPECT_EQ(d.layer_head_dim(6), 512);
  EXPECT_EQ(d.layer_head_dim(0), 256);
}

TEST(Config, PerLayerConfigOverrides) {
  json g4 = {{"architectures", {"Gemma4ForCausalLM"}},
             {"num_hidden_layers", 6}, {"num_attention_heads", 8}, {"num_key_value_heads", 4},
             {"per_layer_config", {{"5", {{"head_dim", 128}, {"num_key_value_heads", 2}}}}}};
  ModelConfig c = parse_config(g4, "mem");
  EXPECT_EQ(c.layer_head_dim(5), 128);
  EXPECT_EQ(c.layer_kv_heads(5), 2);
  EXPECT_EQ(c.layer_kv_heads(0), 4);
}

TEST(Config, GenerationConfigAddsEosIds) {
  std::string d = fresh_dir("gencfg");
  write_file_atomic(d + "/config.json", read_file(test::fixture("gemma3_conditional") + "/model/config.json"));
  write_file_atomic(d + "/generation_config.json", R"({"eos_token_id": [1, 106, 50]})");
  ModelConfig c = load_config(d);
  EXPECT_EQ(c.eos_ids, (std::vector<int32_t>{1, 106, 50}));
}

TEST(Config, KvSharingDonors) {
  ModelConfig c = load_config(test::fixture("gemma4_small") + "/model");
  // golden.json kv_sharing: 4 -> 3, 5 -> 2, 6 -> 3, 7 -> 2
  EXPECT_EQ(c.layer_kv_donor(4), 3);
  EXPECT_EQ(c.layer_kv_donor(5), 2);
  EXPECT_EQ(c.layer_kv_donor(6), 3);
  EXPECT_EQ(c.layer_kv_donor(7), 2);
  EXPECT_EQ(c.layer_kv_donor(3), -1);
  EXPECT_EQ(c.layer_intermediate(4), 2 * c.intermediate_size);  // double-wide MLP on shared layers
  EXPECT_EQ(c.layer_intermediate(3), c.intermediate_size);
}

TEST(LoadErrors, MissingTensorNamesIt) {
  auto d = mutated("gemma3_causal", "missing", [](auto& ts, auto&) { erase_tensor(ts, "model.layers.3.mlp.up_proj.weight"); });
  std::string e = load_error(d);
  EXPECT_NE(e.find("missing tensor 'model.layers.3.mlp.up_proj.weight'"), std::string::npos) << e;
}

TEST(LoadErrors, MisshapenTensorNamesShapes) {
  std::vector<float> bad(64 * 95, 0.0f);
  auto d = mutated("gemma3_causal", "shape", [&](auto& ts, auto&) {
    for (auto& t : ts)
      if (t.name == "model.layers.2.mlp.gate_proj.weight") t = tensor_out_f32(t.name, {95, 64}, bad);
  });
  std::string e = load_error(d);
  EXPECT_NE(e.find("model.layers.2.mlp.gate_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[95, 64]"), std::string::npos) << e;
  EXPECT_NE(e.find("expected [96, 64]"), std::string::npos) << e;
}

TEST(LoadErrors, UnexpectedDtype) {
  std::vector<int32_t> ints(96 * 64, 0);
  auto d = mutated("gemma3_causal", "dtype", [&](auto& ts, auto&) {
    for (auto& t : ts)
      if (t.name == "model.layers.0.self_attn.q_proj.weight") t = tensor_out_i32(t.name, {96, 64}, ints);
  });
  std::string e = load_error(d);
  EXPECT_NE(e.find("dtype I32"), std::string::npos) << e;
  EXPECT_NE(e.find("q_proj"), std::string::npos) << e;
}

TEST(LoadErrors, UnsupportedArchitecture) {
  auto d = mutated("gemma3_causal", "arch", [](auto&, json& cfg) { cfg["architectures"] = {"LlamaForCausalLM"}; });
  std::string e = load_error(d);
  EXPECT_NE(e.find("unsupported architecture \"LlamaForCausalLM\""), std::string::npos) << e;
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
}

TEST(LoadErrors, BadConfigValues) {
  auto d = mutated("gemma3_causal", "cfgtype", [](auto&, json& cfg) { cfg["hidden_size"] = "sixty-four"; });
  EXPECT_NE(load_error(d).find("\"hidden_size\" must be a number"), std::string::npos);
  d = mutated("gemma3_causal", "cfgheads", [](auto&, json& cfg) { cfg["num_key_value_heads"] = 3; });
  EXPECT_NE(load_error(d).find("not a multiple"), std::string::npos) << load_error(d);
  d = mutated("gemma3_causal", "cfgrope", [](auto&, json& cfg) { cfg["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
  EXPECT_NE(load_error(d).find("yarn"), std::string::npos) << load_error(d);
}

TEST(LoadErrors, TruncatedAndMissingFiles) {
  std::string d = fresh_dir("trunc");
  std::string st = read_file(test::fixture("gemma3_causal") + "/model/model.safetensors");
  write_file_atomic(d + "/model.safetensors", st.substr(0, st.size() / 2));
  write_file_atomic(d + "/config.json", read_file(test::fixture("gemma3_causal") + "/model/config.json"));
  std::string e = load_error(d);
  EXPECT_NE(e.find(d + "/model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  std::string empty = fresh_dir("empty");
  EXPECT_NE(load_error(empty).find("has no config.json"), std::string::npos);
  EXPECT_NE(load_error(empty + "/nope").find("does not exist"), std::string::npos) << load_error(empty + "/nope");
  write_file_atomic(empty + "/config.json", "{ not json");
  EXPECT_NE(load_error(empty).find("not valid JSON"), std::string::npos);
}

TEST(LoadErrors, SharedLayersIgnoreTheirUnusedKv) {
  // gemma4_small carries k/v tensors for its KV-shared layers; they are ignored, and removing them is fine.
  auto d = mutated("gemma4_small", "shared", [](auto& ts, auto&) {
    for (int l = 4; l < 8; ++l)
      for (const char* n : {"k_proj.weight", "v_proj.weight", "k_norm.weight"})
        erase_tensor(ts, "model.language_model.layers." + std::to_string(l) + ".self_attn." + n);
  });
  EXPECT_EQ(load_error(d), "");
  EXPECT_EQ(load_error(test::fixture("gemma4_small") + "/model"), "");
}

TEST(LoadErrors, UntiedHeadMustExist) {
  auto d = mutated("gemma3_causal", "untied", [](auto&, json& cfg) { cfg["tie_word_embeddings"] = false; });
  EXPECT_NE(load_error(d).find("no lm_head.weight"), std::string::npos) << load_error(d);
}
