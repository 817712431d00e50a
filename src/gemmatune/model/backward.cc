// Training side of the decoder: the loss (kernels/cross_entropy: chunked over vocabulary rows,
// with the final-softcap backward) and the backward pass of every block, mirroring decoder.cc
// step by step. Frozen weights only pass activation gradients; parameter gradients exist for
// LoRA tensors alone (kernels/lora_linear).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemmatune/kernels/attention.h"
#include "gemmatune/kernels/cross_entropy.h"
#include "gemmatune/kernels/gelu.h"
#include "gemmatune/kernels/lora_linear.h"
#include "gemmatune/kernels/moe_balance.h"
#include "gemmatune/kernels/moe_router.h"
#include "gemmatune/kernels/rmsnorm.h"
#include "gemmatune/kernels/rope.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/util/buffer.h"
#include "gemmatune/util/error.h"

namespace gt {

void Decoder::project_backward(int64_t li, Proj p, const Weight2D& w, const float* x, const LayerActs& A,
                               const float* dy, int64_t T, float* dx, bool accumulate,
                               std::vector<std::vector<float>>& grads) {
  linear_backward_input(dy, T, w, dx, accumulate);
  const LoraView& v = lora(li, p);
  if (!v) return;
  lora_linear_backward(v, x, A.lt[size_t(proj_index(p))].data(), dy, T, dx, grad(v, false, grads), grad(v, true, grads),
                       dropout(), lora_ws_);
}

// The routed experts' backward: each expert's forward is recomputed over its tokens, then its
// gradient flows to the experts' input (dx2) and to the routing weights (dw [T, K]).
void Decoder::experts_backward(int64_t li, int64_t T, LayerActs& A, const float* dmoe, std::vector<float>& dx2,
                               std::vector<float>& dw, std::vector<std::vector<float>>& grads) {
  const auto& c = m_.config();
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, E = c.num_experts, K = c.top_k_experts, Im = c.moe_intermediate_size;
  const LoraView& lgu = lora(li, Proj::experts_gate_up_proj);
  const LoraView& ldn = lora(li, Proj::experts_down_proj);
  std::vector<std::vector<std::pair<int64_t, int64_t>>> routed(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) routed[size_t(A.topk[size_t(t * K + k)])].push_back({t, k});
  // Experts in parallel, as in the forward (model/decoder.cc moe_block): each expert's LoRA
  // gradients are its own slices of gA/gB and dw has a row per slot, so no two experts write the same
  // float; dx2 gets one row per (token, slot), summed per token in expert order afterwards.
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e)
    if (!routed[size_t(e)].empty()) active.push_back(e);
  float* slots = sized(moe_slots_, T * K * H);
  const ExpertWeights* experts = lw.experts.data();
  float* gA_gu = lgu ? grad(lgu, false, grads) : nullptr;
  float* gB_gu = lgu ? grad(lgu, true, grads) : nullptr;
  float* gA_dn = ldn ? grad(ldn, false, grads) : nullptr;
  float* gB_dn = ldn ? grad(ldn, true, grads) : nullptr;
  const float* x2 = A.x2.data();
  const float* topw = A.topw.data();
  float* dwp = dw.data();
#pragma omp parallel
  {
    ExpertScratch es;
    std::vector<float> dy, dact, dgu, dxin;
    const std::vector<float>& xin = es.xin;
    std::vector<float>& gu = es.gu;
    const std::vector<float>& act = es.act;
    const std::vector<float>& y = es.y;
    std::vector<float>& t_gu = es.t_gu;
    std::vector<float>& t_dn = es.t_dn;
    LoraScratch& ws = es.ws;
#pragma omp for schedule(dynamic, 1)
    for (size_t ai = 0; ai < active.size(); ++ai) {
      const int64_t e = active[ai];
      const auto& toks = routed[size_t(e)];
      const int64_t n = int64_t(toks.size());
      expert_forward(li, e, toks, x2, es, true);  // recompute this expert's forward over its tokens
      // out[t] += w[t,k]·y  →  dy = w·dmoe[t], dw[t,k] = dmoe[t]·y
      dy.resize(size_t(n * H));
      for (int64_t r = 0; r < n; ++r) {
        const int64_t t = toks[size_t(r)].first, k = toks[size_t(r)].second;
        const float w = topw[t * K + k];
        double d = 0;
        for (int64_t j = 0; j < H; ++j) {
          dy[size_t(r * H + j)] = w * dmoe[t * H + j];
          d += double(dmoe[t * H + j]) * double(y[size_t(r * H + j)]);
        }
        dwp[t * K + k] = float(d);
      }
      dact.resize(size_t(n * Im));
      linear_backward_input(dy.data(), n, experts[e].down, dact.data());
      if (ldn) lora_expert_backward(ldn, e, act.data(), t_dn.data(), dy.data(), n, dact.data(), gA_dn, gB_dn, ws);
      dgu.resize(size_t(n * 2 * Im));
      gelu_gate_backward(gu.data(), 2 * Im, gu.data() + Im, 2 * Im, dact.data(), dgu.data(), 2 * Im, dgu.data() + Im,
                         2 * Im, n, Im);
      dxin.resize(size_t(n * H));
      linear_backward_input(dgu.data(), n, experts[e].gate_up, dxin.data());
      if (lgu) lora_expert_backward(lgu, e, xin.data(), t_gu.data(), dgu.data(), n, dxin.data(), gA_gu, gB_gu, ws);
      for (int64_t r = 0; r < n; ++r)
        std::memcpy(slots + (toks[size_t(r)].first * K + toks[size_t(r)].second) * H, &dxin[size_t(r * H)],
                    size_t(H) * 4);
    }
  }
  moe_combine_slots(A.topk.data(), nullptr, slots, T, K, H, dx2.data());
}

void Decoder::moe_backward(int64_t li, int64_t T, LayerActs& A, const float* dmoe, float* dh_mid,
                           std::vector<std::vector<float>>& grads) {
  const auto& c = m_.config();
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, E = c.num_experts, K = c.top_k_experts;
  std::vector<float> dx2(static_cast<size_t>(T * H), 0.0f), dw(static_cast<size_t>(T * K), 0.0f);
  experts_backward(li, T, A, dmoe, dx2, dw, grads);
  rmsnorm_backward(A.h_mid.data(), lw.pre_ff_norm_2.data(), dx2.data(), A.rs_x2.data(), dh_mid, T, H, true);
  // Router (frozen, but differentiable in its input); the load-balance loss adds its own dL/dprobs.
  std::vector<float> daux;
  if (aux_weight_ > 0) {
    daux.assign(size_t(T * E), 0.0f);
    moe_balance_backward(A.aux_coef, E, aux_rows_, aux_scale_, daux.data());
  }
  const MoeRouter router{&lw.router, lw.router_scale.data(), lw.per_expert_scale.data(), E, K, float(c.rms_norm_eps)};
  moe_router_backward(router, A.h_mid.data(), A.rs_z.data(), A.probs.data(), A.topk.data(), dw.data(),
                      daux.empty() ? nullptr : daux.data(), T, H, dh_mid);
}

void Decoder::layer_backward(int64_t li, const std::vector<SeqChunk>& chunks, int64_t T, LayerActs& A, float* dh,
                             std::vector<std::vector<float>>& grads) {
  const auto& c = m_.config();
  const LayerSpec& s = m_.specs()[size_t(li)];
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, I = s.intermediate, hd = s.head_dim, nq = s.num_heads * hd, nkv = s.num_kv_heads * hd;
  if (s.layer_scalar)
    for (int64_t i = 0; i < T * H; ++i) dh[i] *= lw.layer_scalar;
  std::vector<float> tmp(static_cast<size_t>(T * H));
  if (s.ple) {
    const int64_t P = c.hidden_size_per_layer_input, LP = c.num_layers * P;
    rmsnorm_backward(A.p0.data(), lw.post_ple_norm.data(), dh, A.rs_p.data(), tmp.data(), T, H);
    std::vector<float> dgp(static_cast<size_t>(T * P));
    linear_backward_input(tmp.data(), T, lw.ple_proj, dgp.data());
    for (int64_t t = 0; t < T; ++t) {
      const float* pl = ple_.data() + t * LP + li * P;
      for (int64_t j = 0; j < P; ++j) dgp[size_t(t * P + j)] *= pl[j] * gelu_tanh_grad(A.gp0[size_t(t * P + j)]);
    }
    linear_backward_input(dgp.data(), T, lw.ple_gate, dh, true);
  }
  // MLP: h_post = h_mid + norm(f); dh now is dL/dh_post and becomes dL/dh_mid.
  std::vector<float> df(static_cast<size_t>(T * H));
  rmsnorm_backward(A.f.data(), lw.post_ff_norm.data(), dh, A.rs_f.data(), df.data(), T, H);
  const float* df0 = df.data();
  std::vector<float> df0_buf;
  if (s.moe) {
    df0_buf.resize(size_t(T * H));
    rmsnorm_backward(A.f0.data(), lw.post_ff_norm_1.data(), df.data(), A.rs_f0.data(), df0_buf.data(), T, H);
    std::vector<float> dmoe(static_cast<size_t>(T * H));
    rmsnorm_backward(A.moe.data(), lw.post_ff_norm_2.data(), df.data(), A.rs_moe.data(), dmoe.data(), T, H);
    moe_backward(li, T, A, dmoe.data(), dh, grads);
    df0 = df0_buf.data();
  }
  std::vector<float> dact(static_cast<size_t>(T * I));
  project_backward(li, Proj::down_proj, lw.down, A.act.data(), A, df0, T, dact.data(), false, grads);
  std::vector<float> dg(static_cast<size_t>(T * I)), du(static_cast<size_t>(T * I));
  gelu_gate_backward(A.g.data(), I, A.u.data(), I, dact.data(), dg.data(), I, du.data(), I, T, I);
  std::vector<float> dx(static_cast<size_t>(T * H));
  project_backward(li, Proj::gate_proj, lw.gate, A.x.data(), A, dg.data(), T, dx.data(), false, grads);
  project_backward(li, Proj::up_proj, lw.up, A.x.data(), A, du.data(), T, dx.data(), true, grads);
  rmsnorm_backward(A.h_mid.data(), lw.pre_ff_norm.data(), dx.data(), A.rs_x.data(), dh, T, H, true);

  // Attention: h_mid = h_in + norm(o0); dh becomes dL/dh_in.
  rmsnorm_backward(A.o0.data(), lw.post_attn_norm.data(), dh, A.rs_o.data(), tmp.data(), T, H);
  std::vector<float> datt(static_cast<size_t>(T * nq));
  project_backward(li, Proj::o_proj, lw.o, A.att.data(), A, tmp.data(), T, datt.data(), false, grads);
  const int64_t src = s.kv_donor >= 0 ? s.kv_donor : li;
  LayerActs& S = acts_[size_t(src)];
  // K/V gradients accumulate in the source layer's record (shared layers run their backward first).
  std::vector<float>& dK = kv_grad_k_[size_t(src)];
  std::vector<float>& dV = kv_grad_v_[size_t(src)];
  if (dK.empty()) {
    dK.assign(size_t(T * nkv), 0.0f);
    dV.assign(size_t(T * nkv), 0.0f);
  }
  std::vector<float> dq(static_cast<size_t>(T * nq));
  AttnShape shape{s.num_heads, s.num_kv_heads, hd, s.attn_scale, s.window};
  int64_t off = 0;
  for (const SeqChunk& ch : chunks) {
    attention_backward(shape, A.q.data() + off * nq, S.k.data() + off * nkv, S.v.data() + off * nkv, ch.n,
                       datt.data() + off * nq, dq.data() + off * nq, dK.data() + off * nkv, dV.data() + off * nkv);
    off += ch.n;
  }
  rope_backward(dq.data(), pos_.data(), T, s.num_heads, hd, s.inv_freq.data());
  std::vector<float> dq0(static_cast<size_t>(T * nq));
  rmsnorm_backward(A.q0.data(), lw.q_norm.data(), dq.data(), A.rs_q.data(), dq0.data(), T * s.num_heads, hd);
  std::vector<float> da(static_cast<size_t>(T * H));
  project_backward(li, Proj::q_proj, lw.q, A.a.data(), A, dq0.data(), T, da.data(), false, grads);
  if (s.kv_donor < 0) {
    rope_backward(dK.data(), pos_.data(), T, s.num_kv_heads, hd, s.inv_freq.data());
    std::vector<float> dk0(static_cast<size_t>(T * nkv)), dv0(static_cast<size_t>(T * nkv));
    rmsnorm_backward(A.k0.data(), lw.k_norm.data(), dK.data(), A.rs_k.data(), dk0.data(), T * s.num_kv_heads, hd);
    if (s.v_norm) rmsnorm_backward(A.v0.data(), nullptr, dV.data(), A.rs_v.data(), dv0.data(), T * s.num_kv_heads, hd);
    else dv0 = std::vector<float>(dV.begin(), dV.begin() + T * nkv);
    if (s.k_eq_v) {
      for (int64_t i = 0; i < T * nkv; ++i) dk0[size_t(i)] += dv0[size_t(i)];
    } else {
      project_backward(li, Proj::v_proj, lw.v, A.a.data(), A, dv0.data(), T, da.data(), true, grads);
    }
    project_backward(li, Proj::k_proj, lw.k, A.a.data(), A, dk0.data(), T, da.data(), true, grads);
  }
  rmsnorm_backward(A.h_in.data(), lw.input_norm.data(), da.data(), A.rs_in.data(), dh, T, H, true);
}

Decoder::LossResult Decoder::loss_and_grad(const float* h_final, int64_t T, const std::vector<SeqChunk>& chunks,
                                           const std::vector<uint8_t>& mask, double norm, float* dh) {
  const auto& c = m_.config();
  const auto& w = m_.weights();
  const int64_t H = c.hidden_size;
  GT_CHECK(int64_t(mask.size()) == T, "loss: loss_mask has ", mask.size(), " entries for ", T, " tokens");
  // Scored rows and their targets (the next token of the same chunk).
  std::vector<int64_t> rows;
  std::vector<int32_t> targets;
  int64_t off = 0;
  for (const auto& ch : chunks) {
    for (int64_t i = 0; i < ch.n; ++i)
      if (mask[size_t(off + i)]) {
        if (i + 1 >= ch.n) fail("loss: loss_mask marks the last token of a sequence (it has no next token to predict)");
        rows.push_back(off + i);
        targets.push_back(ch.tokens[i + 1]);
      }
    off += ch.n;
  }
  LossResult res;
  res.tokens = int64_t(rows.size());
  if (dh) std::memset(dh, 0, size_t(T * H) * 4);
  if (rows.empty()) return res;
  const double denom = norm > 0 ? norm : double(rows.size());
  const LmHeadLoss lm{w.final_norm.data(), float(c.rms_norm_eps), &w.lm_head, final_logit_softcap(c)};
  res.sum = cross_entropy_chunked(lm, h_final, H, rows.data(), targets.data(), int64_t(rows.size()), denom, dh);
  return res;
}

Decoder::LossResult Decoder::loss(const std::vector<SeqChunk>& chunks, const std::vector<uint8_t>& loss_mask) {
  for (const auto& ch : chunks) GT_CHECK(ch.cache == nullptr, "loss: chunks must not use a KV cache");
  int64_t T = 0;
  prepare(chunks, T);
  embed(T);
  for (int64_t li = 0; li < m_.config().num_layers; ++li) layer_forward(li, chunks, T, scratch_, false);
  return loss_and_grad(h_.data(), T, chunks, loss_mask, 0, nullptr);
}

void Decoder::set_train_extras(const std::vector<SeqChunk>& chunks, const TrainExtras* extras) {
  const auto& c = m_.config();
  aux_sum_ = 0;
  if (!extras) return;
  dropout_.p = lora_.dropout;
  dropout_.seed = extras->dropout_seed;
  if (!(extras->moe_aux_weight > 0 && c.enable_moe_block)) return;
  int64_t moe_layers = 0;
  for (const auto& s : m_.specs()) moe_layers += s.moe ? 1 : 0;
  aux_weight_ = extras->moe_aux_weight / double(std::max<int64_t>(moe_layers, 1));
  aux_scale_ = extras->moe_aux_scale;
  aux_rows_.assign(1, 0);
  if (extras->row_chunks.empty()) {
    for (const auto& ch : chunks) aux_rows_.push_back(aux_rows_.back() + ch.n);
    return;
  }
  size_t ci = 0;
  for (int64_t n : extras->row_chunks) {
    int64_t tok = 0;
    for (int64_t j = 0; j < n; ++j, ++ci) {
      GT_CHECK(ci < chunks.size(), "forward_backward: row_chunks counts more chunks than the ", chunks.size(), " given");
      tok += chunks[ci].n;
    }
    aux_rows_.push_back(aux_rows_.back() + tok);
  }
  GT_CHECK(ci == chunks.size(), "forward_backward: row_chunks counts ", ci, " chunks, ", chunks.size(), " given");
}

// Two gradient slots per adapter module (A, B), sized from the views; kept when already right.
void Decoder::size_grads(std::vector<std::vector<float>>& grads) const {
  if (grads.size() == size_t(2 * lora_.modules)) return;
  grads.assign(size_t(2 * lora_.modules), {});
  for (const LoraView& v : lora_.views)
    if (v) {
      grads[size_t(2 * v.slot)].assign(size_t(v.a_size()), 0.0f);
      grads[size_t(2 * v.slot + 1)].assign(size_t(v.b_size()), 0.0f);
    }
}

Decoder::LossResult Decoder::forward_backward(const std::vector<SeqChunk>& chunks, const std::vector<uint8_t>& loss_mask,
                                              std::vector<std::vector<float>>& grads, double loss_norm, bool checkpointing,
                                              const TrainExtras* extras) {
  GT_CHECK(lora_.bound, "forward_backward: no LoRA views set (LoRA parameters are the only trainable tensors)");
  for (const auto& ch : chunks) GT_CHECK(ch.cache == nullptr, "forward_backward: training chunks must not use a KV cache");
  const auto& c = m_.config();
  const int64_t L = c.num_layers, H = c.hidden_size;
  // Training extras live only for this call (cleared however it ends).
  struct Clear {
    Decoder& d;
    ~Clear() {
      d.dropout_.p = 0;
      d.aux_weight_ = 0;
    }
  } clear{*this};
  set_train_extras(chunks, extras);
  size_grads(grads);
  int64_t T = 0;
  prepare(chunks, T);
  GT_CHECK(segs_.empty(), "forward_backward: per-chunk LoRA views are for inference only; use set_lora");
  embed(T);
  acts_.resize(size_t(L));
  for (int64_t li = 0; li < L; ++li) {
    layer_forward(li, chunks, T, acts_[size_t(li)], true);
    if (checkpointing && !m_.specs()[size_t(li)].kv_publish) {
      // Keep only the layer input; everything else is recomputed during the backward pass.
      LayerActs keep;
      keep.h_in.swap(acts_[size_t(li)].h_in);
      acts_[size_t(li)] = std::move(keep);
    }
  }
  std::vector<float> dh(static_cast<size_t>(T * H));
  LossResult res = loss_and_grad(h_.data(), T, chunks, loss_mask, loss_norm, dh.data());
  kv_grad_k_.assign(size_t(L), {});
  kv_grad_v_.assign(size_t(L), {});
  for (int64_t li = L - 1; li >= 0; --li) {
    LayerActs& A = acts_[size_t(li)];
    if (checkpointing && A.q.empty()) {
      std::memcpy(h_.data(), A.h_in.data(), size_t(T * H) * 4);
      recomputing_ = true;
      layer_forward(li, chunks, T, A, true);
      recomputing_ = false;
    }
    layer_backward(li, chunks, T, A, dh.data(), grads);
    if (extras && extras->layer_grads_done) extras->layer_grads_done(li);
    if (checkpointing && !m_.specs()[size_t(li)].kv_publish) {
      LayerActs keep;
      keep.h_in.swap(A.h_in);
      A = std::move(keep);
    }
  }
  kv_grad_k_.clear();
  kv_grad_v_.clear();
  res.aux = aux_sum_;
  return res;
}

}  // namespace gt
