// Training side of the decoder: the loss (chunked over vocabulary rows, with the final-softcap
// backward) and the backward pass of every block, mirroring decoder.cc step by step. Frozen
// weights only pass activation gradients; parameter gradients exist for LoRA tensors alone.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemmatune/kernels/attention.h"
#include "gemmatune/kernels/dropout.h"
#include "gemmatune/kernels/gelu.h"
#include "gemmatune/kernels/matmul_tn.h"
#include "gemmatune/kernels/moe_balance.h"
#include "gemmatune/kernels/rmsnorm.h"
#include "gemmatune/kernels/rope.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/util/buffer.h"
#include "gemmatune/util/error.h"

namespace gt {

namespace {
constexpr int64_t kLossRows = 32;  // logits rows materialised at once: 32 x 262144 floats = 32 MiB
}  // namespace

void Decoder::project_backward(const Weight2D& w, const LoraModule* lm, const float* x, const float* lt, const float* dy,
                               int64_t T, float* dx, bool accumulate, std::vector<std::vector<float>>& grads) {
  linear_backward_input(dy, T, w, dx, accumulate);
  if (!lm) return;
  const int64_t r = lm->r, mi = module_index(lm);
  const float s = lm->scaling * adapter_scale_;
  const Weight2D A{"lora_A", DType::F32, lm->A.data(), r, lm->in, {}};
  const Weight2D B{"lora_B", DType::F32, lm->B.data(), lm->out, r, {}};
  std::vector<float> u(static_cast<size_t>(T * r));
  linear_backward_input(dy, T, B, u.data());                              // u = dy·B  [T, r]
  // dB[o, k] += s Σ_t dy[t, o] lt[t, k]
  matmul_tn_acc(dy, lm->out, lt, r, T, lm->out, r, grads[size_t(2 * mi + 1)].data(), s);
  // LoRA dropout: the adapter saw xd = dropout(x) (the same mask, regenerated from the seed).
  const bool drop = dropout_p_ > 0;
  if (drop) {
    float* xd = sized(drop_x_, T * lm->in);
    dropout_apply(x, xd, T, lm->in, dropout_p_, dropout_seed_, uint64_t(mi));
    x = xd;
  }
  // dA[k, i] += s Σ_t u[t, k] xd[t, i]
  matmul_tn_acc(u.data(), r, x, lm->in, T, r, lm->in, grads[size_t(2 * mi)].data(), s);
  for (auto& v : u) v *= s;
  if (!drop) {
    linear_backward_input(u.data(), T, A, dx, true);  // dx += s·u·A
    return;
  }
  float* d = sized(drop_dx_, T * lm->in);  // dx += dropout(s·u·A)
  linear_backward_input(u.data(), T, A, d);
  dropout_apply(d, d, T, lm->in, dropout_p_, dropout_seed_, uint64_t(mi));
  for (int64_t i = 0; i < T * lm->in; ++i) dx[i] += d[i];
}

void Decoder::moe_backward(int64_t li, int64_t T, LayerActs& A, const float* dmoe, float* dh_mid,
                           std::vector<std::vector<float>>& grads) {
  const auto& c = m_.config();
  const LayerWeights& lw = m_.weights().layers[size_t(li)];
  const int64_t H = c.hidden_size, E = c.num_experts, K = c.top_k_experts, Im = c.moe_intermediate_size;
  const LoraModule* lgu = lora(li, 7);
  const LoraModule* ldn = lora(li, 8);
  std::vector<std::vector<std::pair<int64_t, int64_t>>> routed(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) routed[size_t(A.topk[size_t(t * K + k)])].push_back({t, k});
  std::vector<float> dx2(static_cast<size_t>(T * H), 0.0f), dw(static_cast<size_t>(T * K), 0.0f);
  std::vector<float> xin, gu, act, y, dy, dact, dgu, dxin, t1, bcol, u;
  for (int64_t e = 0; e < E; ++e) {
    const auto& toks = routed[size_t(e)];
    const int64_t n = int64_t(toks.size());
    if (n == 0) continue;
    // Recompute this expert's forward over its tokens.
    xin.resize(size_t(n * H));
    for (int64_t r = 0; r < n; ++r) std::memcpy(&xin[size_t(r * H)], &A.x2[size_t(toks[size_t(r)].first * H)], size_t(H) * 4);
    gu.resize(size_t(n * 2 * Im));
    act.resize(size_t(n * Im));
    y.resize(size_t(n * H));
    std::vector<float> t_gu, t_dn;
    auto slices = [&](const LoraModule* lm, Weight2D& Ae, Weight2D& Be) {
      const int64_t r = lm->r;
      Ae = Weight2D{"lora_A", DType::F32, lm->A.data() + e * r * lm->in, r, lm->in, {}};
      bcol.resize(size_t(lm->out * r));
      for (int64_t o = 0; o < lm->out; ++o)
        for (int64_t k = 0; k < r; ++k) bcol[size_t(o * r + k)] = lm->B[size_t(o * r * E + k * E + e)];
      Be = Weight2D{"lora_B", DType::F32, bcol.data(), lm->out, r, {}};
    };
    auto fwd_lora = [&](const LoraModule* lm, const float* in, float* o, std::vector<float>& tsave) {
      if (!lm) return;
      Weight2D Ae, Be;
      slices(lm, Ae, Be);
      tsave.resize(size_t(n * lm->r));
      linear(in, n, Ae, tsave.data());
      std::vector<float> ts(tsave);
      const float s = lm->scaling * adapter_scale_;
      for (auto& v : ts) v *= s;
      linear(ts.data(), n, Be, o, true);
    };
    linear(xin.data(), n, lw.experts[size_t(e)].gate_up, gu.data());
    fwd_lora(lgu, xin.data(), gu.data(), t_gu);
    gelu_gate_forward(gu.data(), 2 * Im, gu.data() + Im, 2 * Im, act.data(), n, Im);
    linear(act.data(), n, lw.experts[size_t(e)].down, y.data());
    fwd_lora(ldn, act.data(), y.data(), t_dn);
    // out[t] += w[t,k]·y  →  dy = w·dmoe[t], dw[t,k] = dmoe[t]·y
    dy.resize(size_t(n * H));
    for (int64_t r = 0; r < n; ++r) {
      const int64_t t = toks[size_t(r)].first, k = toks[size_t(r)].second;
      const float w = A.topw[size_t(t * K + k)];
      double d = 0;
      for (int64_t j = 0; j < H; ++j) {
        dy[size_t(r * H + j)] = w * dmoe[t * H + j];
        d += double(dmoe[t * H + j]) * double(y[size_t(r * H + j)]);
      }
      dw[size_t(t * K + k)] = float(d);
    }
    auto bwd_lora = [&](const LoraModule* lm, const float* in, const float* tsave, const float* dout, float* din) {
      // Same as project_backward, on this expert's slices of A and B.
      if (!lm) return;
      const int64_t r = lm->r, mi = module_index(lm);
      const float s = lm->scaling * adapter_scale_;
      Weight2D Ae, Be;
      slices(lm, Ae, Be);
      u.assign(size_t(n * r), 0.0f);
      linear_backward_input(dout, n, Be, u.data());
      std::vector<float> dBe(static_cast<size_t>(lm->out * r), 0.0f), dAe(static_cast<size_t>(r * lm->in), 0.0f);
      matmul_tn_acc(dout, lm->out, tsave, r, n, lm->out, r, dBe.data(), s);
      matmul_tn_acc(u.data(), r, in, lm->in, n, r, lm->in, dAe.data(), s);
      float* gA = grads[size_t(2 * mi)].data();
      float* gB = grads[size_t(2 * mi + 1)].data();
      for (int64_t k = 0; k < r; ++k)
        for (int64_t i = 0; i < lm->in; ++i) gA[(e * r + k) * lm->in + i] += dAe[size_t(k * lm->in + i)];
      for (int64_t o = 0; o < lm->out; ++o)
        for (int64_t k = 0; k < r; ++k) gB[o * r * E + k * E + e] += dBe[size_t(o * r + k)];
      for (auto& v : u) v *= s;
      linear_backward_input(u.data(), n, Ae, din, true);
    };
    dact.resize(size_t(n * Im));
    linear_backward_input(dy.data(), n, lw.experts[size_t(e)].down, dact.data());
    bwd_lora(ldn, act.data(), t_dn.data(), dy.data(), dact.data());
    dgu.resize(size_t(n * 2 * Im));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < Im; ++j) {
        const float g = gu[size_t(r * 2 * Im + j)], up = gu[size_t(r * 2 * Im + Im + j)], da = dact[size_t(r * Im + j)];
        dgu[size_t(r * 2 * Im + j)] = da * up * gelu_tanh_grad(g);
        dgu[size_t(r * 2 * Im + Im + j)] = da * gelu_tanh(g);
      }
    dxin.resize(size_t(n * H));
    linear_backward_input(dgu.data(), n, lw.experts[size_t(e)].gate_up, dxin.data());
    bwd_lora(lgu, xin.data(), t_gu.data(), dgu.data(), dxin.data());
    for (int64_t r = 0; r < n; ++r) {
      float* d = &dx2[size_t(toks[size_t(r)].first * H)];
      for (int64_t j = 0; j < H; ++j) d[j] += dxin[size_t(r * H + j)];
    }
  }
  rmsnorm_backward(A.h_mid.data(), lw.pre_ff_norm_2.data(), dx2.data(), A.rs_x2.data(), dh_mid, T, H, true);
  // Router (frozen, but differentiable in its input): w_k = p[e_k] / Σ_j p[e_j] · pes[e_k].
  // The load-balance loss adds its own dL/dprobs.
  std::vector<float> daux;
  if (aux_weight_ > 0) {
    daux.assign(size_t(T * E), 0.0f);
    moe_balance_backward(A.aux_coef, E, aux_rows_, aux_scale_, daux.data());
  }
  std::vector<float> dlog(static_cast<size_t>(T * E), 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    const float* p = &A.probs[size_t(t * E)];
    double S = 0, cross = 0;
    for (int64_t k = 0; k < K; ++k) S += p[A.topk[size_t(t * K + k)]];
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = A.topk[size_t(t * K + k)];
      cross += double(dw[size_t(t * K + k)]) * lw.per_expert_scale[size_t(e)] * p[e];
    }
    std::vector<double> dp(static_cast<size_t>(E), 0.0);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = A.topk[size_t(t * K + k)];
      dp[size_t(e)] += double(dw[size_t(t * K + k)]) * lw.per_expert_scale[size_t(e)] / S;
    }
    for (int64_t k = 0; k < K; ++k) dp[size_t(A.topk[size_t(t * K + k)])] -= cross / (S * S);
    if (!daux.empty())
      for (int64_t e = 0; e < E; ++e) dp[size_t(e)] += daux[size_t(t * E + e)];
    double pdp = 0;
    for (int64_t e = 0; e < E; ++e) pdp += p[e] * dp[size_t(e)];
    for (int64_t e = 0; e < E; ++e) dlog[size_t(t * E + e)] = float(p[e] * (dp[size_t(e)] - pdp));
  }
  std::vector<float> dz(static_cast<size_t>(T * H));
  linear_backward_input(dlog.data(), T, lw.router, dz.data());
  const float hs = float(1.0 / std::sqrt(double(H)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < H; ++j) dz[size_t(t * H + j)] *= lw.router_scale[size_t(j)] * hs;
  rmsnorm_backward(A.h_mid.data(), nullptr, dz.data(), A.rs_z.data(), dh_mid, T, H, true);
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
  project_backward(lw.down, lora(li, 6), A.act.data(), A.lt[6].data(), df0, T, dact.data(), false, grads);
  std::vector<float> dg(static_cast<size_t>(T * I)), du(static_cast<size_t>(T * I));
  for (int64_t i = 0; i < T * I; ++i) {
    const float g = A.g[size_t(i)];
    dg[size_t(i)] = dact[size_t(i)] * A.u[size_t(i)] * gelu_tanh_grad(g);
    du[size_t(i)] = dact[size_t(i)] * gelu_tanh(g);
  }
  std::vector<float> dx(static_cast<size_t>(T * H));
  project_backward(lw.gate, lora(li, 4), A.x.data(), A.lt[4].data(), dg.data(), T, dx.data(), false, grads);
  project_backward(lw.up, lora(li, 5), A.x.data(), A.lt[5].data(), du.data(), T, dx.data(), true, grads);
  rmsnorm_backward(A.h_mid.data(), lw.pre_ff_norm.data(), dx.data(), A.rs_x.data(), dh, T, H, true);

  // Attention: h_mid = h_in + norm(o0); dh becomes dL/dh_in.
  rmsnorm_backward(A.o0.data(), lw.post_attn_norm.data(), dh, A.rs_o.data(), tmp.data(), T, H);
  std::vector<float> datt(static_cast<size_t>(T * nq));
  project_backward(lw.o, lora(li, 3), A.att.data(), A.lt[3].data(), tmp.data(), T, datt.data(), false, grads);
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
  project_backward(lw.q, lora(li, 0), A.a.data(), A.lt[0].data(), dq0.data(), T, da.data(), false, grads);
  if (s.kv_donor < 0) {
    rope_backward(dK.data(), pos_.data(), T, s.num_kv_heads, hd, s.inv_freq.data());
    std::vector<float> dk0(static_cast<size_t>(T * nkv)), dv0(static_cast<size_t>(T * nkv));
    rmsnorm_backward(A.k0.data(), lw.k_norm.data(), dK.data(), A.rs_k.data(), dk0.data(), T * s.num_kv_heads, hd);
    if (s.v_norm) rmsnorm_backward(A.v0.data(), nullptr, dV.data(), A.rs_v.data(), dv0.data(), T * s.num_kv_heads, hd);
    else dv0 = std::vector<float>(dV.begin(), dV.begin() + T * nkv);
    if (s.k_eq_v) {
      for (int64_t i = 0; i < T * nkv; ++i) dk0[size_t(i)] += dv0[size_t(i)];
    } else {
      project_backward(lw.v, lora(li, 2), A.a.data(), A.lt[2].data(), dv0.data(), T, da.data(), true, grads);
    }
    project_backward(lw.k, lora(li, 1), A.a.data(), A.lt[1].data(), dk0.data(), T, da.data(), true, grads);
  }
  rmsnorm_backward(A.h_in.data(), lw.input_norm.data(), da.data(), A.rs_in.data(), dh, T, H, true);
}

Decoder::LossResult Decoder::loss_and_grad(const float* h_final, int64_t T, const std::vector<SeqChunk>& chunks,
                                           const std::vector<uint8_t>& mask, double norm, float* dh) {
  const auto& c = m_.config();
  const auto& w = m_.weights();
  const int64_t H = c.hidden_size, V = w.lm_head.n;
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
  const bool softcap = c.final_logit_softcapping && *c.final_logit_softcapping > 0 && (c.family == Family::Gemma4 || c.causal_lm);
  const float cap = softcap ? float(*c.final_logit_softcapping) : 0.0f;
  std::vector<float> x, hx, rs, logits, dx;
  for (size_t r0 = 0; r0 < rows.size(); r0 += kLossRows) {
    const int64_t R = std::min<int64_t>(kLossRows, int64_t(rows.size() - r0));
    hx.resize(size_t(R * H));
    x.resize(size_t(R * H));
    rs.resize(size_t(R));
    for (int64_t r = 0; r < R; ++r) std::memcpy(&hx[size_t(r * H)], h_final + rows[r0 + size_t(r)] * H, size_t(H) * 4);
    rmsnorm_forward(hx.data(), w.final_norm.data(), x.data(), R, H, float(c.rms_norm_eps), rs.data());
    logits.resize(size_t(R * V));
    linear(x.data(), R, w.lm_head, logits.data());
    for (int64_t r = 0; r < R; ++r) {
      float* l = &logits[size_t(r * V)];
      if (softcap)
        for (int64_t j = 0; j < V; ++j) l[j] = cap * std::tanh(l[j] / cap);
      float mx = -INFINITY;
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, l[j]);
      double se = 0;
      for (int64_t j = 0; j < V; ++j) se += std::exp(double(l[j] - mx));
      const double lse = double(mx) + std::log(se);
      const int32_t tgt = targets[r0 + size_t(r)];
      if (tgt < 0 || tgt >= V) fail("loss: target token ", tgt, " is outside the vocabulary (", V, ")");
      res.sum += lse - double(l[tgt]);
      if (!dh) continue;
      // d/dlogit of CE/denom = (softmax − onehot)/denom, then through the softcap: × (1 − tanh²).
      for (int64_t j = 0; j < V; ++j) {
        double g = std::exp(double(l[j]) - lse) - (j == tgt ? 1.0 : 0.0);
        g /= denom;
        if (softcap) {
          const double th = double(l[j]) / cap;
          g *= 1.0 - th * th;
        }
        l[j] = float(g);
      }
    }
    if (!dh) continue;
    dx.resize(size_t(R * H));
    linear_backward_input(logits.data(), R, w.lm_head, dx.data());
    std::vector<float> dhr(static_cast<size_t>(R * H));
    rmsnorm_backward(hx.data(), w.final_norm.data(), dx.data(), rs.data(), dhr.data(), R, H);
    for (int64_t r = 0; r < R; ++r) std::memcpy(dh + rows[r0 + size_t(r)] * H, &dhr[size_t(r * H)], size_t(H) * 4);
  }
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

Decoder::LossResult Decoder::forward_backward(const std::vector<SeqChunk>& chunks, const std::vector<uint8_t>& loss_mask,
                                              std::vector<std::vector<float>>& grads, double loss_norm, bool checkpointing,
                                              const TrainExtras* extras) {
  GT_CHECK(adapter_ != nullptr, "forward_backward: no adapter set (LoRA parameters are the only trainable tensors)");
  for (const auto& ch : chunks) GT_CHECK(ch.cache == nullptr, "forward_backward: training chunks must not use a KV cache");
  const auto& c = m_.config();
  const int64_t L = c.num_layers, H = c.hidden_size;
  // Training extras live only for this call (cleared however it ends).
  struct Clear {
    Decoder& d;
    ~Clear() {
      d.dropout_p_ = 0;
      d.aux_weight_ = 0;
    }
  } clear{*this};
  aux_sum_ = 0;
  if (extras) {
    dropout_p_ = adapter_->config.dropout;
    dropout_seed_ = extras->dropout_seed;
    if (extras->moe_aux_weight > 0 && c.enable_moe_block) {
      int64_t moe_layers = 0;
      for (const auto& s : m_.specs()) moe_layers += s.moe ? 1 : 0;
      aux_weight_ = extras->moe_aux_weight / double(std::max<int64_t>(moe_layers, 1));
      aux_scale_ = extras->moe_aux_scale;
      aux_rows_.assign(1, 0);
      if (extras->row_chunks.empty()) {
        for (const auto& ch : chunks) aux_rows_.push_back(aux_rows_.back() + ch.n);
      } else {
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
    }
  }
  if (grads.size() != 2 * adapter_->modules.size()) {
    grads.assign(2 * adapter_->modules.size(), {});
    for (size_t i = 0; i < adapter_->modules.size(); ++i) {
      grads[2 * i].assign(adapter_->modules[i].A.size(), 0.0f);
      grads[2 * i + 1].assign(adapter_->modules[i].B.size(), 0.0f);
    }
  }
  int64_t T = 0;
  prepare(chunks, T);
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
