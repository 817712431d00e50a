#include "gemmatune/kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemmatune/kernels/rmsnorm.h"
#include "gemmatune/util/error.h"

namespace gt {

namespace {
constexpr int64_t kLossRows = 32;  // logits rows materialised at once: 32 x 262144 floats = 32 MiB
}  // namespace

void softcap_forward(float* x, int64_t n, float cap) {
  if (!(cap > 0)) return;
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

double cross_entropy_row(float* l, int64_t V, int32_t target, float cap, double denom, bool grad) {
  const bool softcap = cap > 0;
  if (softcap)
    for (int64_t j = 0; j < V; ++j) l[j] = cap * std::tanh(l[j] / cap);
  float mx = -INFINITY;
  for (int64_t j = 0; j < V; ++j) mx = std::max(mx, l[j]);
  double se = 0;
  for (int64_t j = 0; j < V; ++j) se += std::exp(double(l[j] - mx));
  const double lse = double(mx) + std::log(se);
  if (target < 0 || target >= V) fail("loss: target token ", target, " is outside the vocabulary (", V, ")");
  const double ce = lse - double(l[target]);
  if (!grad) return ce;
  // d/dlogit of CE/denom = (softmax − onehot)/denom, then through the softcap: × (1 − tanh²).
  for (int64_t j = 0; j < V; ++j) {
    double g = std::exp(double(l[j]) - lse) - (j == target ? 1.0 : 0.0);
    g /= denom;
    if (softcap) {
      const double th = double(l[j]) / cap;
      g *= 1.0 - th * th;
    }
    l[j] = float(g);
  }
  return ce;
}

double cross_entropy_chunked(const LmHeadLoss& lm, const float* h, int64_t H, const int64_t* rows,
                             const int32_t* targets, int64_t n, double denom, float* dh) {
  const int64_t V = lm.head->n;
  double sum = 0;
  std::vector<float> x, hx, rs, logits, dx, dhr;
  for (int64_t r0 = 0; r0 < n; r0 += kLossRows) {
    const int64_t R = std::min<int64_t>(kLossRows, n - r0);
    hx.resize(size_t(R * H));
    x.resize(size_t(R * H));
    rs.resize(size_t(R));
    for (int64_t r = 0; r < R; ++r) std::memcpy(&hx[size_t(r * H)], h + rows[r0 + r] * H, size_t(H) * 4);
    rmsnorm_forward(hx.data(), lm.norm_weight, x.data(), R, H, lm.eps, rs.data());
    logits.resize(size_t(R * V));
    linear(x.data(), R, *lm.head, logits.data());
    for (int64_t r = 0; r < R; ++r)
      sum += cross_entropy_row(&logits[size_t(r * V)], V, targets[r0 + r], lm.softcap, denom, dh != nullptr);
    if (!dh) continue;
    dx.resize(size_t(R * H));
    linear_backward_input(logits.data(), R, *lm.head, dx.data());
    dhr.resize(size_t(R * H));
    rmsnorm_backward(hx.data(), lm.norm_weight, dx.data(), rs.data(), dhr.data(), R, H);
    for (int64_t r = 0; r < R; ++r) std::memcpy(dh + rows[r0 + r] * H, &dhr[size_t(r * H)], size_t(H) * 4);
  }
  return sum;
}

}  // namespace gt
