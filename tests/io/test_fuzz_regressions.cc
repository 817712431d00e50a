// Regression tests for what the fuzz targets over untrusted model files found (docs/FUZZING.md,
// "Bugs found and fixed"): safetensors headers and sharded indexes, config.json, and PEFT adapter
// folders. Each input used to crash, hit undefined behaviour, throw something other than gt::Error
// or allocate without bound; now each fails with a gt::Error that names the file and the problem
// (or, for the alignment case, reads correctly).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "gemmatune/data/tokenizer.h"
#include "gemmatune/io/safetensors.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/config.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

using namespace gt;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string fresh_dir(const std::string& name) {
  std::string d = test::scratch("fuzzreg_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

// A safetensors file with this header (no padding) and `data_bytes` bytes of data.
std::string with_header(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string s(reinterpret_cast<const char*>(&n), 8);
  return s + header + data;
}

using test::contains;
using test::error_of;


}  // namespace

// ---------------------------------------------------------------------------------------------
// safetensors

TEST(FuzzSafetensors, ShapeProductOverflowIsRefused) {
  // 2^32 x 2^32 elements wrap to 0 in 64 bits: the empty byte range used to be accepted (and the
  // product was signed overflow, undefined behaviour).
  const std::string p = fresh_dir("st") + "/wrap.safetensors";
  write_raw(p, with_header(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", ""));
  std::string e = error_of([&] { SafetensorsFile f(p); });
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "'w'")) << e;
  EXPECT_TRUE(contains(e, "overflows")) << e;
  write_raw(p, with_header(R"({"w": {"dtype": "BF16", "shape": [9223372036854775807, 2, 0], "data_offsets": [0, 0]}})", ""));
  e = error_of([&] { SafetensorsFile f(p); });
  EXPECT_TRUE(contains(e, "overflows")) << e;
  // A zero dimension first is an honest empty tensor.
  write_raw(p, with_header(R"({"w": {"dtype": "F32", "shape": [0, 4294967296], "data_offsets": [0, 0]}})", ""));
  SafetensorsFile ok(p);
  EXPECT_EQ(ok.tensors().at("w").numel(), 0);
  EXPECT_TRUE(ok.tensors().at("w").to_floats().empty());
}

TEST(FuzzSafetensors, OverlappingTensorsAreRefused) {
  const std::string p = fresh_dir("st_overlap") + "/overlap.safetensors";
  write_raw(p, with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                           R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                           std::string(12, '\0')));
  const std::string e = error_of([&] { SafetensorsFile f(p); });
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "'a' and 'b' overlap")) << e;
  EXPECT_TRUE(contains(e, "[0, 8)")) << e;
}

TEST(FuzzSafetensors, UnalignedTensorsReadCorrectly) {
  // A header of odd length puts the data at an odd offset: a BF16/F64 tensor there is misaligned,
  // which to_f32 used to read through a typed pointer (undefined behaviour).
  const std::string p = fresh_dir("st_align") + "/odd.safetensors";
  const uint16_t bf[2] = {0x3f80, 0xc000};  // 1, -2
  const double dd[1] = {0.5};
  std::string data(reinterpret_cast<const char*>(bf), 4);
  data += std::string(reinterpret_cast<const char*>(dd), 8);
  std::string header = R"({"h": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}, )"
                       R"("d": {"dtype": "F64", "shape": [1], "data_offsets": [4, 12]}})";
  if (header.size() % 2 == 0) header += ' ';
  write_raw(p, with_header(header, data));
  SafetensorsFile f(p);
  ASSERT_NE(reinterpret_cast<uintptr_t>(f.tensors().at("h").data) % 2, 0u) << "the test needs a misaligned tensor";
  EXPECT_EQ(f.tensors().at("h").to_floats(), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(f.tensors().at("d").to_floats(), (std::vector<float>{0.5f}));
}

TEST(FuzzSafetensors, IndexCannotNameFilesOutsideTheFolder) {
  const std::string root = fresh_dir("st_escape");
  const std::string dir = root + "/model";
  fs::create_directories(dir);
  std::vector<float> a = {1, 2};
  write_safetensors(root + "/outside.safetensors", {tensor_out_f32("x", {2}, a)});
  for (const std::string shard : {"../outside.safetensors", "/etc/passwd", "", "sub/../../outside.safetensors", "."}) {
    SCOPED_TRACE(shard);
    write_raw(dir + "/model.safetensors.index.json", json{{"weight_map", {{"x", shard}}}}.dump());
    const std::string e = error_of([&] { TensorStore::open_folder(dir); });
    EXPECT_TRUE(contains(e, dir + "/model.safetensors.index.json")) << e;
    EXPECT_TRUE(contains(e, "not a file name inside the model folder")) << e;
  }
  // A subfolder inside the model folder is fine.
  fs::create_directories(dir + "/shards");
  write_safetensors(dir + "/shards/a.safetensors", {tensor_out_f32("x", {2}, a)});
  write_raw(dir + "/model.safetensors.index.json", R"({"weight_map": {"x": "shards/a.safetensors"}})");
  EXPECT_EQ(TensorStore::open_folder(dir).get("x").to_floats(), a);
}

// ---------------------------------------------------------------------------------------------
// config.json

namespace {

json tiny_config() {
  return json::parse(R"({"architectures": ["Gemma3ForCausalLM"], "vocab_size": 64, "hidden_size": 16,
    "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "head_dim": 8, "sliding_window": 4})");
}

std::string config_error(const json& j) {
  return error_of([&] { parse_config(j, "cfg/config.json"); });
}

}  // namespace

TEST(FuzzConfig, NumbersOutsideInt64AreErrors) {
  // 1e300 and 2^64-1 used to be converted to int64 (undefined behaviour).
  for (const char* v : {"1e300", "-1e300", "18446744073709551615", "9.3e18"}) {
    SCOPED_TRACE(v);
    json j = tiny_config();
    j["hidden_size"] = json::parse(v);
    const std::string e = config_error(j);
    EXPECT_TRUE(contains(e, "cfg/config.json")) << e;
    EXPECT_TRUE(contains(e, "hidden_size")) << e;
  }
  json j = tiny_config();
  j["hidden_size"] = 16.0;  // an integral float is still accepted
  EXPECT_EQ(parse_config(j, "x").hidden_size, 16);
}

TEST(FuzzConfig, AbsurdSizesAreRefusedBeforeAllocating) {
  // num_hidden_layers 1e9 used to build a billion-entry layer table (and head_dim 1e12 a RoPE table
  // per layer) before any tensor was looked at.
  for (auto [field, value] : {std::pair{"num_hidden_layers", int64_t(1000000000)}, {"head_dim", int64_t(1) << 40},
                              {"vocab_size", int64_t(1) << 40}, {"hidden_size", int64_t(1) << 40},
                              {"num_attention_heads", int64_t(1) << 40}}) {
    SCOPED_TRACE(field);
    json j = tiny_config();
    j[field] = value;
    if (std::string(field) == "num_attention_heads") j["num_key_value_heads"] = value;
    const std::string e = config_error(j);
    EXPECT_TRUE(contains(e, field)) << e;
    EXPECT_TRUE(contains(e, "larger than this engine supports")) << e;
  }
  json j = tiny_config();
  j["architectures"] = {"Gemma4ForCausalLM"};
  j["num_experts"] = int64_t(1) << 40;
  EXPECT_TRUE(contains(config_error(j), "num_experts")) << config_error(j);
}

TEST(FuzzConfig, RopeAndScalarsMustBeUsable) {
  // partial_rotary_factor 1e30 made the RoPE table size overflow int64 (undefined behaviour).
  json j = tiny_config();
  j["architectures"] = {"Gemma4ForCausalLM"};
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "proportional"}, {"partial_rotary_factor", 1e30}}}};
  EXPECT_TRUE(contains(config_error(j), "partial_rotary_factor")) << config_error(j);
  j = tiny_config();
  j["rope_theta"] = -1.0;
  EXPECT_TRUE(contains(config_error(j), "\"rope_theta\" must be positive")) << config_error(j);
  j = tiny_config();
  j["query_pre_attn_scalar"] = 0;
  EXPECT_TRUE(contains(config_error(j), "query_pre_attn_scalar")) << config_error(j);
}

TEST(FuzzConfig, TokenIdsAndLayerKeysAreChecked) {
  json j = tiny_config();
  j["bos_token_id"] = int64_t(1) << 40;  // used to be truncated to int32
  EXPECT_TRUE(contains(config_error(j), "bos_token_id")) << config_error(j);
  j = tiny_config();
  j["eos_token_id"] = {1, int64_t(1) << 35};
  EXPECT_TRUE(contains(config_error(j), "eos_token_id")) << config_error(j);
  j = tiny_config();
  j["eos_token_id"] = -5;
  EXPECT_TRUE(contains(config_error(j), "eos_token_id")) << config_error(j);
  // "1abc" used to be read as layer 1 (std::stoll stops at the first non-digit).
  for (const char* key : {"1abc", " 1", "99999999999999999999", "-1"}) {
    SCOPED_TRACE(key);
    j = tiny_config();
    j["per_layer_config"] = {{key, {{"head_dim", 8}}}};
    EXPECT_TRUE(contains(config_error(j), "is not a layer index")) << config_error(j);
  }
  j = tiny_config();
  j["per_layer_config"] = {{"1", 5}};
  EXPECT_TRUE(contains(config_error(j), "must be an object")) << config_error(j);
}

// ---------------------------------------------------------------------------------------------
// PEFT adapters

namespace {

// The gemma3_causal fixture adapter with its config and keys edited.
std::string edited_adapter(const std::string& name, const std::function<void(json&)>& edit_config,
                           const std::function<std::string(const std::string&)>& rename = nullptr) {
  const std::string src = test::fixture("gemma3_causal") + "/adapter";
  TensorStore s = TensorStore::open_file(src + "/adapter_model.safetensors");
  std::vector<TensorOut> ts;
  for (const auto& n : s.names()) {
    const TensorView& v = s.get(n);
    ts.push_back(TensorOut{rename ? rename(n) : n, v.dtype, v.shape, v.data, v.nbytes});
  }
  json cfg = json::parse(read_file(src + "/adapter_config.json"));
  edit_config(cfg);
  const std::string d = fresh_dir(name);
  write_safetensors(d + "/adapter_model.safetensors", ts);
  write_file_atomic(d + "/adapter_config.json", cfg.dump(2));
  return d;
}

}  // namespace

TEST(FuzzAdapter, HugeRanksAreRefused) {
  // r * num_experts * in_features used to overflow int64 (undefined behaviour) for r near 2^63.
  Model m = Model::load(test::fixture("gemma3_causal") + "/model");
  for (const char* r : {"9223372036854775807", "18446744073709551615", "1048577"}) {
    SCOPED_TRACE(r);
    std::string d = edited_adapter("bigr", [&](json& c) { c["r"] = json::parse(r); });
    std::string e = error_of([&] { Adapter::load_peft(d, m); });
    EXPECT_TRUE(contains(e, d + "/adapter_config.json")) << e;
    EXPECT_TRUE(contains(e, "\"r\" must be a positive integer (at most 1048576)")) << e;
    d = edited_adapter("bigrp", [&](json& c) { c["rank_pattern"] = {{"q_proj", json::parse(r)}}; });
    e = error_of([&] { Adapter::load_peft(d, m); });
    EXPECT_TRUE(contains(e, "rank_pattern[\"q_proj\"] must be a positive integer")) << e;
  }
}

TEST(FuzzAdapter, HugeLayerIndexIsAnError) {
  // layers.99999999999999999999 made std::stoll throw std::out_of_range (not a gt::Error).
  Model m = Model::load(test::fixture("gemma3_causal") + "/model");
  const std::string d = edited_adapter("biglayer", [](json&) {}, [](const std::string& n) {
    const std::string from = "model.layers.0.";
    const size_t at = n.find(from);
    return at == std::string::npos ? n : n.substr(0, at) + "model.layers.99999999999999999999." + n.substr(at + from.size());
  });
  const std::string e = error_of([&] { Adapter::load_peft(d, m); });
  EXPECT_TRUE(contains(e, d + "/adapter_model.safetensors")) << e;
  EXPECT_TRUE(contains(e, "layers.99999999999999999999")) << e;
  EXPECT_TRUE(contains(e, "has 7 layers")) << e;
}

// ---------------------------------------------------------------------------------------------
// Deeply nested JSON in every file of a model or adapter folder

TEST(FuzzJson, DeepNestingIsRefusedNotAStackOverflow) {
  // nlohmann::json parses iteratively but prints recursively: quoting such a value in an error
  // message (a wrong "hidden_size", a wrong "shape") used to overflow the stack.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string dir = fresh_dir("deep");
  write_raw(dir + "/config.json", R"({"architectures": ["Gemma3ForCausalLM"], "hidden_size": )" + deep + "}");
  std::string e = error_of([&] { load_config(dir); });
  EXPECT_TRUE(contains(e, dir + "/config.json: JSON nested more than 64 levels deep")) << e;

  write_file_atomic(dir + "/config.json", tiny_config().dump());
  write_raw(dir + "/generation_config.json", R"({"eos_token_id": )" + deep + "}");
  e = error_of([&] { load_config(dir); });
  EXPECT_TRUE(contains(e, dir + "/generation_config.json: JSON nested more than 64 levels deep")) << e;

  const std::string st = dir + "/model.safetensors";
  write_raw(st, with_header(R"({"a": {"dtype": "F32", "shape": )" + deep + R"(, "data_offsets": [0, 0]}})", ""));
  e = error_of([&] { SafetensorsFile f(st); });
  EXPECT_TRUE(contains(e, st + ": safetensors header: JSON nested more than 64 levels deep")) << e;

  fs::remove(st);
  write_raw(dir + "/model.safetensors.index.json", R"({"weight_map": {"a": )" + deep + "}}");
  e = error_of([&] { TensorStore::open_folder(dir); });
  EXPECT_TRUE(contains(e, dir + "/model.safetensors.index.json: JSON nested more than 64 levels deep")) << e;

  Model m = Model::load(test::fixture("gemma3_causal") + "/model");
  const std::string ad = edited_adapter("deep_adapter", [](json&) {});
  write_raw(ad + "/adapter_config.json", R"({"r": )" + deep + "}");
  e = error_of([&] { Adapter::load_peft(ad, m); });
  EXPECT_TRUE(contains(e, ad + "/adapter_config.json: JSON nested more than 64 levels deep")) << e;

  // Real files nest a few levels; 64 is allowed.
  const std::string ok = std::string(63, '[') + std::string(63, ']');
  write_raw(dir + "/config.json", R"({"architectures": ["Gemma3ForCausalLM"], "hidden_size": )" + ok + "}");
  fs::remove(dir + "/generation_config.json");
  e = error_of([&] { load_config(dir); });
  EXPECT_TRUE(contains(e, "\"hidden_size\" must be a number")) << e;
}

TEST(FuzzAdapter, CatastrophicRegexesMatchInPolynomialTime) {
  // std::regex's backtracking matcher took hours on "(.*)*x" against one module path (a hang of
  // `chat --adapter` on a hostile adapter_config.json); patterns now match in polynomial time.
  Model m = Model::load(test::fixture("gemma3_causal") + "/model");
  // (No timing assertion: with the old matcher this loop runs for hours, into ctest's timeout.)
  for (const char* re : {"(.*)*x", "((.*)*)*x", "(.*.*.*.*)*z", "(.|..)*x", "(.*){20}x"}) {
    SCOPED_TRACE(re);
    std::string d = edited_adapter("redos", [&](json& c) { c["target_modules"] = re; });
    std::string e = error_of([&] { Adapter::load_peft(d, m); });
    EXPECT_TRUE(contains(e, "does not select")) << e;
    d = edited_adapter("redos_rank", [&](json& c) { c["rank_pattern"] = {{re, 4}}; });
    Adapter a = Adapter::load_peft(d, m);  // the pattern matches no module: r stays 8
    EXPECT_EQ(a.modules.at(0).r, 8);
  }
  // The usual PEFT patterns keep their meaning.
  std::string d = edited_adapter("regex_ok", [](json& c) { c["target_modules"] = "^(?!.*vision).*\\.(q|k|v|o|gate|up|down)_proj$"; });
  EXPECT_EQ(Adapter::load_peft(d, m).modules.size(), 7u * 7u);
  // So are patterns over 4 kB (a 14 kB alternation took seconds).
  std::string alternation = "a";
  while (alternation.size() <= 4096) alternation += "|a";
  d = edited_adapter("regex_long", [&](json& c) { c["target_modules"] = alternation; });
  EXPECT_TRUE(contains(error_of([&] { Adapter::load_peft(d, m); }), "characters; at most 4096 are accepted"))
      << error_of([&] { Adapter::load_peft(d, m); });
  // Back-references are refused with the reason.
  d = edited_adapter("regex_backref", [](json& c) { c["target_modules"] = "(q)_\\1"; });
  EXPECT_TRUE(contains(error_of([&] { Adapter::load_peft(d, m); }), "not a valid regular expression")) << error_of([&] { Adapter::load_peft(d, m); });
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

TEST(FuzzTokenizer, SparseVocabularyIdsAreRefused) {
  // Two tokens, one with id 2^24 - 1: the per-id tables took 700 MB and seconds to build.
  const std::string text =
      R"({"model": {"type": "BPE", "vocab": {"<unk>": 0, "a": 16777215}, "merges": [], "unk_token": "<unk>"}})";
  const std::string e = error_of([&] { Tokenizer::from_json_text(text, "fuzz/tokenizer.json"); });
  EXPECT_TRUE(contains(e, "fuzz/tokenizer.json")) << e;
  EXPECT_TRUE(contains(e, "has 2 tokens but ids up to 16777215")) << e;
  // Gaps of a few thousand ids are fine.
  Tokenizer t = Tokenizer::from_json_text(
      R"({"model": {"type": "BPE", "vocab": {"<unk>": 0, "a": 5000}, "merges": [], "unk_token": "<unk>"}})", "ok.json");
  EXPECT_EQ(t.vocab_size(), 5001);
  EXPECT_EQ(t.encode("a", false), (std::vector<int32_t>{5000}));
}
