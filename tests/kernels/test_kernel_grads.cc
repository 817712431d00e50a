// Finite-difference checks of every kernel's backward: L = Σ w·y(x) with random w; the analytic
// dL/dx must match (L(x+εe) − L(x−εe)) / 2ε on every entry.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "gemmatune/kernels/attention.h"
#include "gemmatune/kernels/gelu.h"
#include "gemmatune/kernels/linear.h"
#include "gemmatune/kernels/matmul_tn.h"
#include "gemmatune/kernels/rmsnorm.h"
#include "gemmatune/kernels/rope.h"
#include "kernel_test_util.h"

using namespace gt;

namespace {

using test::check_fd;
using test::dot;
using test::randn;

}  // namespace

TEST(KernelGrads, RmsNorm) {
  const int64_t rows = 3, n = 8;
  auto x = randn(rows * n, 1), g = randn(n, 2), w = randn(rows * n, 3);
  for (auto& v : g) v += 1.0f;
  for (const float* gain : {static_cast<const float*>(g.data()), static_cast<const float*>(nullptr)}) {
    auto L = [&](const std::vector<float>& xx) {
      std::vector<float> y(xx.size());
      rmsnorm_forward(xx.data(), gain, y.data(), rows, n, 1e-6f);
      return dot(y, w);
    };
    std::vector<float> y(x.size()), rs(rows), dx(x.size());
    rmsnorm_forward(x.data(), gain, y.data(), rows, n, 1e-6f, rs.data());
    rmsnorm_backward(x.data(), gain, w.data(), rs.data(), dx.data(), rows, n);
    check_fd(x, dx, L, 1e-3);
  }
}

TEST(KernelGrads, Rope) {
  const int64_t T = 4, heads = 2, dim = 8;
  std::vector<int64_t> pos = {0, 3, 7, 12};
  std::vector<float> inv = {1.0f, 0.3f, 0.05f, 0.0f};  // a zero frequency = identity dims (proportional RoPE)
  auto x = randn(T * heads * dim, 4), w = randn(T * heads * dim, 5);
  auto L = [&](const std::vector<float>& xx) {
    std::vector<float> y = xx;
    rope_forward(y.data(), pos.data(), T, heads, dim, inv.data());
    return dot(y, w);
  };
  std::vector<float> dx = w;
  rope_backward(dx.data(), pos.data(), T, heads, dim, inv.data());
  check_fd(x, dx, L, 1e-3);
}

TEST(KernelGrads, GeluTanh) {
  for (float x : {-3.0f, -1.0f, -0.2f, 0.0f, 0.4f, 1.5f, 4.0f}) {
    const double fd = (double(gelu_tanh(x + 1e-3f)) - double(gelu_tanh(x - 1e-3f))) / 2e-3;
    EXPECT_NEAR(gelu_tanh_grad(x), fd, 2e-3) << x;
  }
}

TEST(KernelGrads, AttentionWithWindowAndGqa) {
  for (int64_t window : {int64_t(0), int64_t(3)}) {
    AttnShape s{4, 2, 4, 0.7f, window};
    const int64_t C = 6, nq = 16, nkv = 8;
    auto q = randn(C * nq, 6), k = randn(C * nkv, 7), v = randn(C * nkv, 8), w = randn(C * nq, 9);
    auto run = [&](const std::vector<float>& qq, const std::vector<float>& kk, const std::vector<float>& vv) {
      KvSource kv;
      kv.new_k = kk.data();
      kv.new_v = vv.data();
      kv.new_stride = nkv;
      kv.row = nkv;
      std::vector<float> out(size_t(C * nq));
      attention_forward(s, qq.data(), nq, C, 0, kv, out.data(), nq);
      return dot(out, w);
    };
    std::vector<float> dq(q.size()), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    attention_backward(s, q.data(), k.data(), v.data(), C, w.data(), dq.data(), dk.data(), dv.data());
    check_fd(q, dq, [&](const std::vector<float>& x) { return run(x, k, v); }, 1e-3);
    check_fd(k, dk, [&](const std::vector<float>& x) { return run(q, x, v); }, 1e-3);
    check_fd(v, dv, [&](const std::vector<float>& x) { return run(q, k, x); }, 1e-3);
  }
}

// The blocked backward (blocks of 8 queries) against a direct double-precision evaluation of the
// same formulas, on a chunk with partial blocks, GQA, with and without a sliding window.
TEST(KernelGrads, AttentionBackwardBlockedMatchesDoubleReference) {
  for (int64_t window : {int64_t(0), int64_t(5)}) {
    SCOPED_TRACE(window);
    AttnShape s{4, 2, 16, 0.25f, window};
    const int64_t C = 21, hd = 16, nH = 4, nq = nH * hd, nkv = 2 * hd, group = 2;
    auto q = randn(C * nq, 21), k = randn(C * nkv, 22), v = randn(C * nkv, 23), go = randn(C * nq, 24);
    std::vector<float> dq(q.size()), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    attention_backward(s, q.data(), k.data(), v.data(), C, go.data(), dq.data(), dk.data(), dv.data());
    std::vector<double> rq(q.size(), 0.0), rk(k.size(), 0.0), rv(v.size(), 0.0);
    for (int64_t h = 0; h < nH; ++h)
      for (int64_t i = 0; i < C; ++i) {
        const int64_t kvh = h / group, lo = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
        std::vector<double> p(size_t(C), 0.0), dp(size_t(C), 0.0);
        double mx = -1e300, sum = 0, pdp = 0;
        for (int64_t j = lo; j <= i; ++j) {
          double d = 0;
          for (int64_t t = 0; t < hd; ++t) d += double(q[size_t(i * nq + h * hd + t)]) * k[size_t(j * nkv + kvh * hd + t)];
          p[size_t(j)] = d * s.scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        for (int64_t j = lo; j <= i; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
        for (int64_t j = lo; j <= i; ++j) {
          p[size_t(j)] /= sum;
          for (int64_t t = 0; t < hd; ++t) dp[size_t(j)] += double(go[size_t(i * nq + h * hd + t)]) * v[size_t(j * nkv + kvh * hd + t)];
          pdp += p[size_t(j)] * dp[size_t(j)];
        }
        for (int64_t j = lo; j <= i; ++j) {
          const double ds = p[size_t(j)] * (dp[size_t(j)] - pdp) * s.scale;
          for (int64_t t = 0; t < hd; ++t) {
            rq[size_t(i * nq + h * hd + t)] += ds * k[size_t(j * nkv + kvh * hd + t)];
            rk[size_t(j * nkv + kvh * hd + t)] += ds * q[size_t(i * nq + h * hd + t)];
            rv[size_t(j * nkv + kvh * hd + t)] += p[size_t(j)] * go[size_t(i * nq + h * hd + t)];
          }
        }
      }
    for (size_t x = 0; x < dq.size(); ++x) ASSERT_NEAR(dq[x], rq[x], 1e-5 * (1 + std::fabs(rq[x]))) << "dq " << x;
    for (size_t x = 0; x < dk.size(); ++x) ASSERT_NEAR(dk[x], rk[x], 1e-5 * (1 + std::fabs(rk[x]))) << "dk " << x;
    for (size_t x = 0; x < dv.size(); ++x) ASSERT_NEAR(dv[x], rv[x], 1e-5 * (1 + std::fabs(rv[x]))) << "dv " << x;
  }
}

TEST(KernelGrads, LinearBackwardInputAndTn) {
  const int64_t m = 3, k = 5, n = 4;
  auto x = randn(m * k, 10), W = randn(n * k, 11), w = randn(m * n, 12);
  Weight2D wt{"W", DType::F32, W.data(), n, k};
  auto L = [&](const std::vector<float>& xx) {
    std::vector<float> y(size_t(m * n));
    linear(xx.data(), m, wt, y.data());
    return dot(y, w);
  };
  std::vector<float> dx(x.size());
  linear_backward_input(w.data(), m, wt, dx.data());
  check_fd(x, dx, L, 1e-3);
  // dW[n,k] = Σ_t dy[t,n] x[t,k]
  std::vector<float> dW(W.size(), 0.0f);
  matmul_tn_acc(w.data(), n, x.data(), k, m, n, k, dW.data(), 1.0f);
  auto LW = [&](const std::vector<float>& ww) {
    Weight2D t{"W", DType::F32, ww.data(), n, k};
    std::vector<float> y(size_t(m * n));
    linear(x.data(), m, t, y.data());
    return dot(y, w);
  };
  check_fd(W, dW, LW, 1e-3);
}
