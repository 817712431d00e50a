// GGUF files as models, against the Hugging Face folder they were converted from. The fixtures in
// tests/data/gguf were written by llama.cpp's own, unmodified convert_hf_to_gguf.py
// (scripts/gen_gguf_fixture.sh): a tiny random Gemma 3 (init-model --preset tiny --layers 2
// --vocab 512 --dtype f32 --seed 13, regenerated here by the same command) as F32 and as Q8_0, and
// a vocabulary-only GGUF with the real 262144-token Gemma 3 vocabulary and chat template.
//   * config, logits: the F32 GGUF computes what the folder computes; the Q8_0 GGUF holds exactly
//     the blocks of our own Q8_0 quantization of the folder and computes the same logits;
//   * tokenizer: the GGUF vocabulary encodes the golden cases as tokenizer.json does;
//   * chat template equal; an adapter trained on the GGUF base has Hugging Face key names and
//     applies to the folder with the same logits;
//   * lying files: missing tensor, shape contradicting the metadata, unsupported arch and type.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/io/gguf.h"
#include "gemmatune/io/safetensors.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/model/gguf_model.h"
#include "gemmatune/model/model.h"
#include "gemmatune/model/model_files.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

namespace gt {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kF32 = test::unpacked("gguf/tiny-f32.gguf");
const std::string kQ8 = test::unpacked("gguf/tiny-q8_0.gguf");
const std::string kVocab = test::unpacked("gguf/gemma3-vocab.gguf");

std::string q(const std::string& s) { return "'" + s + "'"; }

// The Hugging Face folder the tiny GGUFs were converted from (scripts/gen_gguf_fixture.sh).
const std::string& hf_folder() {
  static const std::string dir = [] {
    const std::string d = test::scratch("gguf_tiny_hf");
    const std::string cmd = q(test::binary()) + " init-model --preset tiny --layers 2 --vocab 512 --dtype f32 --seed 13 --out " +
                            q(d) + " --tokenizer " + q(test::unpacked("assets/gemma3_tokenizer.json")) + " --chat-template " +
                            q(test::data("assets/gemma3_chat_template.jinja")) + " > /dev/null";
    if (std::system(cmd.c_str()) != 0) throw Error("init-model failed: " + cmd);
    return d;
  }();
  return dir;
}

std::vector<int32_t> prompt_ids() {  // 24 tokens (> the sliding window of 16), all < 512
  std::vector<int32_t> ids = {2};
  for (int i = 1; i < 24; ++i) ids.push_back(int32_t((i * 37 + 11) % 500 + 6));
  return ids;
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids, const LoraViews* lora = nullptr) {
  Decoder d(m);
  if (lora) d.set_lora(*lora);
  std::vector<float> out;
  d.forward({SeqChunk{nullptr, ids.data(), int64_t(ids.size())}}, LogitsFor::All, out);
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}
double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, double(std::fabs(x)));
  return m;
}

TEST(GgufModel, ConfigMatchesTheFolder) {
  const Model g = Model::load(kF32, LoadOptions{}), h = Model::load(hf_folder(), LoadOptions{});
  const ModelConfig &a = g.config(), &b = h.config();
  EXPECT_EQ(a.family, Family::Gemma3);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.query_pre_attn_scalar, b.query_pre_attn_scalar);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.layer_types, b.layer_types);
  EXPECT_EQ(a.rope_full.theta, b.rope_full.theta);
  EXPECT_EQ(a.rope_sliding.theta, b.rope_sliding.theta);
  EXPECT_EQ(float(a.rms_norm_eps), float(b.rms_norm_eps));  // GGUF stores it as f32
  EXPECT_EQ(a.final_logit_softcapping.has_value(), b.final_logit_softcapping.has_value());
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_ids, b.eos_ids);
  EXPECT_EQ(g.key_prefix(), "model.");
  EXPECT_EQ(g.weights().layers[1].q.name, "model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(g.quantization(), "");
}

TEST(GgufModel, F32LogitsEqualTheFolder) {
  const Model g = Model::load(kF32, LoadOptions{}), h = Model::load(hf_folder(), LoadOptions{});
  // The weights are the folder's bytes (a changed init-model would show here first).
  ASSERT_EQ(g.weights().embed.dtype, DType::F32);
  ASSERT_EQ(0, std::memcmp(g.weights().embed.data, h.weights().embed.data, g.weights().embed.bytes()))
      << "the GGUF's embedding differs from init-model's: rerun scripts/gen_gguf_fixture.sh";
  EXPECT_EQ(g.weights().embed_scale, h.weights().embed_scale);
  for (size_t l = 0; l < g.weights().layers.size(); ++l) {
    EXPECT_EQ(g.weights().layers[l].input_norm, h.weights().layers[l].input_norm) << l;
    EXPECT_EQ(g.weights().layers[l].q_norm, h.weights().layers[l].q_norm) << l;
    EXPECT_EQ(g.weights().layers[l].post_ff_norm, h.weights().layers[l].post_ff_norm) << l;
  }
  EXPECT_EQ(g.weights().final_norm, h.weights().final_norm);
  const auto ids = prompt_ids();
  const auto lg = logits_of(g, ids), lh = logits_of(h, ids);
  ASSERT_EQ(lg.size(), ids.size() * 512);
  EXPECT_GT(max_abs(lh), 0.1);
  EXPECT_LE(max_abs_diff(lg, lh), 1e-6 * max_abs(lh));
  // The store holds the Hugging Face form of the norms: stored (1 + w) - 1.
  const GgufModel gm = open_gguf_model(kF32);
  const TensorStore hs = TensorStore::open_folder(hf_folder());
  const auto w_g = gm.store.get("model.layers.0.input_layernorm.weight").to_floats();
  const auto w_h = hs.get("model.layers.0.input_layernorm.weight").to_floats();
  ASSERT_EQ(w_g.size(), w_h.size());
  for (size_t i = 0; i < w_g.size(); ++i) EXPECT_NEAR(w_g[i], w_h[i], 1e-7) << i;
  for (const auto& n : hs.names()) EXPECT_TRUE(gm.store.has(n)) << n;
}

TEST(GgufModel, Q8_0IsOurOwnQuantization) {
  const Model g = Model::load(kQ8, LoadOptions{});
  LoadOptions lo;
  lo.quantize = "q8_0";
  const Model h = Model::load(hf_folder(), lo);
  const Model gq = Model::load(kF32, lo);  // --quantize on a dense GGUF: the same path
  EXPECT_EQ(g.quantization(), "q8_0");
  EXPECT_EQ(gq.quantization(), "q8_0");
  auto same = [](const Weight2D& a, const Weight2D& b, const std::string& what) {
    ASSERT_EQ(a.format, WFormat::Q8_0) << what;
    ASSERT_EQ(b.format, WFormat::Q8_0) << what;
    ASSERT_EQ(a.bytes(), b.bytes()) << what;
    EXPECT_EQ(0, std::memcmp(a.data, b.data, a.bytes())) << what << ": the converter's Q8_0 blocks differ from ours";
  };
  same(g.weights().embed, h.weights().embed, "embed");
  same(gq.weights().embed, h.weights().embed, "embed (--quantize)");
  for (size_t l = 0; l < g.weights().layers.size(); ++l) {
    const auto &a = g.weights().layers[l], &b = h.weights().layers[l];
    for (auto [x, y, n] : {std::tuple{&a.q, &b.q, "q"}, {&a.k, &b.k, "k"}, {&a.v, &b.v, "v"}, {&a.o, &b.o, "o"},
                           {&a.gate, &b.gate, "gate"}, {&a.up, &b.up, "up"}, {&a.down, &b.down, "down"}})
      same(*x, *y, "layer " + std::to_string(l) + " " + n);
  }
  const auto ids = prompt_ids();
  const auto lg = logits_of(g, ids), lh = logits_of(h, ids);
  EXPECT_EQ(max_abs_diff(lg, lh), 0.0);
  EXPECT_EQ(max_abs_diff(logits_of(gq, ids), lh), 0.0);
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> rows;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

const Tokenizer& gguf_tok() {
  static const Tokenizer t = *open_model_tokenizer(kVocab);
  return t;
}

TEST(GgufModel, TokenizerEncodesTheGoldensAsTokenizerJson) {
  const Tokenizer& t = gguf_tok();
  const Tokenizer ref = Tokenizer::from_file(test::unpacked("assets/gemma3_tokenizer.json"));
  EXPECT_EQ(t.vocab_size(), 262208);  // vocab_size 262208: 262144 tokens, <image_soft_token>, [PAD] fill
  EXPECT_EQ(t.token_id("<image_soft_token>"), 262144);
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.token_id("<start_of_turn>"), 105);
  EXPECT_EQ(t.token_id("<end_of_turn>"), 106);
  size_t n = 0;
  for (const json& row : read_jsonl(test::data("assets/golden/tokenize.jsonl"))) {
    const std::string text = row["text"].get<std::string>();
    const auto want = row["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(t.encode(text, false), want) << row["id"].get<std::string>() << ": " << row.dump();
    ++n;
  }
  EXPECT_GT(n, 300u);
  // With special tokens: <bos> prepended as the tokenizer.json post-processor does.
  for (const char* s : {"Hello world", "  two  spaces\n\n\n", "<start_of_turn>user\nHi<end_of_turn>\n"})
    EXPECT_EQ(t.encode(s, true), ref.encode(s, true)) << s;
  // Decoding of the golden ids (skip_special_tokens=false: the GGUF marks <unusedN>/<mask> as
  // control tokens, which tokenizer.json does not call special).
  size_t nd = 0;
  for (const json& row : read_jsonl(test::data("assets/golden/decode.jsonl"))) {
    const auto ids = row["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(t.decode(ids, false), ref.decode(ids, false)) << row.dump();
    if (!row["skip_special_tokens"].get<bool>()) {
      EXPECT_EQ(t.decode(ids, false), row["text"].get<std::string>()) << row.dump();
    }
    ++nd;
  }
  EXPECT_GT(nd, 40u);
  // The one known difference: the converter types <mask> and <unusedN> as control tokens.
  EXPECT_TRUE(t.is_special(6));
  EXPECT_FALSE(ref.is_special(6));
  EXPECT_EQ(t.token_text(6), "<unused0>");
  EXPECT_EQ(t.encode("a<unused0>b", false), ref.encode("a<unused0>b", false));
}

TEST(GgufModel, ChatTemplateIsTheFolders) {
  const GgufFile f(kVocab);
  const std::string cfg_text = read_file(test::unpacked("assets/gemma3_tokenizer_config.json"));
  EXPECT_EQ(gguf_chat_template(f), json::parse(cfg_text)["chat_template"].get<std::string>());
  const ChatTemplate a = open_model_chat_template(kVocab), b = open_model_chat_template(hf_folder());
  const nlohmann::ordered_json msgs = nlohmann::ordered_json::parse(
      R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"2+2?"}])");
  const auto extra = nlohmann::ordered_json::object();
  const std::string ra = a.render(msgs, true, extra, "<bos>", "<eos>");
  EXPECT_EQ(ra, b.render(msgs, true, extra, "<bos>", "<eos>"));
  EXPECT_TRUE(test::contains(ra, "<start_of_turn>model\n")) << ra;
  // The tiny GGUFs carry the same template.
  EXPECT_EQ(gguf_chat_template(GgufFile(kF32)), gguf_chat_template(f));
}

TEST(GgufModel, AdapterTrainedOnGgufHasHfNamesAndAppliesToTheFolder) {
  const std::string dir = test::scratch("gguf_train");
  fs::create_directories(dir);
  {
    std::ofstream d(dir + "/data.jsonl");
    d << R"({"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]})"
      << "\n";
  }
  const std::string cmd = q(test::binary()) + " train --model " + q(kF32) + " --out " + q(dir + "/run") + " --data " +
                          q(dir + "/data.jsonl") + " max_len=64 lora_r=2 lora_alpha=4 steps=3 lr=0.01 > " +
                          q(dir + "/train.log") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(dir + "/train.log");
  const std::string ad = dir + "/run/adapter";
  const SafetensorsFile st(ad + "/adapter_model.safetensors");
  size_t n = 0;
  for (const auto& [key, v] : st.tensors()) {
    EXPECT_EQ(key.rfind("base_model.model.model.layers.", 0), 0u) << key;
    EXPECT_EQ(key.find("blk."), std::string::npos) << key;
    EXPECT_TRUE(test::contains(key, "_proj.lora_A.weight") || test::contains(key, "_proj.lora_B.weight")) << key;
    ++n;
  }
  EXPECT_GE(n, 2u * 2u * 7u);  // 2 layers x 7 projections x (A, B)
  const Model g = Model::load(kF32, LoadOptions{}), h = Model::load(hf_folder(), LoadOptions{});
  const Adapter ag = Adapter::load_peft(ad, g), ah = Adapter::load_peft(ad, h);
  const LoraViews vg = bind_adapter(ag, g), vh = bind_adapter(ah, h);
  const auto ids = prompt_ids();
  const auto lg = logits_of(g, ids, &vg), lh = logits_of(h, ids, &vh), base = logits_of(h, ids);
  EXPECT_GT(max_abs_diff(lh, base), 1e-4) << "the adapter changed nothing (was it trained?)";
  EXPECT_LE(max_abs_diff(lg, lh), 1e-6 * max_abs(lh));
}

// ---- lying and unsupported files ----

std::string bytes_of(const std::string& p) { return read_file(p); }
std::string write_copy(const std::string& name, const std::string& b) {
  const std::string p = test::scratch(name);
  std::ofstream(p, std::ios::binary) << b;
  return p;
}
// Replaces the one occurrence of `from` (same length as `to`).
std::string patched(std::string b, const std::string& from, const std::string& to) {
  EXPECT_EQ(from.size(), to.size());
  const size_t at = b.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  EXPECT_EQ(b.find(from, at + 1), std::string::npos) << from << " occurs twice";
  b.replace(at, from.size(), to);
  return b;
}
// The offset of a tensor info's ggml type field (name, u32 n_dims, u64 dims[n_dims], u32 type).
size_t type_field(const std::string& b, const std::string& tensor) {
  std::string key(8, '\0');
  const uint64_t len = tensor.size();
  std::memcpy(key.data(), &len, 8);
  key += tensor;
  const size_t at = b.find(key);
  EXPECT_NE(at, std::string::npos) << tensor;
  uint32_t nd;
  std::memcpy(&nd, b.data() + at + key.size(), 4);
  return at + key.size() + 4 + 8 * nd;
}
std::string load_error(const std::string& path) {
  return test::error_of([&] { Model::load(path, LoadOptions{}); });
}

TEST(GgufModel, MissingTensorIsNamed) {
  const std::string p = write_copy("missing.gguf", patched(bytes_of(kF32), "blk.1.ffn_up.weight", "blk.1.ffn_uX.weight"));
  const std::string e = load_error(p);
  EXPECT_TRUE(test::contains(e, p)) << e;
  EXPECT_TRUE(test::contains(e, "missing tensor 'blk.1.ffn_up.weight'")) << e;
  EXPECT_TRUE(test::contains(e, "model.layers.1.mlp.up_proj.weight")) << e;
}

TEST(GgufModel, ShapeContradictingMetadataIsNamed) {
  // gemma3.feed_forward_length 128 -> 96: every MLP tensor now contradicts it.
  std::string b = bytes_of(kF32);
  const std::string key = "gemma3.feed_forward_length";
  const size_t at = b.find(key);
  ASSERT_NE(at, std::string::npos);
  uint32_t vt;
  std::memcpy(&vt, b.data() + at + key.size(), 4);
  ASSERT_EQ(vt, 4u);  // u32
  uint32_t v;
  std::memcpy(&v, b.data() + at + key.size() + 4, 4);
  ASSERT_EQ(v, 128u);
  v = 96;
  std::memcpy(b.data() + at + key.size() + 4, &v, 4);
  const std::string p = write_copy("shape.gguf", b);
  const std::string e = load_error(p);
  EXPECT_TRUE(test::contains(e, "GGUF tensor 'blk.0.ffn_gate.weight'")) << e;
  EXPECT_TRUE(test::contains(e, "model.layers.0.mlp.gate_proj.weight")) << e;
  EXPECT_TRUE(test::contains(e, "[128, 64]")) << e;
  EXPECT_TRUE(test::contains(e, "[96, 64]")) << e;
}

TEST(GgufModel, UnsupportedArchitectureAndTypeAreNamed) {
  const std::string b = bytes_of(kF32);
  {
    std::string x = b;
    const std::string key = "general.architecture";
    const size_t at = x.find(key);
    ASSERT_NE(at, std::string::npos);
    // value: u32 type (8 = string), u64 length, "gemma3"
    ASSERT_EQ(x.compare(at + key.size() + 12, 6, "gemma3"), 0);
    x.replace(at + key.size() + 12, 6, "llama3");
    const std::string p = write_copy("arch.gguf", x);
    const std::string e = load_error(p);
    EXPECT_TRUE(test::contains(e, p) && test::contains(e, "\"llama3\"") && test::contains(e, "supported: gemma3")) << e;
    x.replace(at + key.size() + 12, 6, "gemma4");
    const std::string p4 = write_copy("arch4.gguf", x);
    const std::string e4 = load_error(p4);
    EXPECT_TRUE(test::contains(e4, "Gemma 4 GGUF files are not supported yet")) << e4;
  }
  {
    // F32 -> I32 (same size): a type the model loader does not take.
    std::string x = b;
    const size_t tf = type_field(x, "blk.0.attn_k.weight");
    uint32_t t;
    std::memcpy(&t, x.data() + tf, 4);
    ASSERT_EQ(t, 0u);
    t = 26;
    std::memcpy(x.data() + tf, &t, 4);
    const std::string p = write_copy("type.gguf", x);
    const std::string e = load_error(p);
    EXPECT_TRUE(test::contains(e, "blk.0.attn_k.weight") && test::contains(e, "I32") &&
                test::contains(e, "supported: F32, F16, BF16, Q8_0, Q4_0"))
        << e;
  }
  {
    // A Q8_0 file asked to load as Q4_0: refused, not re-quantized.
    LoadOptions lo;
    lo.quantize = "q4_0";
    const std::string e = test::error_of([&] { Model::load(kQ8, lo); });
    EXPECT_TRUE(test::contains(e, "cannot re-quantize")) << e;
  }
  // A vocabulary-only GGUF is not a model.
  EXPECT_TRUE(test::contains(load_error(kVocab), "missing tensor 'token_embd.weight'")) << load_error(kVocab);
}

}  // namespace
}  // namespace gt
