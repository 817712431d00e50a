#include "gemmatune/model/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemmatune/kernels/attention.h"
#include "gemmatune/kernels/cross_entropy.h"
#include "gemmatune/kernels/gelu.h"
#include "gemmatune/kernels/lora_grouped.h"
#include "gemmatune/kernels/moe_balance.h"
#include "gemmatune/kernels/moe_router.h"
#include "gemmatune/kernels/rmsnorm.h"
#include "gemmatune/kernels/rope.h"
#include "gemmatune/util/buffer.h"
#include "gemmatune/util/error.h"

namespace gt {

namespace {

// Adapter groups up to this many rows take the grouped LoRA kernel (decode); more, the GEMM path.
constexpr int64_t kGroupedLoraMaxRows = 8;

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}
}  // namespace

float final_logit_softcap(const ModelConfig& c) {
  const bool on = c.final_logit_softcapping && *c.final_logit_softcapping > 0 && (c.family == Family::Gemma4 || c.causal_lm);
  return on ? float(*c.final_logit_softcapping) : 0.0f;
}

Decoder::Decoder(const Model& m) : m_(m) {
  const auto& c = m.config();
  if (c.enable_moe_block) {
    expert_counts_.assign(size_t(c.num_layers), std::vector<int64_t>(size_t(c.num_experts), 0));
    expert_calls_ = expert_counts_;
  }
  new_k_.resize(size_t(c.num_layers));
  new_v_.resize(size_t(c.num_layers));
}

void Decoder::reset_expert_stats() {
  for (auto& v : expert_counts_) std::fill(v.begin(), v.end(), 0);
  for (auto& v : expert_calls_) std::fill(v.begin(), v.end(), 0);
}

void Decoder::set_lora(LoraViews views) {
  GT_CHECK(!views.bound || int64_t(views.views.size()) == m_.config().num_layers * kNumProj,
           "set_lora: views for ", views.views.size() / kNumProj, " layers, the model has ", m_.config().num_layers);
  lora_ = std::move(views);
}

const LoraView& Decoder::lora(int64_t layer, Proj p) const {
  static const LoraView none;
  return lora_.bound ? lora_.at(layer, p) : none;
}

const LoraView& Decoder::seg_lora(const LoraSegment& g, int64_t layer, Proj p) const {
  static const LoraView none;
  return g.views->bound ? g.views->at(layer, p) : none;
}

void Decoder::project(int64_t li, Proj p, const Weight2D& w, const float* x, int64_t T, float* y, LayerActs* A) {
  linear(x, T, w, y);
  if (!segs_.empty()) {  // mixed adapters: each group's LoRA product over its own rows only
    GT_CHECK(!A, "training takes no per-chunk LoRA views");
    // Groups of few rows (decoding sequences) go together through one grouped kernel (one
    // fork/join for all adapters); larger groups (prefill chunks) through the GEMM path.
    LoraGroup small[16];
    int64_t n_small = 0;
    for (const LoraSegment& g : segs_) {
      const LoraView& v = seg_lora(g, li, p);
      if (!v) continue;
      if (g.t1 - g.t0 <= kGroupedLoraMaxRows && n_small < 16) small[n_small++] = {&v, g.t0, g.t1};
      else lora_linear_forward(v, x + g.t0 * w.k, g.t1 - g.t0, y + g.t0 * w.n, nullptr, nullptr, lora_ws_);
    }
    if (n_small > 0) lora_linear_forward_grouped(small, n_small, x, w.k, y, w.n, lora_ws_.t);
    return;
  }
  const LoraView& v = lora(li, p);
  if (!v) return;
  // y += s · (x Aᵀ) Bᵀ; training: lora_B(lora_A(dropout(x))), the base path sees x.
  float* lt = A ? sized(A->lt[size_t(proj_index(p))], T * v.r) : nullptr;
  lora_linear_forward(v, x, T, y, lt, A ? dropout() : nullptr, lora_ws_);
}

void Decoder::prepare(const std::vector<SeqChunk>& chunks, int64_t& T) {
  T = 0;
  for (const auto& ch : chunks) {
    GT_CHECK(ch.n > 0 && ch.tokens, "forward: empty sequence chunk");
    if (ch.cache) ch.cache->reserve_more(ch.n);
    T += ch.n;
  }
  ids_.resize(size_t(T));
  pos_.resize(size_t(T));
  segs_.clear();
  tok_seg_.clear();
  if (std::any_of(chunks.begin(), chunks.end(), [](const SeqChunk& ch) { return ch.lora != nullptr; })) {
    int64_t t0 = 0;
    for (const auto& ch : chunks) {
      const LoraViews* v = ch.lora ? ch.lora : &lora_;
      GT_CHECK(!v->bound || int64_t(v->views.size()) == m_.config().num_layers * kNumProj,
               "forward: a chunk's LoRA views cover ", v->views.size() / kNumProj, " layers, the model has ",
               m_.config().num_layers);
      if (!segs_.empty() && segs_.back().views == v) segs_.back().t1 += ch.n;
      else segs_.push_back({v, t0, t0 + ch.n});
      t0 += ch.n;
    }
    tok_seg_.resize(size_t(T));
    for (size_t g = 0; g < segs_.size(); ++g)
      for (int64_t i = segs_[g].t0; i < segs_[g].t1; ++i) tok_seg_[size_t(i)] = int32_t(g);
  }
  int64_t t = 0;
  for (const auto& ch : chunks) {
    const int64_t p0 = ch.cache ? ch.cache->pos() : 0;
    for (int64_t i = 0; i < ch.n; ++i, ++t) {
      ids_[size_t(t)] = ch.tokens[i];
      pos_[size_t(t)] = p0 + i;
    }
  }
}

void Decoder::embed(int64_t T) {
  const auto& c = m_.config();
  const auto& w = m_.weights();
  const int64_t H = c.hidden_size;
  // E[id] * scale (the scale rounded to the table's dtype, as transformers does).
  float* h = sized(h_, T * H);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = ids_[size_t(t)];
    if (id < 0 || id >= w.embed.n) fail("token id ", id, " is outside the vocabulary (", w.embed.n, " rows)");
    weight_rows_to_f32(w.embed, id, 1, h + t * H);  // dense or quantized table
    for (int64_t j = 0; j < H; ++j) h[t * H + j] *= w.embed_scale;
  }
  if (c.family == Family::Gemma4 && c.hidden_size_per_layer_input > 0) ple_inputs(T);
}

void Decoder::ple_inputs(int64_t T) {
  const auto& c = m_.config();
  const auto& w = m_.weights();
  const int64_t L = c.num_layers, P = c.hidden_size_per_layer_input, LP = L * P;
  float* ple = sized(ple_, T * LP);
  // Context part: (x @ Wplpᵀ) * H^-½, then RMSNorm over each P-vector.
  linear(h_.data(), T, w.ple_model_proj, ple);
  const float s = float(1.0 / std::sqrt(double(c.hidden_size)));
  for (int64_t i = 0; i < T * LP; ++i) ple[i] *= s;
  rmsnorm_forward(ple, w.ple_proj_norm.data(), ple, T * L, P, float(c.rms_norm_eps));
  // Token part: one mapped row of the PLE table per token (only looked-up rows are touched).
  float* row = sized(tmp_, LP);
  const size_t es = dtype_size(w.ple_embed.dtype);
  const float inv_sqrt2 = float(1.0 / std::sqrt(2.0));
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = ids_[size_t(t)];
    if (id < 0 || id >= w.ple_embed.n) fail("token id ", id, " is outside the per-layer embedding table (", w.ple_embed.n, " rows)");
    to_f32(w.ple_embed.dtype, static_cast<const uint8_t*>(w.ple_embed.data) + size_t(id) * size_t(LP) * es, row, size_t(LP));
    float* p = ple + t * LP;
    for (int64_t j = 0; j < LP; ++j) p[j] = (p[j] + row[j] * w.ple_embed_scale) * inv_sqrt2;
  }
}

void Decoder::attention_block(int64_t li, const std::vector<SeqChunk>& chunks, int64_t T, LayerActs& A, bool train) {
  const auto& c = m_.config();
  const LayerSpec& s = m_.specs()[size_t(li)];
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, hd = s.head_dim, nq = s.num_heads * hd, nkv = s.num_kv_heads * hd;
  const float eps = float(c.rms_norm_eps);

  float* a = sized(A.a, T * H);
  rmsnorm_forward(h_.data(), lw.input_norm.data(), a, T, H, eps, sized(A.rs_in, T));
  float* q0 = sized(A.q0, T * nq);
  project(li, Proj::q_proj, lw.q, a, T, q0, train ? &A : nullptr);
  float* q = sized(A.q, T * nq);
  rmsnorm_forward(q0, lw.q_norm.data(), q, T * s.num_heads, hd, eps, sized(A.rs_q, T * s.num_heads));
  rope_forward(q, pos_.data(), T, s.num_heads, hd, s.inv_freq.data());

  if (s.kv_donor < 0) {
    float* k0 = sized(A.k0, T * nkv);
    project(li, Proj::k_proj, lw.k, a, T, k0, train ? &A : nullptr);
    float* v0 = sized(A.v0, T * nkv);
    if (s.k_eq_v) std::memcpy(v0, k0, size_t(T * nkv) * 4);  // V from the raw k_proj output
    else project(li, Proj::v_proj, lw.v, a, T, v0, train ? &A : nullptr);
    float* k = sized(A.k, T * nkv);
    rmsnorm_forward(k0, lw.k_norm.data(), k, T * s.num_kv_heads, hd, eps, sized(A.rs_k, T * s.num_kv_heads));
    rope_forward(k, pos_.data(), T, s.num_kv_heads, hd, s.inv_freq.data());
    float* v = sized(A.v, T * nkv);
    if (s.v_norm) rmsnorm_forward(v0, nullptr, v, T * s.num_kv_heads, hd, eps, sized(A.rs_v, T * s.num_kv_heads));
    else std::memcpy(v, v0, size_t(T * nkv) * 4);
    if (!train) {  // kept per layer: the cache commit and KV-shared layers read them
      std::memcpy(sized(new_k_[size_t(li)], T * nkv), k, size_t(T * nkv) * 4);
      std::memcpy(sized(new_v_[size_t(li)], T * nkv), v, size_t(T * nkv) * 4);
    }
  }
  const int64_t src = s.kv_donor >= 0 ? s.kv_donor : li;
  const float* nk = train ? acts_[size_t(src)].k.data() : new_k_[size_t(src)].data();
  const float* nv = train ? acts_[size_t(src)].v.data() : new_v_[size_t(src)].data();

  float* out = sized(A.att, T * nq);
  AttnShape shape{s.num_heads, s.num_kv_heads, hd, s.attn_scale, s.window};
  int64_t off = 0;
  for (const SeqChunk& ch : chunks) {
    KvSource kv;
    kv.row = nkv;
    kv.new_k = nk + off * nkv;
    kv.new_v = nv + off * nkv;
    kv.new_stride = nkv;
    int64_t start = 0;
    if (ch.cache) {
      const LayerCache& lc = ch.cache->layer(src);
      start = ch.cache->pos();
      kv.cache_k = lc.k.data();
      kv.cache_v = lc.v.data();
      kv.cap = lc.cap;
      kv.ring = lc.ring;
    }
    attention_forward(shape, q + off * nq, nq, ch.n, start, kv, out + off * nq, nq);
    off += ch.n;
  }
  float* o0 = sized(A.o0, T * H);
  project(li, Proj::o_proj, lw.o, out, T, o0, train ? &A : nullptr);
  float* o = sized(tmp_, T * H);
  rmsnorm_forward(o0, lw.post_attn_norm.data(), o, T, H, eps, sized(A.rs_o, T));
  add_inplace(h_.data(), o, T * H);
}

template <class TokOf>
void Decoder::expert_lora(int64_t li, Proj p, int64_t e, const float* x, int64_t n, float* y, TokOf tok,
                          LoraScratch& ws) const {
  // The gathered rows are in token order, so each adapter group's rows are one contiguous run.
  const int64_t in = p == Proj::experts_gate_up_proj ? m_.config().hidden_size : m_.config().moe_intermediate_size;
  const int64_t out = p == Proj::experts_gate_up_proj ? 2 * m_.config().moe_intermediate_size : m_.config().hidden_size;
  for (int64_t r0 = 0; r0 < n;) {
    const int32_t g = tok_seg_[size_t(tok(r0))];
    int64_t r1 = r0 + 1;
    while (r1 < n && tok_seg_[size_t(tok(r1))] == g) ++r1;
    const LoraView& v = seg_lora(segs_[size_t(g)], li, p);
    if (v) lora_expert_forward(v, e, x + r0 * in, r1 - r0, y + r0 * out, nullptr, ws);
    r0 = r1;
  }
}

void Decoder::expert_forward(int64_t li, int64_t e, const std::vector<std::pair<int64_t, int64_t>>& toks,
                             const float* x2, ExpertScratch& s, bool save_t) const {
  const auto& c = m_.config();
  const ExpertWeights& ew = m_.weights().layers[size_t(li)].experts[size_t(e)];
  const int64_t H = c.hidden_size, Im = c.moe_intermediate_size, n = int64_t(toks.size());
  const LoraView& lgu = lora(li, Proj::experts_gate_up_proj);
  const LoraView& ldn = lora(li, Proj::experts_down_proj);
  s.xin.resize(size_t(n * H));
  for (int64_t r = 0; r < n; ++r) std::memcpy(&s.xin[size_t(r * H)], x2 + toks[size_t(r)].first * H, size_t(H) * 4);
  s.gu.resize(size_t(n * 2 * Im));
  s.act.resize(size_t(n * Im));
  s.y.resize(size_t(n * H));
  auto tok_of = [&](int64_t r) { return toks[size_t(r)].first; };
  linear(s.xin.data(), n, ew.gate_up, s.gu.data());
  if (!segs_.empty()) expert_lora(li, Proj::experts_gate_up_proj, e, s.xin.data(), n, s.gu.data(), tok_of, s.ws);
  else if (lgu) lora_expert_forward(lgu, e, s.xin.data(), n, s.gu.data(), save_t ? sized(s.t_gu, n * lgu.r) : nullptr, s.ws);
  gelu_gate_forward(s.gu.data(), 2 * Im, s.gu.data() + Im, 2 * Im, s.act.data(), n, Im);
  linear(s.act.data(), n, ew.down, s.y.data());
  if (!segs_.empty()) expert_lora(li, Proj::experts_down_proj, e, s.act.data(), n, s.y.data(), tok_of, s.ws);
  else if (ldn) lora_expert_forward(ldn, e, s.act.data(), n, s.y.data(), save_t ? sized(s.t_dn, n * ldn.r) : nullptr, s.ws);
}

void Decoder::moe_block(int64_t li, int64_t T, LayerActs& A, float* out) {
  const auto& c = m_.config();
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, E = c.num_experts, K = c.top_k_experts;
  const float eps = float(c.rms_norm_eps);
  const float* resid = h_.data();
  // Router: scaleless norm × scale × H^-½ → logits → softmax → top-k → renormalise → per-expert scale.
  const MoeRouter router{&lw.router, lw.router_scale.data(), lw.per_expert_scale.data(), E, K, eps};
  float* topw = sized(A.topw, T * K);
  int32_t* topk = sized(A.topk, T * K);
  moe_router_forward(router, resid, T, H, sized(A.z, T * H), sized(A.rs_z, T), sized(A.probs, T * E), topk, topw);
  std::vector<std::vector<std::pair<int64_t, int64_t>>> routed(static_cast<size_t>(E));  // expert -> (token, slot)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = topk[t * K + k];
      routed[size_t(e)].push_back({t, k});
      if (!recomputing_) ++expert_counts_[size_t(li)][size_t(e)];
    }
  // Experts: each routed expert runs once over the tokens that chose it (grouped GEMM); its
  // LoRA, if any, costs only those tokens. The experts run in parallel, one thread per expert (its
  // GEMMs single-threaded inside): an expert sees ~T·K/E tokens, too few to split one GEMM across
  // threads without the join costing more than the product. Each (token, slot) output lands in its
  // own row of `slots`; the weighted sum per token then adds them in expert order, as a serial loop
  // over experts would, so the result does not depend on the thread count or the schedule.
  float* x2 = sized(A.x2, T * H);
  rmsnorm_forward(resid, lw.pre_ff_norm_2.data(), x2, T, H, eps, sized(A.rs_x2, T));
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e)
    if (!routed[size_t(e)].empty()) {
      active.push_back(e);
      if (!recomputing_) ++expert_calls_[size_t(li)][size_t(e)];
    }
  float* slots = sized(moe_slots_, T * K * H);
#pragma omp parallel
  {
    ExpertScratch es;
#pragma omp for schedule(dynamic, 1)
    for (size_t ai = 0; ai < active.size(); ++ai) {
      const int64_t e = active[ai];
      const auto& toks = routed[size_t(e)];
      expert_forward(li, e, toks, x2, es, false);
      for (size_t r = 0; r < toks.size(); ++r)
        std::memcpy(slots + (toks[r].first * K + toks[r].second) * H, &es.y[r * size_t(H)], size_t(H) * 4);
    }
  }
  moe_combine_slots(topk, topw, slots, T, K, H, out);
}

void Decoder::mlp_block(int64_t li, int64_t T, LayerActs& A, bool train) {
  const auto& c = m_.config();
  const LayerSpec& s = m_.specs()[size_t(li)];
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, I = s.intermediate;
  const float eps = float(c.rms_norm_eps);
  if (train) std::memcpy(sized(A.h_mid, T * H), h_.data(), size_t(T * H) * 4);
  float* x = sized(A.x, T * H);
  rmsnorm_forward(h_.data(), lw.pre_ff_norm.data(), x, T, H, eps, sized(A.rs_x, T));
  float* g = sized(A.g, T * I);
  float* u = sized(A.u, T * I);
  project(li, Proj::gate_proj, lw.gate, x, T, g, train ? &A : nullptr);
  project(li, Proj::up_proj, lw.up, x, T, u, train ? &A : nullptr);
  float* act = sized(A.act, T * I);
  gelu_gate_forward(g, I, u, I, act, T, I);
  float* f = sized(A.f, T * H);
  if (s.moe) {
    float* f0 = sized(A.f0, T * H);
    project(li, Proj::down_proj, lw.down, act, T, f0, train ? &A : nullptr);
    float* f1 = sized(A.f1, T * H);
    rmsnorm_forward(f0, lw.post_ff_norm_1.data(), f1, T, H, eps, sized(A.rs_f0, T));
    float* moe = sized(A.moe, T * H);
    moe_block(li, T, A, moe);
    if (train && aux_weight_ > 0) {
      const double v = moe_balance_forward(A.probs.data(), A.topk.data(), c.num_experts, c.top_k_experts, aux_rows_,
                                           aux_weight_, A.aux_coef);
      if (!recomputing_) aux_sum_ += aux_scale_ * v;
    }
    rmsnorm_forward(moe, lw.post_ff_norm_2.data(), f, T, H, eps, sized(A.rs_moe, T));
    add_inplace(f, f1, T * H);
  } else {
    project(li, Proj::down_proj, lw.down, act, T, f, train ? &A : nullptr);
  }
  float* fn = sized(tmp_, T * H);
  rmsnorm_forward(f, lw.post_ff_norm.data(), fn, T, H, eps, sized(A.rs_f, T));
  add_inplace(h_.data(), fn, T * H);
  if (s.ple) {
    if (train) std::memcpy(sized(A.h_post, T * H), h_.data(), size_t(T * H) * 4);
    const int64_t P = c.hidden_size_per_layer_input, LP = c.num_layers * P;
    float* gp0 = sized(A.gp0, T * P);
    float* gp = sized(A.gp, T * P);
    linear(h_.data(), T, lw.ple_gate, gp0);
    for (int64_t t = 0; t < T; ++t) {
      const float* pl = ple_.data() + t * LP + li * P;
      for (int64_t j = 0; j < P; ++j) gp[t * P + j] = gelu_tanh(gp0[t * P + j]) * pl[j];
    }
    float* p0 = sized(A.p0, T * H);
    linear(gp, T, lw.ple_proj, p0);
    float* p = sized(tmp_, T * H);
    rmsnorm_forward(p0, lw.post_ple_norm.data(), p, T, H, eps, sized(A.rs_p, T));
    add_inplace(h_.data(), p, T * H);
  }
  if (s.layer_scalar) {
    float* h = h_.data();
    for (int64_t i = 0; i < T * H; ++i) h[i] *= lw.layer_scalar;
  }
}

void Decoder::layer_forward(int64_t li, const std::vector<SeqChunk>& chunks, int64_t T, LayerActs& A, bool train) {
  if (train) std::memcpy(sized(A.h_in, T * m_.config().hidden_size), h_.data(), size_t(T * m_.config().hidden_size) * 4);
  attention_block(li, chunks, T, A, train);
  mlp_block(li, T, A, train);
}

void Decoder::final_rows(LogitsFor mode, const std::vector<SeqChunk>& chunks, int64_t T, float* x, int64_t& rows) {
  const int64_t H = m_.config().hidden_size;
  rows = mode == LogitsFor::All ? T : int64_t(chunks.size());
  if (mode == LogitsFor::All) {
    std::memcpy(x, h_.data(), size_t(T * H) * 4);
  } else {
    int64_t off = 0, r = 0;
    for (const auto& ch : chunks) {
      off += ch.n;
      std::memcpy(x + r++ * H, h_.data() + (off - 1) * H, size_t(H) * 4);
    }
  }
  rmsnorm_forward(x, m_.weights().final_norm.data(), x, rows, H, float(m_.config().rms_norm_eps));
}

int64_t Decoder::forward(const std::vector<SeqChunk>& chunks, LogitsFor mode, std::vector<float>& logits) {
  const auto& c = m_.config();
  const auto& w = m_.weights();
  int64_t T = 0;
  prepare(chunks, T);
  embed(T);
  for (int64_t li = 0; li < c.num_layers; ++li) layer_forward(li, chunks, T, scratch_, false);
  // Commit this chunk's K/V to the caches only now: KV-shared layers read their donor's
  // pre-update cache plus the chunk's fresh K/V, exactly like the donor itself.
  int64_t off = 0;
  for (const auto& ch : chunks) {
    if (ch.cache) {
      for (int64_t li = 0; li < c.num_layers; ++li) {
        const LayerSpec& s = m_.specs()[size_t(li)];
        if (s.kv_donor >= 0) continue;
        const int64_t row = s.num_kv_heads * s.head_dim;
        ch.cache->write(li, new_k_[size_t(li)].data() + off * row, new_v_[size_t(li)].data() + off * row, row, ch.n);
      }
      ch.cache->advance(ch.n);
    }
    off += ch.n;
  }
  if (mode == LogitsFor::None) return 0;
  int64_t rows = 0;
  float* x = sized(fin_, (mode == LogitsFor::All ? T : int64_t(chunks.size())) * c.hidden_size);
  final_rows(mode, chunks, T, x, rows);
  const int64_t V = w.lm_head.n;
  logits.resize(size_t(rows * V));
  linear(x, rows, w.lm_head, logits.data());
  softcap_forward(logits.data(), int64_t(logits.size()), final_logit_softcap(c));
  return rows;
}

}  // namespace gt
