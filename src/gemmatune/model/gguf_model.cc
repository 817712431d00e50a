#include "gemmatune/model/gguf_model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <string_view>
#include <unordered_map>

#include "gemmatune/quant/blocks.h"
#include "gemmatune/tensor/dtype.h"
#include "gemmatune/util/error.h"

namespace gt {

using json = nlohmann::json;

bool is_gguf_path(const std::string& path) {
  if (path.size() < 5) return false;
  std::string ext = path.substr(path.size() - 5);
  for (auto& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (ext != ".gguf") return false;
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

namespace {

// SentencePiece token types as llama.cpp's converter writes them (tokenizer.ggml.token_type).
enum TokType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

std::string arch_of(const GgufFile& f) {
  const std::string a = f.get_string("general.architecture");
  if (a == "gemma3") return a;
  if (a == "gemma4")
    fail(f.path(), ": general.architecture is \"gemma4\"; Gemma 4 GGUF files are not supported yet (supported: "
         "gemma3). Use the Hugging Face folder of the model.");
  fail(f.path(), ": general.architecture is \"", a, "\"; supported: gemma3 (Gemma 3 text models written by "
       "llama.cpp's convert_hf_to_gguf.py)");
}

int64_t positive_int(const GgufFile& f, const std::string& key) {
  const int64_t v = f.get_int(key);
  if (v <= 0) fail(f.path(), ": metadata key '", key, "' is ", v, ", expected a positive integer");
  return v;
}

// An integer key that may also be a per-layer array (llama.cpp writes arrays when layers differ):
// every entry must be equal here.
int64_t uniform_int(const GgufFile& f, const std::string& key) {
  const auto& kv = f.metadata();
  auto it = kv.find(key);
  if (it != kv.end() && std::holds_alternative<GgufArray>(it->second.v)) {
    const GgufArray& a = std::get<GgufArray>(it->second.v);
    if (a.empty()) fail(f.path(), ": metadata key '", key, "' is an empty array");
    int64_t first = -1;
    for (const auto& e : a) {
      int64_t v = -1;
      if (std::holds_alternative<int64_t>(e.v)) v = std::get<int64_t>(e.v);
      else if (std::holds_alternative<uint64_t>(e.v)) v = int64_t(std::get<uint64_t>(e.v));
      else fail(f.path(), ": metadata key '", key, "' must hold integers");
      if (first < 0) first = v;
      if (v != first)
        fail(f.path(), ": metadata key '", key, "' differs between layers; per-layer values are not supported for gemma3");
    }
    if (first <= 0) fail(f.path(), ": metadata key '", key, "' must be positive");
    return first;
  }
  return positive_int(f, key);
}

std::vector<int64_t> int_array(const GgufFile& f, const std::string& key) {
  std::vector<int64_t> out;
  for (const auto& e : f.get_array(key)) {
    if (std::holds_alternative<int64_t>(e.v)) out.push_back(std::get<int64_t>(e.v));
    else if (std::holds_alternative<uint64_t>(e.v)) out.push_back(int64_t(std::get<uint64_t>(e.v)));
    else if (std::holds_alternative<bool>(e.v)) out.push_back(std::get<bool>(e.v) ? 1 : 0);
    else fail(f.path(), ": metadata key '", key, "' must hold integers");
  }
  return out;
}

const std::vector<std::string>& token_texts(const GgufFile& f, std::vector<std::string>* cache) {
  if (cache->empty()) {
    for (const auto& e : f.get_array("tokenizer.ggml.tokens")) {
      if (!std::holds_alternative<std::string>(e.v)) fail(f.path(), ": tokenizer.ggml.tokens must hold strings");
      cache->push_back(std::get<std::string>(e.v));
    }
    if (cache->empty()) fail(f.path(), ": tokenizer.ggml.tokens is empty");
  }
  return *cache;
}

std::vector<int64_t> token_types(const GgufFile& f, size_t n) {
  std::vector<int64_t> t(n, kNormal);
  if (!f.has("tokenizer.ggml.token_type")) return t;
  t = int_array(f, "tokenizer.ggml.token_type");
  if (t.size() != n)
    fail(f.path(), ": tokenizer.ggml.token_type has ", t.size(), " entries, tokenizer.ggml.tokens ", n);
  return t;
}

// Generation stop ids, ascending: eos (tokenizer.ggml.eos_token_id, else 1), eot, and the tokens
// <eos> and <end_of_turn> (Gemma's generation_config.json lists both; llama.cpp stops at both).
std::vector<int32_t> eos_ids_of(const GgufFile& f) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id >= 0 && id <= INT32_MAX && std::find(ids.begin(), ids.end(), int32_t(id)) == ids.end()) ids.push_back(int32_t(id));
  };
  add(f.has("tokenizer.ggml.eos_token_id") ? f.get_int("tokenizer.ggml.eos_token_id") : 1);
  if (f.has("tokenizer.ggml.eot_token_id")) add(f.get_int("tokenizer.ggml.eot_token_id"));
  if (f.has("tokenizer.ggml.tokens")) {
    std::vector<std::string> cache;
    const auto& toks = token_texts(f, &cache);
    for (size_t i = 0; i < toks.size(); ++i)
      if (toks[i] == "<end_of_turn>" || toks[i] == "<eos>") add(int64_t(i));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

const GgufTensor& need_tensor(const GgufFile& f, const std::string& name, const char* why) {
  const GgufTensor* t = f.find(name);
  if (!t) fail(f.path(), ": missing tensor '", name, "' (", why, ")");
  return *t;
}

}  // namespace

json gguf_config_json(const GgufFile& f) {
  const std::string a = arch_of(f);
  auto k = [&](const char* s) { return a + "." + s; };
  json c;
  c["architectures"] = json::array({"Gemma3ForCausalLM"});
  c["model_type"] = "gemma3_text";
  const GgufTensor& emb = need_tensor(f, "token_embd.weight", "the token embedding");
  if (emb.dims.size() != 2) fail(f.path(), ": tensor 'token_embd.weight' has ", emb.dims.size(), " dimensions, expected 2");
  const int64_t H = positive_int(f, k("embedding_length"));
  if (emb.dims[0] != H)
    fail(f.path(), ": tensor 'token_embd.weight' rows have ", emb.dims[0], " values but ", k("embedding_length"), " is ", H);
  c["vocab_size"] = emb.dims[1];
  c["hidden_size"] = H;
  const int64_t L = positive_int(f, k("block_count"));
  c["num_hidden_layers"] = L;
  c["intermediate_size"] = uniform_int(f, k("feed_forward_length"));
  const int64_t heads = uniform_int(f, k("attention.head_count"));
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = uniform_int(f, k("attention.head_count_kv"));
  const int64_t hd = positive_int(f, k("attention.key_length"));
  if (f.has(k("attention.value_length")) && f.get_int(k("attention.value_length")) != hd)
    fail(f.path(), ": ", k("attention.value_length"), " ", f.get_int(k("attention.value_length")), " differs from ",
         k("attention.key_length"), " ", hd, " (Gemma uses one head dimension)");
  c["head_dim"] = hd;
  c["rms_norm_eps"] = f.get_float(k("attention.layer_norm_rms_epsilon"));
  // llama.cpp (src/models/gemma3.cpp): queries are scaled by 1/sqrt(hidden/heads) for the 62-layer 27B
  // model and by 1/sqrt(head_dim) otherwise; transformers' query_pre_attn_scalar is that value.
  c["query_pre_attn_scalar"] = L == 62 ? double(H / heads) : double(hd);
  if (f.has(k("context_length"))) c["max_position_embeddings"] = positive_int(f, k("context_length"));
  // Sliding window: absent or 0 means every layer attends globally.
  const int64_t swa = f.has(k("attention.sliding_window")) ? f.get_int(k("attention.sliding_window")) : 0;
  json types = json::array();
  if (swa > 0) {
    c["sliding_window"] = swa;
    const std::string pk = k("attention.sliding_window_pattern");
    std::vector<int64_t> pat;
    int64_t n = 6;  // llama.cpp's default for gemma3
    if (f.has(pk)) {
      const auto& v = f.metadata().at(pk).v;
      if (std::holds_alternative<GgufArray>(v)) {
        pat = int_array(f, pk);
        if (int64_t(pat.size()) != L) fail(f.path(), ": ", pk, " lists ", pat.size(), " layers, ", k("block_count"), " is ", L);
      } else {
        n = positive_int(f, pk);
      }
    }
    for (int64_t i = 0; i < L; ++i) {
      const bool sliding = pat.empty() ? ((i + 1) % n != 0) : pat[size_t(i)] != 0;
      types.push_back(sliding ? "sliding_attention" : "full_attention");
    }
  } else {
    c["sliding_window"] = f.has(k("context_length")) ? positive_int(f, k("context_length")) : 131072;
    for (int64_t i = 0; i < L; ++i) types.push_back("full_attention");
  }
  c["layer_types"] = types;
  // RoPE: llama.cpp's defaults when absent (10000 for both).
  c["rope_theta"] = f.has(k("rope.freq_base")) ? f.get_float(k("rope.freq_base")) : 10000.0;
  c["rope_local_base_freq"] = f.has(k("rope.freq_base_swa")) ? f.get_float(k("rope.freq_base_swa")) : 10000.0;
  const std::string st = f.has(k("rope.scaling.type")) ? f.get_string(k("rope.scaling.type")) : "none";
  if (st == "linear") {
    c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", f.get_float(k("rope.scaling.factor"))}};
  } else if (st != "none") {
    fail(f.path(), ": ", k("rope.scaling.type"), " is \"", st, "\"; supported: none, linear");
  }
  if (f.has(k("rope.dimension_count")) && f.get_int(k("rope.dimension_count")) != hd)
    fail(f.path(), ": ", k("rope.dimension_count"), " is ", f.get_int(k("rope.dimension_count")),
         ", expected the head dimension ", hd, " (Gemma 3 rotates whole heads)");
  if (f.has(k("attn_logit_softcapping")))
    fail(f.path(), ": ", k("attn_logit_softcapping"), " is set; Gemma 3 has no attention logit softcapping");
  if (f.has(k("final_logit_softcapping"))) c["final_logit_softcapping"] = f.get_float(k("final_logit_softcapping"));
  c["tie_word_embeddings"] = f.find("output.weight") == nullptr;
  c["hidden_activation"] = "gelu_pytorch_tanh";
  if (f.has("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = f.get_int("tokenizer.ggml.bos_token_id");
  if (f.has("tokenizer.ggml.padding_token_id")) c["pad_token_id"] = f.get_int("tokenizer.ggml.padding_token_id");
  json eos = json::array();
  for (int32_t id : eos_ids_of(f)) eos.push_back(id);
  c["eos_token_id"] = eos;
  return c;
}

std::string gguf_to_hf_name(const std::string& arch, const std::string& g) {
  if (arch != "gemma3") return "";
  if (g == "token_embd.weight") return "model.embed_tokens.weight";
  if (g == "output_norm.weight") return "model.norm.weight";
  if (g == "output.weight") return "lm_head.weight";
  if (g.rfind("blk.", 0) != 0) return "";
  const size_t dot = g.find('.', 4);
  if (dot == std::string::npos || dot == 4) return "";
  const std::string idx = g.substr(4, dot - 4);
  if (idx.size() > 6 || idx.find_first_not_of("0123456789") != std::string::npos) return "";
  static const std::pair<const char*, const char*> kMap[] = {
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"},
      {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"attn_norm.weight", "input_layernorm.weight"},
      {"post_attention_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
      {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
  };
  const std::string rest = g.substr(dot + 1);
  for (const auto& [from, to] : kMap)
    if (rest == from) return "model.layers." + std::to_string(std::stoll(idx)) + "." + to;
  return "";
}

namespace {

struct Owned {
  std::shared_ptr<const GgufFile> file;
  std::vector<std::shared_ptr<std::vector<float>>> bufs;
};

bool is_norm(const std::string& hf) {
  return hf.size() >= 11 && hf.compare(hf.size() - 11, 11, "norm.weight") == 0;
}

}  // namespace

GgufModel open_gguf_model(const std::string& path) {
  GgufModel g;
  auto file = std::make_shared<const GgufFile>(path);
  g.file = file;
  const GgufFile& f = *file;
  const std::string arch = arch_of(f);
  g.config = gguf_config_json(f);
  g.eos_ids = g.config["eos_token_id"].get<std::vector<int32_t>>();
  const int64_t L = g.config["num_hidden_layers"].get<int64_t>();

  // Every tensor the model needs, by its GGUF name (the shapes are checked against the config by
  // the loader, which names both tensor names).
  {
    std::vector<std::string> need = {"token_embd.weight", "output_norm.weight"};
    for (int64_t i = 0; i < L; ++i)
      for (const char* s : {"attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm", "attn_norm",
                            "post_attention_norm", "ffn_norm", "post_ffw_norm", "ffn_gate", "ffn_up", "ffn_down"})
        need.push_back("blk." + std::to_string(i) + "." + s + ".weight");
    for (const auto& n : need)
      if (!f.find(n))
        fail(path, ": missing tensor '", n, "' (", gguf_to_hf_name(arch, n), "; ", L, " layers per ",
             arch, ".block_count)");
  }

  auto owned = std::make_shared<Owned>();
  owned->file = file;
  std::vector<TensorView> views;
  auto owned_f32 = [&](const std::string& hf, const std::string& where, std::vector<int64_t> shape,
                       std::vector<float> v) {
    auto buf = std::make_shared<std::vector<float>>(std::move(v));
    owned->bufs.push_back(buf);
    TensorView tv;
    tv.name = hf;
    tv.file = where;
    tv.dtype = DType::F32;
    tv.shape = std::move(shape);
    tv.data = buf->data();
    tv.nbytes = buf->size() * sizeof(float);
    views.push_back(std::move(tv));
  };
  for (const GgufTensor& t : f.tensors()) {
    const std::string hf = gguf_to_hf_name(arch, t.name);
    if (hf.empty())
      fail(path, ": tensor '", t.name, "' is not part of a ", arch, " language model (this loader maps token_embd, "
           "output_norm, output and blk.N.{attn_q,attn_k,attn_v,attn_output,attn_q_norm,attn_k_norm,attn_norm,"
           "post_attention_norm,ffn_norm,post_ffw_norm,ffn_gate,ffn_up,ffn_down})");
    if (hf.find("model.layers.") == 0) {
      const int64_t li = std::stoll(hf.substr(13));
      if (li >= L) fail(path, ": tensor '", t.name, "' is for layer ", li, " but ", arch, ".block_count is ", L);
    }
    const std::string where = path + ", GGUF tensor '" + t.name + "'";
    const std::vector<int64_t> shape = t.shape();
    const int64_t k = t.dims.empty() ? 0 : t.dims[0];
    std::vector<float> values;  // set when the tensor is converted to f32 here
    bool converted = false;
    switch (t.type) {
      case GgmlType::F32:
      case GgmlType::F16:
      case GgmlType::BF16: {
        if (is_norm(hf)) {
          values.resize(size_t(t.numel()));
          to_f32(t.type == GgmlType::F32 ? DType::F32 : t.type == GgmlType::F16 ? DType::F16 : DType::BF16, t.data,
                 values.data(), values.size());
          converted = true;
          break;
        }
        TensorView tv;
        tv.name = hf;
        tv.file = where;
        tv.dtype = t.type == GgmlType::F32 ? DType::F32 : t.type == GgmlType::F16 ? DType::F16 : DType::BF16;
        tv.shape = shape;
        tv.data = t.data;
        tv.nbytes = size_t(t.nbytes);
        views.push_back(std::move(tv));
        break;
      }
      case GgmlType::Q8_0:
      case GgmlType::Q4_0:
      case GgmlType::Q4_K: {
        const quant::BlockType bt = t.type == GgmlType::Q8_0   ? quant::BlockType::Q8_0
                                    : t.type == GgmlType::Q4_0 ? quant::BlockType::Q4_0
                                                               : quant::BlockType::Q4_K;
        const WFormat wf = t.type == GgmlType::Q8_0   ? WFormat::Q8_0
                           : t.type == GgmlType::Q4_0 ? WFormat::Q4_0
                                                      : WFormat::Q4_K;
        const int64_t bv = quant::block_info(bt).block_values;
        if (k % bv != 0)
          fail(where, " (", hf, ") is ", ggml_type_name(t.type), " with rows of ", k, " values, not a multiple of its ",
               bv, "-value blocks");
        if (!is_norm(hf) && quant::quantize_policy(hf, shape)) {
          TensorView tv;
          tv.name = hf;
          tv.file = where;
          tv.dtype = DType::U8;
          tv.shape = shape;
          tv.shape.back() = (k / bv) * quant::block_info(bt).block_bytes;
          tv.data = t.data;
          tv.nbytes = size_t(t.nbytes);
          views.push_back(std::move(tv));
          g.blocks[hf] = GgufModel::Blocks{wf, shape};
        } else {
          values.resize(size_t(t.numel()));
          quant::dequantize(bt, t.data, t.numel(), values.data());
          converted = true;
          g.notes.push_back(str("GGUF tensor ", t.name, " (", ggml_type_name(t.type), ") dequantized to f32: ", hf,
                                " stays dense (quantization policy)"));
        }
        break;
      }
      default:
        fail(where, " (", hf, ") has ggml type ", ggml_type_name(t.type),
             ", which this engine does not load; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K (requantize the model "
             "with llama-quantize to Q8_0 or Q4_0, or use the Hugging Face folder)");
    }
    if (!converted) continue;
    if (is_norm(hf)) {
      // convert_hf_to_gguf.py (Gemma3Model.modify_tensors) adds 1 to every *norm.weight, in f32 for
      // f32 checkpoints: Gemma3RMSNorm's gain is (1 + w). Keep the stored gain; the store gets w.
      std::vector<float> w(values.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = values[i] - 1.0f;
      g.gains[hf] = std::move(values);
      owned_f32(hf, where, shape, std::move(w));
    } else {
      owned_f32(hf, where, shape, std::move(values));
    }
  }
  g.store = TensorStore::from_views(path, std::move(views), owned);
  return g;
}

std::string gguf_chat_template(const GgufFile& f) {
  return f.has("tokenizer.chat_template") ? f.get_string("tokenizer.chat_template") : std::string();
}

namespace {

size_t utf8_len(std::string_view s) {
  size_t n = 0;
  for (unsigned char ch : s) n += (ch & 0xC0) != 0x80;
  return n;
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
  return s;
}

}  // namespace

std::string gguf_tokenizer_json(const GgufFile& f) {
  const std::string model = f.has("tokenizer.ggml.model") ? f.get_string("tokenizer.ggml.model") : "";
  if (model != "llama")
    fail(f.path(), ": tokenizer.ggml.model is \"", model, "\"; supported: llama (the SentencePiece vocabulary "
         "convert_hf_to_gguf.py writes for Gemma 3)");
  std::vector<std::string> cache;
  const std::vector<std::string>& raw = token_texts(f, &cache);
  const size_t n = raw.size();
  const std::vector<int64_t> type = token_types(f, n);
  std::vector<double> score(n, 0.0);
  if (!f.has("tokenizer.ggml.scores")) fail(f.path(), ": missing metadata key 'tokenizer.ggml.scores' (SentencePiece scores)");
  {
    const GgufArray& a = f.get_array("tokenizer.ggml.scores");
    if (a.size() != n) fail(f.path(), ": tokenizer.ggml.scores has ", a.size(), " entries, tokenizer.ggml.tokens ", n);
    for (size_t i = 0; i < n; ++i) {
      if (!std::holds_alternative<double>(a[i].v)) fail(f.path(), ": tokenizer.ggml.scores must hold floats");
      score[i] = std::get<double>(a[i].v);
    }
  }
  // The converter writes user-defined pieces with '▁' replaced by ' ' (llama.cpp matches them on
  // raw text); the Hugging Face vocabulary has them with '▁'.
  std::vector<std::string> tok(n);
  for (size_t i = 0; i < n; ++i) tok[i] = type[i] == kUserDefined ? replace_all(raw[i], " ", "\xE2\x96\x81") : raw[i];
  std::unordered_map<std::string_view, int32_t> id;
  id.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) id.emplace(tok[i], int32_t(i));  // first id wins on duplicates

  auto id_of_type = [&](int64_t t) -> int64_t {
    for (size_t i = 0; i < n; ++i)
      if (type[i] == t) return int64_t(i);
    return -1;
  };
  auto meta_id = [&](const char* key, int64_t def) -> int64_t {
    const int64_t v = f.has(key) ? f.get_int(key) : def;
    if (v >= int64_t(n)) fail(f.path(), ": ", key, " is ", v, " but the vocabulary has ", n, " tokens");
    return v;
  };
  int64_t unk = meta_id("tokenizer.ggml.unknown_token_id", id_of_type(kUnknown));
  if (unk < 0) {  // the converter marks <unk> CONTROL when tokenizer_config.json calls it special
    auto it = id.find("<unk>");
    if (it != id.end()) unk = it->second;
  }
  const int64_t bos = meta_id("tokenizer.ggml.bos_token_id", -1);
  const bool add_bos = f.has("tokenizer.ggml.add_bos_token") ? f.get_bool("tokenizer.ggml.add_bos_token") : true;
  const bool add_space = f.has("tokenizer.ggml.add_space_prefix") ? f.get_bool("tokenizer.ggml.add_space_prefix") : true;

  // Merges as transformers' SentencePiece converter derives them from the scores: every split of
  // a piece into two vocabulary pieces, ordered by the piece's score (highest first); ties by the
  // longer left part, then the longer right part, then the piece id.
  struct M {
    double score;
    uint32_t la, lb;
    int32_t piece, a, b;
  };
  std::vector<M> merges;
  for (size_t i = 0; i < n; ++i) {
    if (type[i] != kNormal && type[i] != kUserDefined) continue;
    const std::string& p = tok[i];
    if (p.size() > 1024) continue;  // no real piece is this long; keeps a lying file from costing O(len^2)
    for (size_t cut = 1; cut < p.size(); ++cut) {
      if ((static_cast<unsigned char>(p[cut]) & 0xC0) == 0x80) continue;  // inside a code point
      auto ia = id.find(std::string_view(p).substr(0, cut));
      if (ia == id.end()) continue;
      auto ib = id.find(std::string_view(p).substr(cut));
      if (ib == id.end()) continue;
      merges.push_back(M{score[i], uint32_t(utf8_len(std::string_view(p).substr(0, cut))),
                         uint32_t(utf8_len(std::string_view(p).substr(cut))), int32_t(i), ia->second, ib->second});
    }
  }
  std::sort(merges.begin(), merges.end(), [](const M& x, const M& y) {
    if (x.score != y.score) return x.score > y.score;
    if (x.la != y.la) return x.la > y.la;
    if (x.lb != y.lb) return x.lb > y.lb;
    return x.piece < y.piece;
  });

  auto q = [](const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); };
  std::string o;
  o.reserve(n * 40 + merges.size() * 30);
  o += "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[";
  bool first = true;
  for (size_t i = 0; i < n; ++i) {
    if (type[i] != kControl && type[i] != kUnknown && type[i] != kUserDefined) continue;
    if (id.at(tok[i]) != int32_t(i)) continue;
    o += first ? "" : ",";
    first = false;
    o += "{\"id\":" + std::to_string(i) + ",\"content\":" + q(tok[i]) +
         ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":" +
         (type[i] == kUserDefined ? "false" : "true") + "}";
  }
  o += "],";
  o += add_space ? "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
                   "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},"
                 : "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"},";
  o += "\"pre_tokenizer\":null,";
  if (add_bos && bos >= 0) {
    const std::string b = q(tok[size_t(bos)]);
    o += "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":" + b +
         ",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[{\"SpecialToken\":{\"id\":" + b +
         ",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":" + b +
         ",\"type_id\":1}},{\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],\"special_tokens\":{" + b + ":{\"id\":" + b +
         ",\"ids\":[" + std::to_string(bos) + "],\"tokens\":[" + b + "]}}},";
  } else {
    o += "\"post_processor\":null,";
  }
  o += "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},"
       "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}";
  if (add_space) o += ",{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}";
  o += "]},";
  o += "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":";
  o += unk >= 0 ? q(tok[size_t(unk)]) : std::string("null");
  o += ",\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":true,\"byte_fallback\":true,"
       "\"ignore_merges\":false,\"vocab\":{";
  first = true;
  for (size_t i = 0; i < n; ++i) {
    if (id.at(tok[i]) != int32_t(i)) continue;
    o += first ? "" : ",";
    first = false;
    o += q(tok[i]) + ":" + std::to_string(i);
  }
  o += "},\"merges\":[";
  for (size_t i = 0; i < merges.size(); ++i) {
    o += i ? ",[" : "[";
    o += q(tok[size_t(merges[i].a)]) + "," + q(tok[size_t(merges[i].b)]) + "]";
  }
  o += "]}}";
  return o;
}

}  // namespace gt
