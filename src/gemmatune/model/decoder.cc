#include "gemmatune/model/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemmatune/kernels/attention.h"
#include "gemmatune/kernels/gelu.h"
#include "gemmatune/kernels/rmsnorm.h"
#include "gemmatune/kernels/rope.h"
#include "gemmatune/util/error.h"

namespace gt {

namespace {
template <class T>
T* sized(std::vector<T>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
  return v.data();
}

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}
}  // namespace

Decoder::Decoder(const Model& m) : m_(m) {
  const auto& c = m.config();
  if (c.enable_moe_block) {
    expert_counts_.assign(size_t(c.num_layers), std::vector<int64_t>(size_t(c.num_experts), 0));
    expert_calls_ = expert_counts_;
  }
  new_k_.resize(size_t(c.num_layers));
  new_v_.resize(size_t(c.num_layers));
}

void Decoder::ple_inputs(const std::vector<SeqChunk>& chunks, int64_t T) {
  (void)chunks;
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

void Decoder::attention_block(int64_t li, const std::vector<SeqChunk>& chunks, int64_t T) {
  const auto& c = m_.config();
  const LayerSpec& s = m_.specs()[size_t(li)];
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, hd = s.head_dim, nq = s.num_heads * hd, nkv = s.num_kv_heads * hd;
  const float eps = float(c.rms_norm_eps);

  float* a = sized(a_, T * H);
  rmsnorm_forward(h_.data(), lw.input_norm.data(), a, T, H, eps);
  float* q = sized(q_, T * nq);
  linear(a, T, lw.q, q);
  rmsnorm_forward(q, lw.q_norm.data(), q, T * s.num_heads, hd, eps);
  rope_forward(q, pos_.data(), T, s.num_heads, hd, s.inv_freq.data());

  if (s.kv_donor < 0) {
    float* k = sized(new_k_[size_t(li)], T * nkv);
    float* v = sized(new_v_[size_t(li)], T * nkv);
    linear(a, T, lw.k, k);
    if (s.k_eq_v) std::memcpy(v, k, size_t(T * nkv) * 4);  // V from the raw k_proj output
    else linear(a, T, lw.v, v);
    rmsnorm_forward(k, lw.k_norm.data(), k, T * s.num_kv_heads, hd, eps);
    rope_forward(k, pos_.data(), T, s.num_kv_heads, hd, s.inv_freq.data());
    if (s.v_norm) rmsnorm_forward(v, nullptr, v, T * s.num_kv_heads, hd, eps);
  }
  const int64_t src = s.kv_donor >= 0 ? s.kv_donor : li;
  const float* nk = new_k_[size_t(src)].data();
  const float* nv = new_v_[size_t(src)].data();

  float* out = sized(attn_, T * nq);
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
  float* o = sized(o_, T * H);
  linear(out, T, lw.o, o);
  rmsnorm_forward(o, lw.post_attn_norm.data(), o, T, H, eps);
  add_inplace(h_.data(), o, T * H);
}

void Decoder::moe_block(int64_t li, const float* resid, int64_t T, float* out) {
  const auto& c = m_.config();
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, E = c.num_experts, K = c.top_k_experts, Im = c.moe_intermediate_size;
  const float eps = float(c.rms_norm_eps);
  // Router: scaleless norm × scale × H^-½ → logits → softmax → top-k → renormalise → per-expert scale.
  std::vector<float> z(static_cast<size_t>(T * H)), logits(static_cast<size_t>(T * E));
  rmsnorm_forward(resid, nullptr, z.data(), T, H, eps);
  const float hs = float(1.0 / std::sqrt(double(H)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < H; ++j) z[size_t(t * H + j)] = z[size_t(t * H + j)] * lw.router_scale[size_t(j)] * hs;
  linear(z.data(), T, lw.router, logits.data());
  std::vector<std::vector<std::pair<int64_t, float>>> routed(static_cast<size_t>(E));  // expert -> (token, weight)
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    float* lg = &logits[size_t(t * E)];
    float mx = *std::max_element(lg, lg + E), sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += (lg[e] = std::exp(lg[e] - mx));
    for (int64_t e = 0; e < E; ++e) lg[e] /= sum;
    for (int64_t e = 0; e < E; ++e) idx[size_t(e)] = e;
    std::partial_sort(idx.begin(), idx.begin() + K, idx.end(), [&](int64_t x, int64_t y) {
      return lg[x] > lg[y] || (lg[x] == lg[y] && x < y);
    });
    float wsum = 0;
    for (int64_t k = 0; k < K; ++k) wsum += lg[idx[size_t(k)]];
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = idx[size_t(k)];
      routed[size_t(e)].push_back({t, lg[e] / wsum * lw.per_expert_scale[size_t(e)]});
      ++expert_counts_[size_t(li)][size_t(e)];
    }
  }
  // Experts: each routed expert runs once over the tokens that chose it (grouped GEMM).
  std::vector<float> x2(static_cast<size_t>(T * H));
  rmsnorm_forward(resid, lw.pre_ff_norm_2.data(), x2.data(), T, H, eps);
  std::memset(out, 0, size_t(T * H) * 4);
  std::vector<float> xin, gu, act, y;
  for (int64_t e = 0; e < E; ++e) {
    const auto& toks = routed[size_t(e)];
    const int64_t n = int64_t(toks.size());
    if (n == 0) continue;
    ++expert_calls_[size_t(li)][size_t(e)];
    xin.resize(size_t(n * H));
    for (int64_t r = 0; r < n; ++r) std::memcpy(&xin[size_t(r * H)], &x2[size_t(toks[size_t(r)].first * H)], size_t(H) * 4);
    gu.resize(size_t(n * 2 * Im));
    act.resize(size_t(n * Im));
    y.resize(size_t(n * H));
    linear(xin.data(), n, lw.experts[size_t(e)].gate_up, gu.data());
    gelu_gate_forward(gu.data(), 2 * Im, gu.data() + Im, 2 * Im, act.data(), n, Im);
    linear(act.data(), n, lw.experts[size_t(e)].down, y.data());
    for (int64_t r = 0; r < n; ++r) {
      const float wgt = toks[size_t(r)].second;
      float* dst = out + toks[size_t(r)].first * H;
      const float* src = &y[size_t(r * H)];
      for (int64_t j = 0; j < H; ++j) dst[j] += wgt * src[j];
    }
  }
}

void Decoder::mlp_block(int64_t li, int64_t T) {
  const auto& c = m_.config();
  const LayerSpec& s = m_.specs()[size_t(li)];
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, I = s.intermediate;
  const float eps = float(c.rms_norm_eps);
  float* x = sized(a_, T * H);
  rmsnorm_forward(h_.data(), lw.pre_ff_norm.data(), x, T, H, eps);
  float* g = sized(g_, T * I);
  float* u = sized(u_, T * I);
  linear(x, T, lw.gate, g);
  linear(x, T, lw.up, u);
  float* act = sized(act_, T * I);
  gelu_gate_forward(g, I, u, I, act, T, I);
  float* f = sized(f_, T * H);
  linear(act, T, lw.down, f);
  if (s.moe) {
    rmsnorm_forward(f, lw.post_ff_norm_1.data(), f, T, H, eps);
    float* f2 = sized(f2_, T * H);
    moe_block(li, h_.data(), T, f2);
    rmsnorm_forward(f2, lw.post_ff_norm_2.data(), f2, T, H, eps);
    add_inplace(f, f2, T * H);
  }
  rmsnorm_forward(f, lw.post_ff_norm.data(), f, T, H, eps);
  add_inplace(h_.data(), f, T * H);
  if (s.ple) {
    const int64_t P = c.hidden_size_per_layer_input, LP = c.num_layers * P;
    float* gp = sized(g_, T * P);
    linear(h_.data(), T, lw.ple_gate, gp);
    for (int64_t t = 0; t < T; ++t) {
      const float* pl = ple_.data() + t * LP + li * P;
      for (int64_t j = 0; j < P; ++j) gp[t * P + j] = gelu_tanh(gp[t * P + j]) * pl[j];
    }
    float* p = sized(f_, T * H);
    linear(gp, T, lw.ple_proj, p);
    rmsnorm_forward(p, lw.post_ple_norm.data(), p, T, H, eps);
    add_inplace(h_.data(), p, T * H);
  }
  if (s.layer_scalar) {
    float* h = h_.data();
    for (int64_t i = 0; i < T * H; ++i) h[i] *= lw.layer_scalar;
  }
}

int64_t Decoder::forward(const std::vector<SeqChunk>& chunks, LogitsFor mode, std::vector<float>& logits) {
  const auto& c = m_.config();
  const auto& w = m_.weights();
  const int64_t H = c.hidden_size;
  int64_t T = 0;
  for (const auto& ch : chunks) {
    GT_CHECK(ch.n > 0 && ch.tokens, "forward: empty sequence chunk");
    if (ch.cache) ch.cache->reserve_more(ch.n);
    T += ch.n;
  }
  ids_.resize(size_t(T));
  pos_.resize(size_t(T));
  {
    int64_t t = 0;
    for (const auto& ch : chunks) {
      const int64_t p0 = ch.cache ? ch.cache->pos() : 0;
      for (int64_t i = 0; i < ch.n; ++i, ++t) {
        ids_[size_t(t)] = ch.tokens[i];
        pos_[size_t(t)] = p0 + i;
      }
    }
  }
  // Embedding: E[id] * scale (the scale rounded to the table's dtype, as transformers does).
  float* h = sized(h_, T * H);
  const size_t es = dtype_size(w.embed.dtype);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = ids_[size_t(t)];
    if (id < 0 || id >= w.embed.n) fail("token id ", id, " is outside the vocabulary (", w.embed.n, " rows)");
    to_f32(w.embed.dtype, static_cast<const uint8_t*>(w.embed.data) + size_t(id) * size_t(H) * es, h + t * H, size_t(H));
    for (int64_t j = 0; j < H; ++j) h[t * H + j] *= w.embed_scale;
  }
  if (c.family == Family::Gemma4 && c.hidden_size_per_layer_input > 0) ple_inputs(chunks, T);

  for (int64_t li = 0; li < c.num_layers; ++li) {
    attention_block(li, chunks, T);
    mlp_block(li, T);
  }
  // Commit this chunk's K/V to the caches only now: KV-shared layers read their donor's
  // pre-update cache plus the chunk's fresh K/V, exactly like the donor itself.
  {
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
  }
  if (mode == LogitsFor::None) return 0;
  // Select the rows whose logits are wanted, normalise them, project with the LM head.
  int64_t rows = mode == LogitsFor::All ? T : int64_t(chunks.size());
  float* x = sized(a_, rows * H);
  if (mode == LogitsFor::All) {
    std::memcpy(x, h, size_t(T * H) * 4);
  } else {
    int64_t off = 0, r = 0;
    for (const auto& ch : chunks) {
      off += ch.n;
      std::memcpy(x + r++ * H, h + (off - 1) * H, size_t(H) * 4);
    }
  }
  rmsnorm_forward(x, w.final_norm.data(), x, rows, H, float(c.rms_norm_eps));
  const int64_t V = w.lm_head.n;
  logits.resize(size_t(rows * V));
  linear(x, rows, w.lm_head, logits.data());
  // Final logit softcap: Gemma 4 always; Gemma 3 only in *ForCausalLM (the multimodal class skips it).
  const bool softcap = c.final_logit_softcapping && *c.final_logit_softcapping > 0 &&
                       (c.family == Family::Gemma4 || c.causal_lm);
  if (softcap) {
    const float cap = float(*c.final_logit_softcapping);
    for (auto& v : logits) v = cap * std::tanh(v / cap);
  }
  return rows;
}

}  // namespace gt
