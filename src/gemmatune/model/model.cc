#include "gemmatune/model/model.h"

#include <cmath>

#include "gemmatune/util/error.h"

namespace gt {

namespace {

std::vector<float> rope_inv_freq(const RopeParams& p, int64_t dim) {
  // transformers: inv_freq = 1 / theta ** (arange(0, dim, 2).float() / dim), in fp32.
  std::vector<float> inv(static_cast<size_t>(dim / 2), 0.0f);
  int64_t rotated = dim / 2;
  if (p.type == "proportional") rotated = int64_t(p.partial_rotary_factor * double(dim) / 2.0);
  for (int64_t i = 0; i < rotated && i < dim / 2; ++i) {
    float expo = float(2 * i) / float(dim);
    inv[size_t(i)] = 1.0f / std::pow(float(p.theta), expo);
  }
  if (p.type == "linear" || p.factor != 1.0)
    for (auto& f : inv) f = f / float(p.factor);
  return inv;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

class Loader {
 public:
  Loader(const TensorStore& s, const std::string& prefix, const std::string& cfg_origin)
      : s_(s), p_(prefix), origin_(cfg_origin) {}

  const TensorView& tensor(const std::string& name, const std::vector<int64_t>& shape, const char* why) {
    const TensorView* v = s_.find(p_ + name);
    if (!v) fail(s_.where(), ": missing tensor '", p_ + name, "' (", why, ")");
    if (v->shape != shape)
      fail(v->file, ": tensor '", v->name, "' has shape ", v->shape_str(), ", expected ", shape_str(shape), " (", why,
           ", from ", origin_, ")");
    if (v->dtype != DType::F32 && v->dtype != DType::BF16 && v->dtype != DType::F16)
      fail(v->file, ": tensor '", v->name, "' has dtype ", dtype_name(v->dtype), ", expected F32, BF16 or F16");
    return *v;
  }
  bool has(const std::string& name) const { return s_.has(p_ + name); }

  Weight2D matrix(const std::string& name, int64_t n, int64_t k, const char* why) {
    const TensorView& v = tensor(name, {n, k}, why);
    Weight2D w;
    w.name = v.name;
    w.dtype = v.dtype;
    w.data = v.data;
    w.n = n;
    w.k = k;
    return w;
  }
  std::vector<float> vec(const std::string& name, int64_t n, const char* why) {
    return tensor(name, {n}, why).to_floats();
  }
  std::vector<float> norm(const std::string& name, int64_t n, bool one_plus) {
    auto v = vec(name, n, "RMSNorm weight");
    if (one_plus)
      for (auto& x : v) x = 1.0f + x;
    return v;
  }

 private:
  const TensorStore& s_;
  std::string p_, origin_;
};

}  // namespace

std::vector<LayerSpec> build_layer_specs(const ModelConfig& c) {
  std::vector<LayerSpec> specs;
  const bool g4 = c.family == Family::Gemma4;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerSpec s;
    s.index = i;
    s.type = c.layer_types[size_t(i)];
    s.window = s.type == AttnType::Sliding ? c.sliding_window : 0;
    s.num_heads = c.num_heads;
    s.num_kv_heads = c.layer_kv_heads(i);
    s.head_dim = c.layer_head_dim(i);
    s.attn_scale = g4 ? 1.0f : float(1.0 / std::sqrt(c.query_pre_attn_scalar));
    s.k_eq_v = c.layer_k_eq_v(i);
    s.v_norm = g4;
    s.kv_donor = c.layer_kv_donor(i);
    s.intermediate = c.layer_intermediate(i);
    s.moe = g4 && c.enable_moe_block;
    s.ple = g4 && c.hidden_size_per_layer_input > 0;
    s.layer_scalar = g4;
    s.inv_freq = rope_inv_freq(s.type == AttnType::Full ? c.rope_full : c.rope_sliding, s.head_dim);
    specs.push_back(std::move(s));
  }
  for (auto& s : specs)
    if (s.kv_donor >= 0) specs[size_t(s.kv_donor)].kv_publish = true;
  return specs;
}

Model Model::load(const std::string& dir) {
  Model m;
  m.dir_ = dir;
  m.cfg_ = load_config(dir);
  m.store_ = TensorStore::open_folder(dir);
  const ModelConfig& c = m.cfg_;
  const bool g4 = c.family == Family::Gemma4;
  for (const char* p : {"model.language_model.", "language_model.model.", "model."})
    if (m.store_.has(std::string(p) + "embed_tokens.weight")) {
      m.prefix_ = p;
      break;
    }
  if (m.prefix_.empty())
    fail(m.store_.where(), ": no embedding tensor found (looked for model.language_model.embed_tokens.weight, "
         "language_model.model.embed_tokens.weight, model.embed_tokens.weight)");
  m.specs_ = build_layer_specs(c);
  Loader L(m.store_, m.prefix_, c.origin);
  const int64_t H = c.hidden_size, V = c.vocab_size;
  ModelWeights& w = m.w_;
  w.embed = L.matrix("embed_tokens.weight", V, H, "vocab_size x hidden_size");
  w.lm_head = w.embed;
  if (!c.tie_word_embeddings) {
    std::string head_name;
    for (const char* n : {"lm_head.weight", "language_model.lm_head.weight"})
      if (m.store_.has(n)) head_name = n;
    if (head_name.empty()) fail(m.store_.where(), ": tie_word_embeddings is false but no lm_head.weight is stored");
    Loader top(m.store_, "", c.origin);
    w.lm_head = top.matrix(head_name, V, H, "untied LM head: vocab_size x hidden_size");
  }
  // transformers multiplies by sqrt(H) cast to the embedding's dtype.
  float sq = std::sqrt(float(H));
  if (w.embed.dtype == DType::BF16) sq = bf16_to_f32(f32_to_bf16(sq));
  if (w.embed.dtype == DType::F16) sq = f16_to_f32(f32_to_f16(sq));
  w.embed_scale = sq;
  w.final_norm = L.norm("norm.weight", H, !g4);

  const int64_t P = c.hidden_size_per_layer_input;
  if (g4 && P > 0) {
    const int64_t LP = c.num_layers * P;
    w.ple_embed = L.matrix("embed_tokens_per_layer.weight", c.vocab_size_per_layer_input, LP,
                           "vocab_size_per_layer_input x num_hidden_layers*hidden_size_per_layer_input");
    w.ple_model_proj = L.matrix("per_layer_model_projection.weight", LP, H, "num_layers*per_layer_dim x hidden_size");
    w.ple_proj_norm = L.norm("per_layer_projection_norm.weight", P, false);
    float ps = std::sqrt(float(P));
    if (w.ple_embed.dtype == DType::BF16) ps = bf16_to_f32(f32_to_bf16(ps));
    w.ple_embed_scale = ps;
  }

  for (const LayerSpec& s : m.specs_) {
    LayerWeights lw;
    const std::string p = "layers." + std::to_string(s.index) + ".";
    const int64_t hd = s.head_dim, nq = s.num_heads * hd, nkv = s.num_kv_heads * hd;
    lw.q = L.matrix(p + "self_attn.q_proj.weight", nq, H, "num_attention_heads*head_dim x hidden_size");
    lw.o = L.matrix(p + "self_attn.o_proj.weight", H, nq, "hidden_size x num_attention_heads*head_dim");
    lw.q_norm = L.norm(p + "self_attn.q_norm.weight", hd, !g4);
    if (s.kv_donor < 0) {
      lw.k = L.matrix(p + "self_attn.k_proj.weight", nkv, H, "num_key_value_heads*head_dim x hidden_size");
      if (!s.k_eq_v) lw.v = L.matrix(p + "self_attn.v_proj.weight", nkv, H, "num_key_value_heads*head_dim x hidden_size");
      lw.k_norm = L.norm(p + "self_attn.k_norm.weight", hd, !g4);
    }
    const int64_t I = s.intermediate;
    lw.gate = L.matrix(p + "mlp.gate_proj.weight", I, H, "intermediate_size x hidden_size");
    lw.up = L.matrix(p + "mlp.up_proj.weight", I, H, "intermediate_size x hidden_size");
    lw.down = L.matrix(p + "mlp.down_proj.weight", H, I, "hidden_size x intermediate_size");
    lw.input_norm = L.norm(p + "input_layernorm.weight", H, !g4);
    lw.post_attn_norm = L.norm(p + "post_attention_layernorm.weight", H, !g4);
    lw.pre_ff_norm = L.norm(p + "pre_feedforward_layernorm.weight", H, !g4);
    lw.post_ff_norm = L.norm(p + "post_feedforward_layernorm.weight", H, !g4);
    if (s.layer_scalar) lw.layer_scalar = L.vec(p + "layer_scalar", 1, "layer_scalar buffer")[0];
    if (s.moe) {
      const int64_t E = c.num_experts, Im = c.moe_intermediate_size;
      lw.router = L.matrix(p + "router.proj.weight", E, H, "num_experts x hidden_size");
      lw.router_scale = L.vec(p + "router.scale", H, "router scale");
      lw.per_expert_scale = L.vec(p + "router.per_expert_scale", E, "router per_expert_scale");
      const TensorView& gu = L.tensor(p + "experts.gate_up_proj", {E, 2 * Im, H}, "num_experts x 2*moe_intermediate_size x hidden_size");
      const TensorView& dn = L.tensor(p + "experts.down_proj", {E, H, Im}, "num_experts x hidden_size x moe_intermediate_size");
      for (int64_t e = 0; e < E; ++e) {
        ExpertWeights ew;
        ew.gate_up = Weight2D{gu.name + "[" + std::to_string(e) + "]", gu.dtype,
                              static_cast<const uint8_t*>(gu.data) + size_t(e * 2 * Im * H) * dtype_size(gu.dtype), 2 * Im, H};
        ew.down = Weight2D{dn.name + "[" + std::to_string(e) + "]", dn.dtype,
                           static_cast<const uint8_t*>(dn.data) + size_t(e * H * Im) * dtype_size(dn.dtype), H, Im};
        lw.experts.push_back(std::move(ew));
      }
      lw.pre_ff_norm_2 = L.norm(p + "pre_feedforward_layernorm_2.weight", H, false);
      lw.post_ff_norm_1 = L.norm(p + "post_feedforward_layernorm_1.weight", H, false);
      lw.post_ff_norm_2 = L.norm(p + "post_feedforward_layernorm_2.weight", H, false);
    }
    if (s.ple) {
      lw.ple_gate = L.matrix(p + "per_layer_input_gate.weight", P, H, "hidden_size_per_layer_input x hidden_size");
      lw.ple_proj = L.matrix(p + "per_layer_projection.weight", H, P, "hidden_size x hidden_size_per_layer_input");
      lw.post_ple_norm = L.norm(p + "post_per_layer_input_norm.weight", H, false);
    }
    w.layers.push_back(std::move(lw));
  }
  return m;
}

size_t Model::decode_bytes_per_token() const {
  size_t b = w_.lm_head.bytes() + size_t(cfg_.hidden_size) * dtype_size(w_.embed.dtype);
  for (size_t i = 0; i < w_.layers.size(); ++i) {
    const LayerWeights& l = w_.layers[i];
    for (const Weight2D* x : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down, &l.router, &l.ple_gate, &l.ple_proj})
      if (!x->empty()) b += x->bytes();
    if (specs_[i].moe && !l.experts.empty())
      b += size_t(cfg_.top_k_experts) * (l.experts[0].gate_up.bytes() + l.experts[0].down.bytes());
  }
  if (!w_.ple_model_proj.empty())
    b += w_.ple_model_proj.bytes() + size_t(w_.ple_embed.k) * dtype_size(w_.ple_embed.dtype);
  return b;
}

size_t Model::weight_bytes() const {
  size_t b = 0;
  for (const auto& n : store_.names()) b += store_.get(n).nbytes;
  return b;
}

}  // namespace gt
