#include "gemmatune/model/config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

#include "gemmatune/util/error.h"
#include "gemmatune/util/json.h"
#include "gemmatune/util/fs.h"

namespace gt {

using json = nlohmann::json;

const char* attn_type_name(AttnType t) { return t == AttnType::Full ? "full_attention" : "sliding_attention"; }

namespace {

// Upper bounds on sizes (see parse_config).
constexpr int64_t kMaxVocab = int64_t(1) << 24;
constexpr int64_t kMaxWidth = int64_t(1) << 20;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 8192;
constexpr int64_t kMaxExperts = 65536;

struct Reader {
  const json& j;
  const std::string& origin;

  bool present(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  // Integers may be written as 2 or 2.0; a value outside int64 (which would not convert) is refused.
  int64_t i64(const char* k, int64_t def) const {
    if (!present(k)) return def;
    const json& v = j[k];
    if (!v.is_number()) fail(origin, ": field \"", k, "\" must be a number, got ", v.dump());
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > uint64_t(INT64_MAX)) fail(origin, ": field \"", k, "\" is out of range: ", v.dump());
      return int64_t(v.get<uint64_t>());
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    const double d = v.get<double>();
    if (d != std::floor(d)) fail(origin, ": field \"", k, "\" must be an integer, got ", v.dump());
    if (!(d >= -9.2e18 && d <= 9.2e18)) fail(origin, ": field \"", k, "\" is out of range: ", v.dump());
    return int64_t(d);
  }
  double f64(const char* k, double def) const {
    if (!present(k)) return def;
    if (!j[k].is_number()) fail(origin, ": field \"", k, "\" must be a number, got ", j[k].dump());
    return j[k].get<double>();
  }
  // A number > 0 (RoPE theta, scalars): zero or a negative value would make NaNs or infinities.
  double positive(const char* k, double def) const {
    const double v = f64(k, def);
    if (!(v > 0)) fail(origin, ": field \"", k, "\" must be positive, got ", j[k].dump());
    return v;
  }
  bool boolean(const char* k, bool def) const {
    if (!present(k)) return def;
    if (!j[k].is_boolean()) fail(origin, ": field \"", k, "\" must be true or false, got ", j[k].dump());
    return j[k].get<bool>();
  }
  std::string string(const char* k, const std::string& def) const {
    if (!present(k)) return def;
    if (!j[k].is_string()) fail(origin, ": field \"", k, "\" must be a string, got ", j[k].dump());
    return j[k].get<std::string>();
  }
};

RopeParams parse_rope(const json& r, const std::string& origin, const std::string& where, RopeParams base) {
  if (!r.is_object()) fail(origin, ": ", where, " must be an object, got ", r.dump());
  Reader rd{r, origin};
  base.type = rd.string("rope_type", rd.string("type", base.type));
  base.theta = rd.positive("rope_theta", base.theta);
  base.factor = rd.f64("factor", base.factor);
  base.partial_rotary_factor = rd.f64("partial_rotary_factor", base.partial_rotary_factor);
  if (!(base.partial_rotary_factor >= 0 && base.partial_rotary_factor <= 1))
    fail(origin, ": ", where, " partial_rotary_factor must be in [0, 1], got ", base.partial_rotary_factor);
  if (base.type != "default" && base.type != "linear" && base.type != "proportional")
    fail(origin, ": ", where, " has rope_type \"", base.type, "\"; supported: default, linear, proportional");
  if (!(base.factor > 0)) fail(origin, ": ", where, " factor must be positive");
  return base;
}

// A token id: an integer in [0, 2^31) (ids are int32 throughout).
int32_t token_id(const json& e, const std::string& origin, const char* field) {
  if (!e.is_number_integer()) fail(origin, ": ", field, " must hold integers, got ", e.dump());
  if (e.is_number_unsigned() ? e.get<uint64_t>() > uint64_t(INT32_MAX)
                             : (e.get<int64_t>() < 0 || e.get<int64_t>() > INT32_MAX))
    fail(origin, ": ", field, " ", e.dump(), " is not a token id (expected 0 .. ", INT32_MAX, ")");
  return int32_t(e.get<int64_t>());
}

std::vector<int32_t> parse_ids(const json& v, const std::string& origin, const char* field) {
  std::vector<int32_t> out;
  if (v.is_number_integer()) {
    out.push_back(token_id(v, origin, field));
  } else if (v.is_array()) {
    for (const auto& e : v) {
      if (!e.is_number_integer()) fail(origin, ": ", field, " must hold integers, got ", v.dump());
      out.push_back(token_id(e, origin, field));
    }
  } else if (!v.is_null()) {
    fail(origin, ": ", field, " must be an integer or a list of integers, got ", v.dump());
  }
  return out;
}

}  // namespace

int64_t ModelConfig::layer_head_dim(int64_t i) const {
  if (!layer_head_dim_override.empty() && layer_head_dim_override[size_t(i)] > 0) return layer_head_dim_override[size_t(i)];
  if (family == Family::Gemma4 && layer_types[size_t(i)] == AttnType::Full && global_head_dim > 0) return global_head_dim;
  return head_dim;
}

bool ModelConfig::layer_k_eq_v(int64_t i) const {
  return family == Family::Gemma4 && attention_k_eq_v && layer_types[size_t(i)] == AttnType::Full;
}

int64_t ModelConfig::layer_kv_heads(int64_t i) const {
  if (!layer_kv_heads_override.empty() && layer_kv_heads_override[size_t(i)] > 0) return layer_kv_heads_override[size_t(i)];
  if (layer_k_eq_v(i) && num_global_kv_heads > 0) return num_global_kv_heads;
  return num_kv_heads;
}

bool ModelConfig::layer_kv_shared(int64_t i) const {
  if (family != Family::Gemma4 || num_kv_shared_layers <= 0) return false;
  int64_t first = num_layers - num_kv_shared_layers;
  return first > 0 && i >= first;
}

int64_t ModelConfig::layer_kv_donor(int64_t i) const {
  if (!layer_kv_shared(i)) return -1;
  int64_t first = num_layers - num_kv_shared_layers;
  for (int64_t d = first - 1; d >= 0; --d)
    if (layer_types[size_t(d)] == layer_types[size_t(i)]) return d;
  fail(origin, ": KV-shared layer ", i, " (", attn_type_name(layer_types[size_t(i)]),
       ") has no earlier non-shared layer of the same type to take K/V from");
}

int64_t ModelConfig::layer_intermediate(int64_t i) const {
  return intermediate_size * ((use_double_wide_mlp && layer_kv_shared(i)) ? 2 : 1);
}

namespace {

// Architecture and family, from "architectures" or else model_type (fails on anything but Gemma 3 / 4).
void parse_architecture(const json& root, const Reader& top, const Reader& r, ModelConfig& c) {
  const std::string& origin = r.origin;
  std::string arch;
  if (root.contains("architectures") && root["architectures"].is_array() && !root["architectures"].empty() &&
      root["architectures"][0].is_string())
    arch = root["architectures"][0].get<std::string>();
  std::string mt = r.string("model_type", top.string("model_type", ""));
  if (arch.empty()) {
    if (mt == "gemma3_text") arch = "Gemma3ForCausalLM";
    else if (mt == "gemma3") arch = "Gemma3ForConditionalGeneration";
    else if (mt == "gemma4_text") arch = "Gemma4ForCausalLM";
    else if (mt == "gemma4") arch = "Gemma4ForConditionalGeneration";
  }
  c.architecture = arch;
  if (arch == "Gemma3ForCausalLM" || arch == "Gemma3ForConditionalGeneration") {
    c.family = Family::Gemma3;
  } else if (arch == "Gemma4ForCausalLM" || arch == "Gemma4ForConditionalGeneration") {
    c.family = Family::Gemma4;
  } else {
    fail(origin, ": unsupported architecture \"", arch.empty() ? mt : arch,
         "\"; supported: Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma4ForCausalLM, Gemma4ForConditionalGeneration");
  }
  c.causal_lm = arch.find("ForCausalLM") != std::string::npos;
}

// The sizes and scalars common to both families, with their bounds.
void parse_common_fields(const Reader& top, const Reader& r, ModelConfig& c, bool g4) {
  const std::string& origin = r.origin;
  c.vocab_size = r.i64("vocab_size", g4 ? 262144 : 262208);
  c.hidden_size = r.i64("hidden_size", 2304);
  c.intermediate_size = r.i64("intermediate_size", 9216);
  c.num_layers = r.i64("num_hidden_layers", g4 ? 30 : 26);
  c.num_heads = r.i64("num_attention_heads", 8);
  c.num_kv_heads = r.i64("num_key_value_heads", 4);
  c.head_dim = r.i64("head_dim", 256);
  c.rms_norm_eps = r.f64("rms_norm_eps", 1e-6);
  if (!(c.rms_norm_eps >= 0)) fail(origin, ": rms_norm_eps must not be negative, got ", c.rms_norm_eps);
  c.query_pre_attn_scalar = r.positive("query_pre_attn_scalar", 256);
  c.sliding_window = r.i64("sliding_window", g4 ? 512 : 4096);
  c.hidden_activation = r.string("hidden_activation", r.string("hidden_act", "gelu_pytorch_tanh"));
  c.torch_dtype = r.string("dtype", r.string("torch_dtype", top.string("dtype", top.string("torch_dtype", ""))));
  c.tie_word_embeddings = top.boolean("tie_word_embeddings", r.boolean("tie_word_embeddings", true));
  if (r.present("final_logit_softcapping")) c.final_logit_softcapping = r.f64("final_logit_softcapping", 0);

  for (auto [name, v] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                         {"intermediate_size", c.intermediate_size}, {"num_hidden_layers", c.num_layers},
                         {"num_attention_heads", c.num_heads}, {"num_key_value_heads", c.num_kv_heads},
                         {"head_dim", c.head_dim}, {"sliding_window", c.sliding_window}})
    if (v <= 0) fail(origin, ": ", name, " must be positive, got ", v);
  // Upper bounds far above every published Gemma (vocabulary 262k, hidden 5376, MLP 21504, 62 layers,
  // 32 heads of 512) that keep every product of sizes the loader and the planner form inside 64 bits,
  // and a nonsensical config from allocating per-layer tables before its tensors are even looked at.
  for (auto [name, v, most] : {std::tuple{"vocab_size", c.vocab_size, kMaxVocab}, {"hidden_size", c.hidden_size, kMaxWidth},
                               {"intermediate_size", c.intermediate_size, kMaxWidth},
                               {"num_hidden_layers", c.num_layers, kMaxLayers}, {"num_attention_heads", c.num_heads, kMaxHeads},
                               {"num_key_value_heads", c.num_kv_heads, kMaxHeads}, {"head_dim", c.head_dim, kMaxHeadDim}})
    if (v > most) fail(origin, ": ", name, " ", v, " is larger than this engine supports (at most ", most, ")");
  if (c.num_heads % c.num_kv_heads != 0)
    fail(origin, ": num_attention_heads ", c.num_heads, " is not a multiple of num_key_value_heads ", c.num_kv_heads);
  if (c.hidden_activation != "gelu_pytorch_tanh" && c.hidden_activation != "gelu_new" && c.hidden_activation != "gelu_tanh")
    fail(origin, ": hidden_activation \"", c.hidden_activation, "\" is not supported (expected gelu_pytorch_tanh)");
}

// Gemma 4 only: global attention heads, per-layer inputs, KV sharing, MoE.
void parse_gemma4_fields(const Reader& r, ModelConfig& c) {
  const std::string& origin = r.origin;
  c.global_head_dim = r.i64("global_head_dim", 512);
  c.num_global_kv_heads = r.i64("num_global_key_value_heads", 0);
  c.attention_k_eq_v = r.boolean("attention_k_eq_v", false);
  c.hidden_size_per_layer_input = r.i64("hidden_size_per_layer_input", 256);
  c.vocab_size_per_layer_input = r.i64("vocab_size_per_layer_input", 262144);
  c.num_kv_shared_layers = r.i64("num_kv_shared_layers", 0);
  c.use_double_wide_mlp = r.boolean("use_double_wide_mlp", false);
  c.enable_moe_block = r.boolean("enable_moe_block", false);
  c.num_experts = r.i64("num_experts", 0);
  c.top_k_experts = r.i64("top_k_experts", 0);
  c.moe_intermediate_size = r.i64("moe_intermediate_size", 0);
  for (auto [name, v, most] : {std::tuple{"global_head_dim", c.global_head_dim, kMaxHeadDim},
                               {"num_global_key_value_heads", c.num_global_kv_heads, kMaxHeads},
                               {"hidden_size_per_layer_input", c.hidden_size_per_layer_input, kMaxWidth},
                               {"vocab_size_per_layer_input", c.vocab_size_per_layer_input, kMaxVocab},
                               {"num_experts", c.num_experts, kMaxExperts}, {"top_k_experts", c.top_k_experts, kMaxExperts},
                               {"moe_intermediate_size", c.moe_intermediate_size, kMaxWidth}})
    if (v < 0 || v > most) fail(origin, ": ", name, " ", v, " is out of range [0, ", most, "]");
  if (c.enable_moe_block && (c.num_experts <= 0 || c.top_k_experts <= 0 || c.moe_intermediate_size <= 0 ||
                             c.top_k_experts > c.num_experts))
    fail(origin, ": enable_moe_block needs num_experts, top_k_experts (<= num_experts) and moe_intermediate_size");
  if (c.num_kv_shared_layers < 0 || c.num_kv_shared_layers >= c.num_layers)
    fail(origin, ": num_kv_shared_layers ", c.num_kv_shared_layers, " must be in [0, num_hidden_layers)");
}

// Layer types: listed, or from the sliding window pattern.
void parse_layer_types(const json& t, const Reader& r, ModelConfig& c, bool g4) {
  const std::string& origin = r.origin;
  if (r.present("layer_types")) {
    const json& lt = t["layer_types"];
    if (!lt.is_array() || int64_t(lt.size()) != c.num_layers)
      fail(origin, ": layer_types must list ", c.num_layers, " entries (num_hidden_layers), got ", lt.dump());
    for (const auto& e : lt) {
      std::string s = e.is_string() ? e.get<std::string>() : "";
      if (s == "sliding_attention") c.layer_types.push_back(AttnType::Sliding);
      else if (s == "full_attention") c.layer_types.push_back(AttnType::Full);
      else fail(origin, ": layer_types entry ", e.dump(), " is not sliding_attention or full_attention");
    }
  } else {
    int64_t pattern = r.i64("sliding_window_pattern", r.i64("_sliding_window_pattern", 6));
    if (pattern <= 0) fail(origin, ": sliding_window_pattern must be positive");
    for (int64_t i = 0; i < c.num_layers; ++i)
      c.layer_types.push_back((i + 1) % pattern ? AttnType::Sliding : AttnType::Full);
  }
  if (g4) c.layer_types.back() = AttnType::Full;  // Gemma4TextConfig forces the last layer to full attention
}

// RoPE: family defaults, then rope_scaling (Gemma 3) and rope_parameters.
void parse_rope_fields(const json& t, const Reader& r, ModelConfig& c, bool g4) {
  const std::string& origin = r.origin;
  if (g4) {
    c.rope_sliding = RopeParams{"default", 10000.0, 1.0, 1.0};
    c.rope_full = RopeParams{"proportional", 1000000.0, 1.0, 0.25};
  } else {
    c.rope_sliding = RopeParams{"default", r.positive("rope_local_base_freq", 10000.0), 1.0, 1.0};
    c.rope_full = RopeParams{"default", r.positive("rope_theta", 1000000.0), 1.0, 1.0};
    if (r.present("rope_scaling")) c.rope_full = parse_rope(t["rope_scaling"], origin, "rope_scaling", c.rope_full);
  }
  if (r.present("rope_parameters")) {
    const json& rp = t["rope_parameters"];
    if (!rp.is_object()) fail(origin, ": rope_parameters must be an object");
    if (rp.contains("full_attention") || rp.contains("sliding_attention")) {
      if (rp.contains("full_attention")) c.rope_full = parse_rope(rp["full_attention"], origin, "rope_parameters.full_attention", c.rope_full);
      if (rp.contains("sliding_attention")) c.rope_sliding = parse_rope(rp["sliding_attention"], origin, "rope_parameters.sliding_attention", c.rope_sliding);
    } else {
      c.rope_full = parse_rope(rp, origin, "rope_parameters", c.rope_full);
      c.rope_sliding = parse_rope(rp, origin, "rope_parameters", c.rope_sliding);
    }
  }
}

// per_layer_config: {"<layer>": {"head_dim": .., "num_key_value_heads": ..}}
void parse_per_layer_config(const json& t, const Reader& r, ModelConfig& c) {
  const std::string& origin = r.origin;
  if (!r.present("per_layer_config")) return;
  const json& pl = t["per_layer_config"];
  if (!pl.is_object()) fail(origin, ": per_layer_config must be an object keyed by layer index");
  c.layer_head_dim_override.assign(size_t(c.num_layers), -1);
  c.layer_kv_heads_override.assign(size_t(c.num_layers), -1);
  for (auto it = pl.begin(); it != pl.end(); ++it) {
    const std::string& key = it.key();
    int64_t li = -1;
    if (!key.empty() && key.size() <= 9 && key.find_first_not_of("0123456789") == std::string::npos)
      li = std::stoll(key);
    if (li < 0 || li >= c.num_layers) fail(origin, ": per_layer_config key \"", key, "\" is not a layer index");
    if (!it->is_object()) fail(origin, ": per_layer_config[\"", key, "\"] must be an object, got ", it->dump());
    Reader lr{*it, origin};
    c.layer_head_dim_override[size_t(li)] = lr.i64("head_dim", -1);
    c.layer_kv_heads_override[size_t(li)] = lr.i64("num_key_value_heads", -1);
    if (c.layer_head_dim_override[size_t(li)] > kMaxHeadDim || c.layer_kv_heads_override[size_t(li)] > kMaxHeads)
      fail(origin, ": per_layer_config[\"", key, "\"] has head_dim or num_key_value_heads larger than this engine "
           "supports (at most ", kMaxHeadDim, " and ", kMaxHeads, ")");
  }
}

// Token ids: the top level (multimodal) lists the instruction-tuned stop ids.
void parse_token_ids(const json& root, const json& t, const Reader& top, const Reader& r, ModelConfig& c) {
  const std::string& origin = r.origin;
  for (auto [name, def, out] : {std::tuple{"bos_token_id", 2, &c.bos_id}, {"pad_token_id", 0, &c.pad_id}}) {
    const int64_t id = r.i64(name, def);
    if (id < 0 || id > INT32_MAX) fail(origin, ": ", name, " ", id, " is not a token id (expected 0 .. ", INT32_MAX, ")");
    *out = int32_t(id);
  }
  if (top.present("eos_token_id")) c.eos_ids = parse_ids(root["eos_token_id"], origin, "eos_token_id");
  else if (r.present("eos_token_id")) c.eos_ids = parse_ids(t["eos_token_id"], origin, "eos_token_id");
  else c.eos_ids = {1};
}

}  // namespace

ModelConfig parse_config(const json& root, const std::string& origin) {
  if (!root.is_object()) fail(origin, ": config is not a JSON object");
  ModelConfig c;
  c.origin = origin;
  const json& t = (root.contains("text_config") && root["text_config"].is_object()) ? root["text_config"] : root;
  Reader top{root, origin};
  Reader r{t, origin};
  parse_architecture(root, top, r, c);
  const bool g4 = c.family == Family::Gemma4;
  parse_common_fields(top, r, c, g4);
  if (g4) parse_gemma4_fields(r, c);
  parse_layer_types(t, r, c, g4);
  parse_rope_fields(t, r, c, g4);
  parse_per_layer_config(t, r, c);
  parse_token_ids(root, t, top, r, c);

  for (int64_t i = 0; i < c.num_layers; ++i) {
    if (c.num_heads % c.layer_kv_heads(i) != 0)
      fail(origin, ": layer ", i, " has ", c.layer_kv_heads(i), " KV heads, which does not divide ", c.num_heads, " heads");
    c.layer_kv_donor(i);  // validates sharing
  }
  return c;
}

ModelConfig load_config(const std::string& model_dir) {
  if (!is_directory(model_dir)) fail("model folder ", model_dir, " does not exist or is not a directory");
  const std::string path = model_dir + "/config.json";
  if (!file_exists(path)) fail("model folder ", model_dir, " has no config.json");
  const json j = parse_json_file(read_file(path), path);
  ModelConfig c = parse_config(j, path);
  const std::string gen = model_dir + "/generation_config.json";
  if (file_exists(gen)) {
    const json g = parse_json_file(read_file(gen), gen);
    if (g.contains("eos_token_id")) {
      auto ids = parse_ids(g["eos_token_id"], gen, "eos_token_id");
      for (auto id : ids)
        if (std::find(c.eos_ids.begin(), c.eos_ids.end(), id) == c.eos_ids.end()) c.eos_ids.push_back(id);
    }
  }
  return c;
}

}  // namespace gt
