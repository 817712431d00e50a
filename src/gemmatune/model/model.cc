#include "gemmatune/model/model.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "gemmatune/model/gguf_model.h"
#include "gemmatune/quant/blocks.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

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

WFormat wformat_of(const std::string& t, const std::string& where) {
  if (t == "q8_0") return WFormat::Q8_0;
  if (t == "q4_0") return WFormat::Q4_0;
  if (t == "q4_k") return WFormat::Q4_K;
  fail(where, ": unknown quantization type '", t, "' (expected q8_0, q4_0 or q4_k)");
}

quant::BlockType block_of(WFormat f) {
  switch (f) {
    case WFormat::Q8_0: return quant::BlockType::Q8_0;
    case WFormat::Q4_0: return quant::BlockType::Q4_0;
    case WFormat::Q4_K: return quant::BlockType::Q4_K;
    default: fail("block_of: dense is not a block format");
  }
}


// The blocks of a quantized folder: config.json "quantization_config" (docs/QUANTIZATION.md).
struct QuantFolder {
  struct Entry {
    WFormat format = WFormat::Dense;
    std::vector<int64_t> shape;  // logical shape (the stored U8 tensor has the last dim in bytes)
  };
  std::map<std::string, Entry> tensors;
  DType source_dtype = DType::F32;
};

QuantFolder read_quant_config(const std::string& dir) {
  QuantFolder q;
  const std::string path = dir + "/config.json";
  if (!file_exists(path)) return q;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const std::exception&) {
    return q;  // load_config already reported a broken config
  }
  if (!j.is_object() || !j.contains("quantization_config")) return q;
  const auto& qc = j["quantization_config"];
  const std::string where = path + ": quantization_config";
  if (!qc.is_object() || qc.value("quant_method", "") != "gemmatune")
    fail(where, ": expected an object with \"quant_method\": \"gemmatune\" (this reader does not load other "
         "quantization methods)");
  if (qc.contains("source_dtype") && !dtype_from_name(qc["source_dtype"].get<std::string>(), &q.source_dtype))
    fail(where, ".source_dtype: expected F32, BF16 or F16");
  if (!qc.contains("tensors") || !qc["tensors"].is_object()) fail(where, ".tensors: expected an object");
  for (const auto& [name, e] : qc["tensors"].items()) {
    if (!e.is_object() || !e.contains("type") || !e.contains("shape") || !e["type"].is_string() || !e["shape"].is_array())
      fail(where, ".tensors[\"", name, "\"]: expected {\"type\": \"q8_0\"|\"q4_0\"|\"q4_k\", \"shape\": [...]}");
    QuantFolder::Entry en;
    en.format = wformat_of(e["type"].get<std::string>(), where + ".tensors[\"" + name + "\"]");
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() <= 0)
        fail(where, ".tensors[\"", name, "\"].shape: expected positive integers");
      en.shape.push_back(d.get<int64_t>());
    }
    q.tensors[name] = en;
  }
  return q;
}

// Releases the resident pages of a mapped range (after its tensor was quantized into a copy).
void release_pages(const void* p, size_t n) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t a = (uintptr_t(p) + page - 1) / page * page, b = (uintptr_t(p) + n) / page * page;
  if (b > a) madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
}

// A loaded 2-D or 3-D weight: dense view or blocks (stored or quantized now).
struct WeightData {
  std::string name;
  DType dtype = DType::F32;
  WFormat format = WFormat::Dense;
  const uint8_t* data = nullptr;
  int64_t rows = 0, k = 0;  // rows = product of all but the last dim

  Weight2D slice(const std::string& nm, int64_t r0, int64_t nr) const {
    Weight2D w;
    w.name = nm;
    w.dtype = dtype;
    w.format = format;
    w.k = k;
    w.n = nr;
    w.data = data + size_t(r0) * wformat_row_bytes(format, dtype, k);
    return w;
  }
};

class Loader {
 public:
  Loader(const TensorStore& s, const std::string& prefix, const std::string& cfg_origin, const QuantFolder& qf,
         WFormat load_q, std::vector<std::shared_ptr<std::vector<uint8_t>>>* owned, size_t* replaced,
         const std::map<std::string, std::vector<float>>* gains = nullptr)
      : s_(s), p_(prefix), origin_(cfg_origin), qf_(qf), load_q_(load_q), owned_(owned), replaced_(replaced),
        gains_(gains) {}

  const TensorView& tensor(const std::string& name, const std::vector<int64_t>& shape, const char* why) {
    const TensorView* v = find(name, why);
    if (v->shape != shape)
      fail(v->file, ": tensor '", v->name, "' has shape ", v->shape_str(), ", expected ", shape_str(shape), " (", why,
           ", from ", origin_, ")");
    if (v->dtype != DType::F32 && v->dtype != DType::BF16 && v->dtype != DType::F16)
      fail(v->file, ": tensor '", v->name, "' has dtype ", dtype_name(v->dtype), ", expected F32, BF16 or F16");
    return *v;
  }
  bool has(const std::string& name) const { return s_.has(p_ + name); }

  // A weight of logical `shape` (2-D or 3-D): dense, stored blocks, or quantized now.
  WeightData weight(const std::string& name, const std::vector<int64_t>& shape, const char* why) {
    const TensorView* v = find(name, why);
    WeightData d;
    d.name = v->name;
    d.k = shape.back();
    d.rows = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) d.rows *= shape[i];
    auto q = qf_.tensors.find(v->name);
    if (q != qf_.tensors.end()) {
      if (q->second.shape != shape)
        fail(origin_, ": quantization_config.tensors[\"", v->name, "\"].shape is ", shape_str(q->second.shape),
             ", expected ", shape_str(shape), " (", why, ")");
      const int64_t bv = wformat_block_values(q->second.format);
      if (d.k % bv != 0)
        fail(origin_, ": quantized tensor '", v->name, "' (", wformat_name(q->second.format), ") has a last dimension ",
             d.k, ", not a multiple of ", bv);
      std::vector<int64_t> stored = shape;
      stored.back() = int64_t(wformat_row_bytes(q->second.format, DType::U8, d.k));
      if (v->dtype != DType::U8 || v->shape != stored)
        fail(v->file, ": tensor '", v->name, "' is ", dtype_name(v->dtype), " ", v->shape_str(), ", expected U8 ",
             shape_str(stored), " (", wformat_name(q->second.format), " blocks of ", shape_str(shape), ")");
      if (load_q_ != WFormat::Dense && quantized_format(load_q_, d.k) != q->second.format)
        fail(v->file, ": tensor '", v->name, "' is stored as ", wformat_name(q->second.format),
             "; --quantize ", wformat_name(load_q_), " cannot re-quantize it (quantize from the dense model)");
      d.dtype = DType::U8;
      d.format = q->second.format;
      d.data = static_cast<const uint8_t*>(v->data);
      return d;
    }
    tensor(name, shape, why);
    d.dtype = v->dtype;
    d.data = static_cast<const uint8_t*>(v->data);
    if (load_q_ != WFormat::Dense && quant::quantize_policy(v->name, shape)) {
      const WFormat f = quantized_format(load_q_, d.k);
      const size_t rb = wformat_row_bytes(f, DType::U8, d.k);
      auto buf = std::make_shared<std::vector<uint8_t>>(size_t(d.rows) * rb);
      const size_t es = dtype_size(v->dtype);
      const quant::BlockType bt = block_of(f);
      const int64_t rows = d.rows, k = d.k;
      const uint8_t* src = d.data;
      uint8_t* dst = buf->data();
#pragma omp parallel
      {
        std::vector<float> row(static_cast<size_t>(k));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
          to_f32(v->dtype, src + size_t(r) * size_t(k) * es, row.data(), size_t(k));
          quant::quantize(bt, row.data(), k, dst + size_t(r) * rb);
        }
      }
      release_pages(v->data, v->nbytes);
      *replaced_ += v->nbytes;
      owned_->push_back(buf);
      d.dtype = DType::U8;
      d.format = f;
      d.data = buf->data();
      quantized_src_[v->name] = v->dtype;
    }
    return d;
  }

  Weight2D matrix(const std::string& name, int64_t n, int64_t k, const char* why) {
    auto it = done_.find(p_ + name);
    if (it != done_.end()) return it->second.slice(it->second.name, 0, n);
    WeightData d = weight(name, {n, k}, why);
    done_[p_ + name] = d;
    return d.slice(d.name, 0, n);
  }
  std::vector<float> vec(const std::string& name, int64_t n, const char* why) {
    return tensor(name, {n}, why).to_floats();
  }
  std::vector<float> norm(const std::string& name, int64_t n, bool one_plus) {
    auto v = vec(name, n, "RMSNorm weight");
    if (gains_ && one_plus) {  // a GGUF's stored (1 + w): the exact effective gain
      auto it = gains_->find(p_ + name);
      if (it != gains_->end()) return it->second;
    }
    if (one_plus)
      for (auto& x : v) x = 1.0f + x;
    return v;
  }
  // Dtype the embedding had before quantization (for the embedding scale's rounding).
  DType source_dtype(const std::string& full_name, DType stored) const {
    auto it = quantized_src_.find(full_name);
    if (it != quantized_src_.end()) return it->second;
    if (qf_.tensors.count(full_name)) return qf_.source_dtype;
    return stored;
  }

 private:
  const TensorView* find(const std::string& name, const char* why) const {
    const TensorView* v = s_.find(p_ + name);
    if (!v) fail(s_.where(), ": missing tensor '", p_ + name, "' (", why, ")");
    return v;
  }
  const TensorStore& s_;
  std::string p_, origin_;
  const QuantFolder& qf_;
  WFormat load_q_;
  std::vector<std::shared_ptr<std::vector<uint8_t>>>* owned_;
  size_t* replaced_;
  const std::map<std::string, std::vector<float>>* gains_;
  std::map<std::string, WeightData> done_;
  std::map<std::string, DType> quantized_src_;
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

namespace {
LoadOptions& default_opts() {
  static LoadOptions o;
  return o;
}
}  // namespace

void set_default_load_options(const LoadOptions& o) { default_opts() = o; }
const LoadOptions& default_load_options() { return default_opts(); }

WFormat quantized_format(WFormat want, int64_t k) {
  if (want == WFormat::Dense) return want;
  const quant::BlockType b = quant::block_type_for(block_of(want), k);
  return b == quant::BlockType::Q8_0 ? WFormat::Q8_0 : b == quant::BlockType::Q4_0 ? WFormat::Q4_0 : WFormat::Q4_K;
}

Model Model::load(const std::string& dir) { return load(dir, default_opts()); }

Model Model::load(const std::string& dir, const LoadOptions& opt) {
  Model m;
  m.dir_ = dir;
  QuantFolder qf;
  std::map<std::string, std::vector<float>> gains;
  if (is_gguf_path(dir)) {
    GgufModel g = open_gguf_model(dir);
    m.cfg_ = parse_config(g.config, dir);
    m.store_ = g.store;
    for (const auto& [name, b] : g.blocks) qf.tensors[name] = QuantFolder::Entry{b.format, b.shape};
    qf.source_dtype = DType::F32;  // llama.cpp scales the embedding by sqrt(hidden) in f32
    gains = std::move(g.gains);
    for (const auto& note : g.notes) std::fprintf(stderr, "[load] %s\n", note.c_str());
  } else {
    m.cfg_ = load_config(dir);
    m.store_ = TensorStore::open_folder(dir);
    qf = read_quant_config(dir);
  }
  WFormat load_q = WFormat::Dense;
  if (!opt.quantize.empty() && opt.quantize != "none") load_q = wformat_of(opt.quantize, "--quantize");
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
  Loader L(m.store_, m.prefix_, c.origin, qf, load_q, &m.owned_, &m.replaced_bytes_, &gains);
  const int64_t H = c.hidden_size, V = c.vocab_size;
  ModelWeights& w = m.w_;
  w.embed = L.matrix("embed_tokens.weight", V, H, "vocab_size x hidden_size");
  w.lm_head = w.embed;
  if (!c.tie_word_embeddings) {
    std::string head_name;
    for (const char* n : {"lm_head.weight", "language_model.lm_head.weight"})
      if (m.store_.has(n)) head_name = n;
    if (head_name.empty()) fail(m.store_.where(), ": tie_word_embeddings is false but no lm_head.weight is stored");
    Loader top(m.store_, "", c.origin, qf, load_q, &m.owned_, &m.replaced_bytes_);
    w.lm_head = top.matrix(head_name, V, H, "untied LM head: vocab_size x hidden_size");
  }
  // transformers multiplies by sqrt(H) cast to the embedding's dtype.
  // A quantized table keeps the rounding of the dtype it was quantized from.
  const DType edt = L.source_dtype(w.embed.name, w.embed.dtype);
  float sq = std::sqrt(float(H));
  if (edt == DType::BF16) sq = bf16_to_f32(f32_to_bf16(sq));
  if (edt == DType::F16) sq = f16_to_f32(f32_to_f16(sq));
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
      // Quantized per expert: each expert's rows are whole blocks of its own.
      const WeightData gu = L.weight(p + "experts.gate_up_proj", {E, 2 * Im, H}, "num_experts x 2*moe_intermediate_size x hidden_size");
      const WeightData dn = L.weight(p + "experts.down_proj", {E, H, Im}, "num_experts x hidden_size x moe_intermediate_size");
      for (int64_t e = 0; e < E; ++e) {
        ExpertWeights ew;
        ew.gate_up = gu.slice(gu.name + "[" + std::to_string(e) + "]", e * 2 * Im, 2 * Im);
        ew.down = dn.slice(dn.name + "[" + std::to_string(e) + "]", e * H, H);
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
  size_t b = w_.lm_head.bytes() + w_.embed.row_bytes();
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
  for (const auto& o : owned_) b += o->size();
  return b - replaced_bytes_;
}

std::string Model::quantization() const {
  std::string q;
  auto add = [&](const Weight2D& w) {
    if (w.quantized() && q.find(wformat_name(w.format)) == std::string::npos)
      q += std::string(q.empty() ? "" : ",") + wformat_name(w.format);
  };
  add(w_.embed);
  add(w_.lm_head);
  for (const auto& l : w_.layers) {
    for (const Weight2D* x : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) add(*x);
    for (const auto& e : l.experts) add(e.gate_up), add(e.down);
  }
  return q;
}

}  // namespace gt
