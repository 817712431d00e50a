// kernels/cross_entropy: one row and the chunked LM-head loss against a naive double-precision
// reference, with and without the final softcap; gradients against finite differences.
#include "gemmatune/kernels/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>

#include "gemmatune/util/error.h"
#include "kernel_test_util.h"

using namespace gt;
using gt::test::check_fd;
using gt::test::randn;

namespace {

double naive_ce(const std::vector<float>& raw, int32_t tgt, double cap) {
  std::vector<double> l(raw.begin(), raw.end());
  if (cap > 0)
    for (auto& v : l) v = cap * std::tanh(v / cap);
  double mx = -1e300, se = 0;
  for (double v : l) mx = std::max(mx, v);
  for (double v : l) se += std::exp(v - mx);
  return mx + std::log(se) - l[size_t(tgt)];
}

}  // namespace

TEST(CrossEntropy, RowMatchesNaiveAndItsGradient) {
  const int64_t V = 13;
  const double denom = 3.0;
  for (const float cap : {0.0f, 2.5f}) {
    SCOPED_TRACE(cap);
    const auto raw = randn(size_t(V), 5, 2.0f);
    std::vector<float> l = raw;
    EXPECT_NEAR(cross_entropy_row(l.data(), V, 4, cap, denom, false), naive_ce(raw, 4, cap), 1e-5);
    l = raw;
    const double ce = cross_entropy_row(l.data(), V, 4, cap, denom, true);
    EXPECT_NEAR(ce, naive_ce(raw, 4, cap), 1e-5);
    check_fd(raw, l, [&](const std::vector<float>& v) { return naive_ce(v, 4, cap) / denom; }, 1e-3, 1e-2, 1e-4);
  }
  std::vector<float> l(size_t(V), 0.0f);
  EXPECT_THROW(cross_entropy_row(l.data(), V, int32_t(V), 0.0f, 1.0, false), Error);
}

TEST(CrossEntropy, SoftcapForward) {
  std::vector<float> x = {-100.0f, -1.0f, 0.0f, 0.5f, 100.0f};
  const auto y0 = x;
  softcap_forward(x.data(), int64_t(x.size()), 0.0f);  // off
  EXPECT_EQ(x, y0);
  softcap_forward(x.data(), int64_t(x.size()), 30.0f);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], 30.0 * std::tanh(y0[i] / 30.0), 1e-5);
  EXPECT_LT(x.back(), 30.0f);
}

TEST(CrossEntropy, ChunkedMatchesNaiveAndFiniteDifferences) {
  // 40 scored rows: more than one chunk of 32.
  const int64_t H = 6, V = 11, N = 40, T = 45;
  const auto h = randn(size_t(T * H), 11);
  auto g = randn(size_t(H), 12, 0.2f);
  for (auto& v : g) v += 1.0f;
  const auto W = randn(size_t(V * H), 13);
  Weight2D head;
  head.name = "lm_head";
  head.dtype = DType::F32;
  head.data = W.data();
  head.n = V;
  head.k = H;
  std::vector<int64_t> rows;
  std::vector<int32_t> tg;
  for (int64_t i = 0; i < N; ++i) {
    rows.push_back((i * 7) % T);
    tg.push_back(int32_t((i * 5 + 3) % V));
  }
  for (const float cap : {0.0f, 3.0f}) {
    SCOPED_TRACE(cap);
    const LmHeadLoss lm{g.data(), 1e-6f, &head, cap};
    auto naive_sum = [&](const std::vector<float>& hh) {
      double s = 0;
      for (int64_t i = 0; i < N; ++i) {
        const float* x = &hh[size_t(rows[size_t(i)] * H)];
        double ms = 0;
        for (int64_t j = 0; j < H; ++j) ms += double(x[j]) * x[j];
        const double rr = 1.0 / std::sqrt(ms / double(H) + 1e-6);
        std::vector<float> logit(static_cast<size_t>(V));
        for (int64_t v = 0; v < V; ++v) {
          double a = 0;
          for (int64_t j = 0; j < H; ++j) a += double(x[j]) * rr * g[size_t(j)] * W[size_t(v * H + j)];
          logit[size_t(v)] = float(a);
        }
        s += naive_ce(logit, tg[size_t(i)], cap);
      }
      return s;
    };
    EXPECT_NEAR(cross_entropy_chunked(lm, h.data(), H, rows.data(), tg.data(), N, 1.0, nullptr), naive_sum(h), 1e-3);
    const double denom = 7.0;
    std::vector<float> dh(h.size(), 0.0f);
    cross_entropy_chunked(lm, h.data(), H, rows.data(), tg.data(), N, denom, dh.data());
    // Rows are scored several times here (7·i mod 45 repeats): the last write wins, so compare
    // against a loss over distinct rows.
    std::vector<int64_t> urows;
    std::vector<int32_t> utg;
    for (int64_t i = 0; i < N; ++i)
      if (std::find(urows.begin(), urows.end(), rows[size_t(i)]) == urows.end()) {
        urows.push_back(rows[size_t(i)]);
        utg.push_back(tg[size_t(i)]);
      }
    std::vector<float> du(h.size(), 0.0f);
    cross_entropy_chunked(lm, h.data(), H, urows.data(), utg.data(), int64_t(urows.size()), denom, du.data());
    auto L = [&](const std::vector<float>& hh) {
      return cross_entropy_chunked(lm, hh.data(), H, urows.data(), utg.data(), int64_t(urows.size()), denom, nullptr) / denom;
    };
    check_fd(h, du, L, 1e-2, 3e-2, 1e-3);
  }
}
