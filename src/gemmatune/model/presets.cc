#include "gemmatune/model/presets.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/model/config.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

using json = nlohmann::json;

namespace {

// The published sizes as data: one row per preset, fields named as config.json names them.
struct Gemma3Preset {
  int64_t layers, hidden, intermediate, heads, kv_heads, head_dim, sliding_window;
  int64_t query_pre_attn_scalar;  // an int in transformers' Gemma3TextConfig
  int64_t vocab = 262144;
  bool linear_rope_scaling = false;  // full-attention RoPE: linear scaling by 8 (4b and larger)
};

struct Gemma4Preset {
  int64_t layers, hidden, intermediate, heads, kv_heads, sliding_window;
  int64_t global_kv_heads = 0;   // num_global_key_value_heads (0: null)
  bool k_eq_v = false;           // attention_k_eq_v
  int64_t kv_shared_layers = 0;  // num_kv_shared_layers
  bool double_wide_mlp = false;  // use_double_wide_mlp
  int64_t per_layer_input = 0;   // hidden_size_per_layer_input (PLE)
  int64_t experts = 0, top_k = 0, moe_intermediate = 0;
  int sliding_pattern = 6;       // every sliding_pattern-th layer (and the last) is full attention
  int64_t head_dim = 256, global_head_dim = 512, vocab = 262144;
};

template <class P>
struct Named {
  std::string_view name;
  P p;
};

const std::vector<Named<Gemma3Preset>>& gemma3_presets() {
  static const std::vector<Named<Gemma3Preset>> v = {
      {"tiny", {.layers = 4, .hidden = 64, .intermediate = 128, .heads = 2, .kv_heads = 1, .head_dim = 32,
                .sliding_window = 16, .query_pre_attn_scalar = 32}},
      {"gemma3-270m", {.layers = 18, .hidden = 640, .intermediate = 2048, .heads = 4, .kv_heads = 1, .head_dim = 256,
                       .sliding_window = 512, .query_pre_attn_scalar = 256}},
      {"gemma3-1b", {.layers = 26, .hidden = 1152, .intermediate = 6912, .heads = 4, .kv_heads = 1, .head_dim = 256,
                     .sliding_window = 512, .query_pre_attn_scalar = 256}},
      {"gemma3-4b", {.layers = 34, .hidden = 2560, .intermediate = 10240, .heads = 8, .kv_heads = 4, .head_dim = 256,
                     .sliding_window = 1024, .query_pre_attn_scalar = 256, .vocab = 262208, .linear_rope_scaling = true}},
  };
  return v;
}

const std::vector<Named<Gemma4Preset>>& gemma4_presets() {
  static const std::vector<Named<Gemma4Preset>> v = {
      {"gemma4-tiny", {.layers = 6, .hidden = 64, .intermediate = 128, .heads = 2, .kv_heads = 1, .sliding_window = 16,
                       .kv_shared_layers = 2, .double_wide_mlp = true, .per_layer_input = 16, .sliding_pattern = 3,
                       .head_dim = 32, .global_head_dim = 64}},
      {"gemma4-tiny-moe", {.layers = 4, .hidden = 64, .intermediate = 128, .heads = 2, .kv_heads = 1, .sliding_window = 16,
                           .global_kv_heads = 1, .k_eq_v = true, .experts = 8, .top_k = 2, .moe_intermediate = 32,
                           .sliding_pattern = 2, .head_dim = 32, .global_head_dim = 64}},
      {"gemma4-e2b", {.layers = 35, .hidden = 1536, .intermediate = 6144, .heads = 8, .kv_heads = 1, .sliding_window = 512,
                      .kv_shared_layers = 20, .double_wide_mlp = true, .per_layer_input = 256, .sliding_pattern = 5}},
      {"gemma4-e4b", {.layers = 42, .hidden = 2560, .intermediate = 10240, .heads = 8, .kv_heads = 2, .sliding_window = 512,
                      .kv_shared_layers = 18, .per_layer_input = 256}},
      {"gemma4-26b-a4b", {.layers = 30, .hidden = 2816, .intermediate = 2112, .heads = 16, .kv_heads = 8,
                          .sliding_window = 1024, .global_kv_heads = 2, .k_eq_v = true, .experts = 128, .top_k = 8,
                          .moe_intermediate = 704}},
      {"gemma4-31b", {.layers = 60, .hidden = 5376, .intermediate = 21504, .heads = 32, .kv_heads = 16,
                      .sliding_window = 1024, .global_kv_heads = 4, .k_eq_v = true}},
  };
  return v;
}

template <class P>
const P* find_preset(const std::vector<Named<P>>& table, const std::string& name) {
  for (const auto& n : table)
    if (n.name == name) return &n.p;
  return nullptr;
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> v;
  for (const auto& n : gemma3_presets()) v.emplace_back(n.name);
  for (const auto& n : gemma4_presets()) v.emplace_back(n.name);
  return v;
}

namespace {

// The fields every Gemma text config writes alike (json objects keep their keys sorted, so the
// order they are added in does not show in config.json).
json shared_fields(int64_t vocab, int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads, int64_t kv_heads,
                   int64_t head_dim, int64_t sliding_window) {
  return {{"vocab_size", vocab},
          {"hidden_size", hidden},
          {"intermediate_size", intermediate},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"num_key_value_heads", kv_heads},
          {"head_dim", head_dim},
          {"sliding_window", sliding_window},
          {"rms_norm_eps", 1e-6},
          {"hidden_activation", "gelu_pytorch_tanh"},
          {"bos_token_id", 2},
          {"pad_token_id", 0},
          {"tie_word_embeddings", true},
          {"dtype", "bfloat16"}};
}

json gemma3(const Gemma3Preset& p) {
  json j = shared_fields(p.vocab, p.hidden, p.intermediate, p.layers, p.heads, p.kv_heads, p.head_dim, p.sliding_window);
  j["architectures"] = json::array({"Gemma3ForCausalLM"});
  j["model_type"] = "gemma3_text";
  j["query_pre_attn_scalar"] = p.query_pre_attn_scalar;
  j["final_logit_softcapping"] = nullptr;
  j["attn_logit_softcapping"] = nullptr;
  j["max_position_embeddings"] = 32768;
  j["eos_token_id"] = json::array({1, 106});
  json types = json::array();
  for (int64_t i = 0; i < p.layers; ++i) types.push_back((i + 1) % 6 ? "sliding_attention" : "full_attention");
  j["layer_types"] = types;
  json full = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  if (p.linear_rope_scaling) full = {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1000000.0}};
  j["rope_parameters"] = {{"full_attention", full}, {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  return j;
}

json gemma4(const Gemma4Preset& p) {
  const bool moe = p.experts > 0;
  json t = shared_fields(p.vocab, p.hidden, p.intermediate, p.layers, p.heads, p.kv_heads, p.head_dim, p.sliding_window);
  t["model_type"] = "gemma4_text";
  t["global_head_dim"] = p.global_head_dim;
  t["num_global_key_value_heads"] = p.global_kv_heads > 0 ? json(p.global_kv_heads) : json(nullptr);
  t["attention_k_eq_v"] = p.k_eq_v;
  t["final_logit_softcapping"] = 30.0;
  t["num_kv_shared_layers"] = p.kv_shared_layers;
  t["use_double_wide_mlp"] = p.double_wide_mlp;
  t["hidden_size_per_layer_input"] = p.per_layer_input;
  t["vocab_size_per_layer_input"] = p.vocab;
  t["enable_moe_block"] = moe;
  t["num_experts"] = moe ? json(p.experts) : json(nullptr);
  t["top_k_experts"] = moe ? json(p.top_k) : json(nullptr);
  t["moe_intermediate_size"] = moe ? json(p.moe_intermediate) : json(nullptr);
  t["max_position_embeddings"] = 131072;
  t["eos_token_id"] = 1;
  json types = json::array();
  for (int64_t i = 0; i < p.layers; ++i)
    types.push_back((i + 1) % p.sliding_pattern && i != p.layers - 1 ? "sliding_attention" : "full_attention");
  t["layer_types"] = types;
  t["rope_parameters"] = {
      {"full_attention", {{"rope_type", "proportional"}, {"partial_rotary_factor", 0.25}, {"rope_theta", 1000000.0}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  return json{{"architectures", {"Gemma4ForConditionalGeneration"}},
              {"model_type", "gemma4"},
              {"text_config", t},
              {"eos_token_id", {1, 106}},
              {"tie_word_embeddings", true},
              {"dtype", "bfloat16"}};
}

// Scales the layer count of a config, keeping the KV-sharing proportion and regenerating
// layer_types with the same pattern.
void override_layers(json& root, int64_t layers, int pattern) {
  json& t = root.contains("text_config") ? root["text_config"] : root;
  const int64_t old = t["num_hidden_layers"].get<int64_t>();
  t["num_hidden_layers"] = layers;
  if (t.contains("num_kv_shared_layers")) {
    int64_t sh = t["num_kv_shared_layers"].get<int64_t>();
    int64_t nsh = sh * layers / old;
    if (nsh >= layers - 1) nsh = std::max<int64_t>(0, layers - 2);
    t["num_kv_shared_layers"] = nsh;
  }
  const bool g4 = root.contains("text_config");
  json types = json::array();
  for (int64_t i = 0; i < layers; ++i)
    types.push_back((i + 1) % pattern && !(g4 && i == layers - 1) ? "sliding_attention" : "full_attention");
  t["layer_types"] = types;
  // A KV-shared layer takes K/V from the last non-shared layer of its type: fewer shared layers
  // when the scaled-down non-shared prefix lacks a type that the shared suffix has.
  if (t.contains("num_kv_shared_layers")) {
    int64_t nsh = t["num_kv_shared_layers"].get<int64_t>();
    auto has_donors = [&](int64_t shared) {
      for (int64_t i = layers - shared; i < layers; ++i) {
        bool found = false;
        for (int64_t j = 0; j < layers - shared && !found; ++j) found = types[size_t(j)] == types[size_t(i)];
        if (!found) return false;
      }
      return true;
    };
    while (nsh > 0 && !has_donors(nsh)) --nsh;
    t["num_kv_shared_layers"] = nsh;
  }
}

}  // namespace

json preset_config(const std::string& name, int64_t layers, int64_t vocab) {
  json j;
  int pattern = 6;
  if (const Gemma3Preset* p = find_preset(gemma3_presets(), name)) {
    j = gemma3(*p);
  } else if (const Gemma4Preset* q = find_preset(gemma4_presets(), name)) {
    j = gemma4(*q);
    pattern = q->sliding_pattern;
  } else {
    std::string all;
    for (const auto& n : preset_names()) all += " " + n;
    fail("unknown preset '", name, "'; available:", all);
  }
  if (layers > 0) override_layers(j, layers, pattern);
  if (vocab > 0) {
    json& t = j.contains("text_config") ? j["text_config"] : j;
    t["vocab_size"] = vocab;
    if (t.contains("vocab_size_per_layer_input")) t["vocab_size_per_layer_input"] = vocab;
  }
  return j;
}

namespace {

// Fast deterministic normal deviates (xoshiro-style state, Box-Muller).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
  uint64_t next() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return float((next() >> 40) + 1) / float(1ull << 24); }
  void normals(float* out, size_t n, float std) {
    for (size_t i = 0; i < n; i += 2) {
      float u1 = uniform(), u2 = uniform();
      float r = std::sqrt(-2.0f * std::log(u1)) * std;
      out[i] = r * std::cos(6.2831853f * u2);
      if (i + 1 < n) out[i + 1] = r * std::sin(6.2831853f * u2);
    }
  }
};

struct Planned {
  std::string name;
  std::vector<int64_t> shape;
  enum Kind { Matrix, NormZero, NormOne, Scalar } kind;
};

std::vector<Planned> plan_tensors(const ModelConfig& c) {
  const bool g4 = c.family == Family::Gemma4;
  const std::string P = g4 ? "model.language_model." : "model.";
  const auto specs = build_layer_specs(c);
  const Planned::Kind norm = g4 ? Planned::NormOne : Planned::NormZero;
  const int64_t H = c.hidden_size;
  std::vector<Planned> t;
  t.push_back({P + "embed_tokens.weight", {c.vocab_size, H}, Planned::Matrix});
  t.push_back({P + "norm.weight", {H}, norm});
  const int64_t Pd = c.hidden_size_per_layer_input;
  if (g4 && Pd > 0) {
    t.push_back({P + "embed_tokens_per_layer.weight", {c.vocab_size_per_layer_input, c.num_layers * Pd}, Planned::Matrix});
    t.push_back({P + "per_layer_model_projection.weight", {c.num_layers * Pd, H}, Planned::Matrix});
    t.push_back({P + "per_layer_projection_norm.weight", {Pd}, Planned::NormOne});
  }
  for (const LayerSpec& s : specs) {
    const std::string p = P + "layers." + std::to_string(s.index) + ".";
    const int64_t hd = s.head_dim, nq = s.num_heads * hd, nkv = s.num_kv_heads * hd, I = s.intermediate;
    t.push_back({p + "self_attn.q_proj.weight", {nq, H}, Planned::Matrix});
    t.push_back({p + "self_attn.o_proj.weight", {H, nq}, Planned::Matrix});
    t.push_back({p + "self_attn.q_norm.weight", {hd}, norm});
    if (s.kv_donor < 0) {
      t.push_back({p + "self_attn.k_proj.weight", {nkv, H}, Planned::Matrix});
      if (!s.k_eq_v) t.push_back({p + "self_attn.v_proj.weight", {nkv, H}, Planned::Matrix});
      t.push_back({p + "self_attn.k_norm.weight", {hd}, norm});
    }
    t.push_back({p + "mlp.gate_proj.weight", {I, H}, Planned::Matrix});
    t.push_back({p + "mlp.up_proj.weight", {I, H}, Planned::Matrix});
    t.push_back({p + "mlp.down_proj.weight", {H, I}, Planned::Matrix});
    for (const char* n : {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"})
      t.push_back({p + n + ".weight", {H}, norm});
    if (s.layer_scalar) t.push_back({p + "layer_scalar", {1}, Planned::Scalar});
    if (s.moe) {
      const int64_t E = c.num_experts, Im = c.moe_intermediate_size;
      t.push_back({p + "router.proj.weight", {E, H}, Planned::Matrix});
      t.push_back({p + "router.scale", {H}, Planned::NormOne});
      t.push_back({p + "router.per_expert_scale", {E}, Planned::NormOne});
      t.push_back({p + "experts.gate_up_proj", {E, 2 * Im, H}, Planned::Matrix});
      t.push_back({p + "experts.down_proj", {E, H, Im}, Planned::Matrix});
      for (const char* n : {"pre_feedforward_layernorm_2", "post_feedforward_layernorm_1", "post_feedforward_layernorm_2"})
        t.push_back({p + n + ".weight", {H}, Planned::NormOne});
    }
    if (s.ple) {
      t.push_back({p + "per_layer_input_gate.weight", {Pd, H}, Planned::Matrix});
      t.push_back({p + "per_layer_projection.weight", {H, Pd}, Planned::Matrix});
      t.push_back({p + "post_per_layer_input_norm.weight", {H}, Planned::NormOne});
    }
  }
  return t;
}

void copy_file(const std::string& from, const std::string& to) { write_file_atomic(to, read_file(from)); }

}  // namespace

int64_t init_model(const InitOptions& o) {
  if (o.dtype != "bf16" && o.dtype != "f32") fail("init-model: --dtype must be bf16 or f32, got '", o.dtype, "'");
  json cfg = preset_config(o.preset, o.layers, o.vocab);
  json& t = cfg.contains("text_config") ? cfg["text_config"] : cfg;
  t["dtype"] = o.dtype == "bf16" ? "bfloat16" : "float32";
  if (cfg.contains("text_config")) cfg["dtype"] = t["dtype"];
  ModelConfig c = parse_config(cfg, "preset " + o.preset);
  make_dirs(o.out_dir);

  const DType dt = o.dtype == "bf16" ? DType::BF16 : DType::F32;
  auto plan = plan_tensors(c);
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  int64_t params = 0;
  for (const auto& p : plan) {
    int64_t n = 1;
    for (auto d : p.shape) n *= d;
    params += n;
    header[p.name] = {{"dtype", dtype_name(dt)}, {"shape", p.shape}, {"data_offsets", {off, off + uint64_t(n) * dtype_size(dt)}}};
    off += uint64_t(n) * dtype_size(dt);
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');
  // Matrices: N(0, 0.02²) as transformers initialises them. The tiny presets' embedding is wider
  // (std 0.5): with hidden 64 and a frozen tied head at 0.02 no logit could exceed ~1.3, so a LoRA
  // run (the demo) could never fit its data.
  const bool tiny = o.preset == "tiny" || o.preset == "gemma4-tiny" || o.preset == "gemma4-tiny-moe";
  const float std_dev = 0.02f;
  write_file_atomic(o.out_dir + "/model.safetensors", [&](std::FILE* f) {
    uint64_t hl = h.size();
    std::fwrite(&hl, 8, 1, f);
    std::fwrite(h.data(), 1, h.size(), f);
    std::vector<float> buf;
    std::vector<uint16_t> half;
    uint64_t tensor_index = 0;
    for (const auto& p : plan) {
      int64_t n = 1;
      for (auto d : p.shape) n *= d;
      Rng rng(o.seed * 1000003ull + tensor_index++);
      const int64_t chunk = 1 << 22;
      for (int64_t s = 0; s < n; s += chunk) {
        const int64_t m = std::min(chunk, n - s);
        buf.resize(size_t(m));
        switch (p.kind) {
          case Planned::Matrix:
            rng.normals(buf.data(), size_t(m), tiny && p.name.find("embed_tokens.weight") != std::string::npos ? 0.5f : std_dev);
            break;
          case Planned::NormZero: rng.normals(buf.data(), size_t(m), 0.05f); break;
          case Planned::NormOne:
            rng.normals(buf.data(), size_t(m), 0.05f);
            for (auto& x : buf) x += 1.0f;
            break;
          case Planned::Scalar: std::fill(buf.begin(), buf.end(), 1.0f); break;
        }
        bool ok;
        if (dt == DType::BF16) {
          half.resize(size_t(m));
          for (int64_t i = 0; i < m; ++i) half[size_t(i)] = f32_to_bf16(buf[size_t(i)]);
          ok = std::fwrite(half.data(), 2, size_t(m), f) == size_t(m);
        } else {
          ok = std::fwrite(buf.data(), 4, size_t(m), f) == size_t(m);
        }
        if (!ok) fail("init-model: error writing ", o.out_dir, "/model.safetensors (disk full?)");
      }
    }
  });
  write_file_atomic(o.out_dir + "/config.json", cfg.dump(2) + "\n");
  json gen = {{"bos_token_id", 2}, {"eos_token_id", c.eos_ids}, {"pad_token_id", 0}};
  write_file_atomic(o.out_dir + "/generation_config.json", gen.dump(2) + "\n");
  if (!o.tokenizer.empty()) copy_file(o.tokenizer, o.out_dir + "/tokenizer.json");
  if (!o.chat_template.empty()) copy_file(o.chat_template, o.out_dir + "/chat_template.jinja");
  return params;
}

}  // namespace gt
