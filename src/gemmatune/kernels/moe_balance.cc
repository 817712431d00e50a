#include "gemmatune/kernels/moe_balance.h"

#include "gemmatune/util/error.h"

namespace gt {

double moe_balance_forward(const float* probs, const int32_t* topk, int64_t E, int64_t K,
                           const std::vector<int64_t>& rows, double weight, std::vector<double>& coef) {
  GT_CHECK(rows.size() >= 2 && rows.front() == 0, "moe_balance: rows must start at token 0 and hold at least one row");
  const int64_t B = int64_t(rows.size()) - 1;
  coef.assign(size_t(B * E), 0.0);
  std::vector<double> f(static_cast<size_t>(E)), P(static_cast<size_t>(E));
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t s0 = rows[size_t(b)], s1 = rows[size_t(b + 1)];
    GT_CHECK(s1 > s0, "moe_balance: batch row ", b, " is empty");
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t s = s0; s < s1; ++s) {
      for (int64_t k = 0; k < K; ++k) f[size_t(topk[s * K + k])] += 1.0;
      for (int64_t e = 0; e < E; ++e) P[size_t(e)] += double(probs[s * E + e]);
    }
    const double inv = 1.0 / double(s1 - s0);
    for (int64_t e = 0; e < E; ++e) {
      const double fe = f[size_t(e)] * inv;
      total += fe * P[size_t(e)] * inv;
      coef[size_t(b * E + e)] = weight * double(E) / double(B) * fe;
    }
  }
  return weight * double(E) / double(B) * total;
}

void moe_balance_backward(const std::vector<double>& coef, int64_t E, const std::vector<int64_t>& rows, double scale,
                          float* dprobs) {
  const int64_t B = int64_t(rows.size()) - 1;
  GT_CHECK(int64_t(coef.size()) == B * E, "moe_balance_backward: coef has ", coef.size(), " entries for ", B, "x", E);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t s0 = rows[size_t(b)], s1 = rows[size_t(b + 1)];
    const double inv = scale / double(s1 - s0);
    for (int64_t s = s0; s < s1; ++s)
      for (int64_t e = 0; e < E; ++e) dprobs[s * E + e] += float(coef[size_t(b * E + e)] * inv);
  }
}

}  // namespace gt
