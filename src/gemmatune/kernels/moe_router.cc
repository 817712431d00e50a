#include "gemmatune/kernels/moe_router.h"

#include <algorithm>
#include <cmath>

#include "gemmatune/kernels/rmsnorm.h"

namespace gt {

void moe_router_forward(const MoeRouter& r, const float* x, int64_t T, int64_t H, float* z, float* rs, float* probs,
                        int32_t* topk, float* topw) {
  const int64_t E = r.E, K = r.K;
  rmsnorm_forward(x, nullptr, z, T, H, r.eps, rs);
  const float hs = float(1.0 / std::sqrt(double(H)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < H; ++j) z[t * H + j] = z[t * H + j] * r.scale[j] * hs;
  linear(z, T, *r.proj, probs);
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    float* lg = probs + t * E;
    float mx = *std::max_element(lg, lg + E), sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += (lg[e] = std::exp(lg[e] - mx));
    for (int64_t e = 0; e < E; ++e) lg[e] /= sum;
    for (int64_t e = 0; e < E; ++e) idx[size_t(e)] = e;
    std::partial_sort(idx.begin(), idx.begin() + K, idx.end(), [&](int64_t a, int64_t b) {
      return lg[a] > lg[b] || (lg[a] == lg[b] && a < b);
    });
    float wsum = 0;
    for (int64_t k = 0; k < K; ++k) wsum += lg[idx[size_t(k)]];
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = idx[size_t(k)];
      topk[t * K + k] = int32_t(e);
      topw[t * K + k] = lg[e] / wsum * r.per_expert_scale[e];
    }
  }
}

void moe_router_backward(const MoeRouter& r, const float* x, const float* rs, const float* probs, const int32_t* topk,
                         const float* dw, const float* dprobs, int64_t T, int64_t H, float* dx) {
  const int64_t E = r.E, K = r.K;
  const float* pes = r.per_expert_scale;
  // w_k = p[e_k] / S · pes[e_k] with S = Σ_j p[e_j]:
  //   dL/dp[e] = Σ_{k: e_k = e} dw_k·pes[e_k] / S − [e chosen] · Σ_k dw_k·pes[e_k]·p[e_k] / S²,
  // then through the softmax: dlogit = p ⊙ (dp − p·dp).
  std::vector<float> dlog(static_cast<size_t>(T * E), 0.0f);
  std::vector<double> dp(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* p = probs + t * E;
    const int32_t* tk = topk + t * K;
    double S = 0, cross = 0;
    for (int64_t k = 0; k < K; ++k) S += p[tk[k]];
    for (int64_t k = 0; k < K; ++k) cross += double(dw[t * K + k]) * pes[tk[k]] * p[tk[k]];
    std::fill(dp.begin(), dp.end(), 0.0);
    for (int64_t k = 0; k < K; ++k) dp[size_t(tk[k])] += double(dw[t * K + k]) * pes[tk[k]] / S;
    for (int64_t k = 0; k < K; ++k) dp[size_t(tk[k])] -= cross / (S * S);
    if (dprobs)
      for (int64_t e = 0; e < E; ++e) dp[size_t(e)] += dprobs[t * E + e];
    double pdp = 0;
    for (int64_t e = 0; e < E; ++e) pdp += p[e] * dp[size_t(e)];
    for (int64_t e = 0; e < E; ++e) dlog[size_t(t * E + e)] = float(p[e] * (dp[size_t(e)] - pdp));
  }
  std::vector<float> dz(static_cast<size_t>(T * H));
  linear_backward_input(dlog.data(), T, *r.proj, dz.data());
  const float hs = float(1.0 / std::sqrt(double(H)));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < H; ++j) dz[size_t(t * H + j)] *= r.scale[j] * hs;
  rmsnorm_backward(x, nullptr, dz.data(), rs, dx, T, H, true);
}

void moe_combine_slots(const int32_t* topk, const float* topw, const float* slots, int64_t T, int64_t K, int64_t H,
                       float* out) {
#pragma omp parallel if (T * H > 16384)
  {
    std::vector<int64_t> order(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t k = 0; k < K; ++k) order[size_t(k)] = k;
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return topk[t * K + a] < topk[t * K + b]; });
      float* dst = out + t * H;
      std::fill(dst, dst + H, 0.0f);
      for (const int64_t k : order) {
        const float wgt = topw ? topw[t * K + k] : 1.0f;
        const float* src = slots + (t * K + k) * H;
        for (int64_t j = 0; j < H; ++j) dst[j] += wgt * src[j];
      }
    }
  }
}

}  // namespace gt
