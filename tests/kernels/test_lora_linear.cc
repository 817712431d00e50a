// kernels/lora_linear: forward against a naive double-precision reference, backward (input, A and
// B gradients) against finite differences, for a Linear (with and without dropout) and for the
// slices of fused routed experts.
#include "gemmatune/kernels/lora_linear.h"

#include <gtest/gtest.h>

#include "gemmatune/kernels/dropout.h"
#include "gemmatune/kernels/lora_grouped.h"
#include "kernel_test_util.h"

using namespace gt;
using gt::test::check_fd;
using gt::test::dot;
using gt::test::randn;

namespace {

// y[t, o] = s · Σ_k (Σ_i x[t, i]·A_e[k, i]) · B_e[o, k] in double, with the expert slicing spelled out.
std::vector<double> naive(const std::vector<float>& x, const std::vector<float>& A, const std::vector<float>& B, int64_t T,
                          int64_t in, int64_t out, int64_t r, int64_t E, int64_t e, double s) {
  std::vector<double> y(size_t(T * out), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < r; ++k) {
      double u = 0;
      for (int64_t i = 0; i < in; ++i) u += double(x[size_t(t * in + i)]) * A[size_t((e * r + k) * in + i)];
      for (int64_t o = 0; o < out; ++o) y[size_t(t * out + o)] += s * u * B[size_t(o * r * E + k * E + e)];
    }
  return y;
}

struct Case {
  int64_t T = 5, in = 7, out = 6, r = 3, E = 1;
  std::vector<float> x, A, B, w;
  LoraView view() const {
    LoraView v;
    v.A = A.data();
    v.B = B.data();
    v.r = r;
    v.in = in;
    v.out = out;
    v.experts = E;
    v.scale = 0.75f;
    v.slot = 4;
    return v;
  }
  explicit Case(int64_t experts) : E(experts) {
    x = randn(size_t(T * in), 1);
    A = randn(size_t(E * r * in), 2, 0.5f);
    B = randn(size_t(out * r * E), 3, 0.5f);
    w = randn(size_t(T * out), 4);
  }
};

}  // namespace

TEST(LoraLinear, ForwardMatchesNaiveAndKeepsXAt) {
  Case c(1);
  LoraScratch ws;
  std::vector<float> y(size_t(c.T * c.out), 0.0f), t(size_t(c.T * c.r));
  lora_linear_forward(c.view(), c.x.data(), c.T, y.data(), t.data(), nullptr, ws);
  const auto ref = naive(c.x, c.A, c.B, c.T, c.in, c.out, c.r, 1, 0, 0.75);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5) << i;
  // t_save = x·Aᵀ (unscaled); the forward accumulates into y.
  for (int64_t tt = 0; tt < c.T; ++tt)
    for (int64_t k = 0; k < c.r; ++k) {
      double u = 0;
      for (int64_t i = 0; i < c.in; ++i) u += double(c.x[size_t(tt * c.in + i)]) * c.A[size_t(k * c.in + i)];
      EXPECT_NEAR(t[size_t(tt * c.r + k)], u, 1e-5);
    }
  std::vector<float> y2(y.size(), 1.0f);
  lora_linear_forward(c.view(), c.x.data(), c.T, y2.data(), nullptr, nullptr, ws);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_FLOAT_EQ(y2[i], 1.0f + y[i]);
}

TEST(LoraLinear, BackwardMatchesFiniteDifferences) {
  for (const double p : {0.0, 0.4}) {
    SCOPED_TRACE(p);
    Case c(1);
    const LoraDropout drop{p, 77};
    const LoraDropout* d = p > 0 ? &drop : nullptr;
    LoraScratch ws;
    auto L = [&](const std::vector<float>& x, const std::vector<float>& A, const std::vector<float>& B) {
      Case k = c;
      k.x = x;
      k.A = A;
      k.B = B;
      std::vector<float> y(size_t(c.T * c.out), 0.0f);
      LoraScratch s;
      lora_linear_forward(k.view(), k.x.data(), c.T, y.data(), nullptr, d, s);
      return dot(y, c.w);
    };
    std::vector<float> y(size_t(c.T * c.out), 0.0f), t(size_t(c.T * c.r));
    lora_linear_forward(c.view(), c.x.data(), c.T, y.data(), t.data(), d, ws);
    std::vector<float> dx(c.x.size(), 0.0f), gA(c.A.size(), 0.0f), gB(c.B.size(), 0.0f);
    lora_linear_backward(c.view(), c.x.data(), t.data(), c.w.data(), c.T, dx.data(), gA.data(), gB.data(), d, ws);
    check_fd(c.x, dx, [&](const std::vector<float>& v) { return L(v, c.A, c.B); });
    check_fd(c.A, gA, [&](const std::vector<float>& v) { return L(c.x, v, c.B); });
    check_fd(c.B, gB, [&](const std::vector<float>& v) { return L(c.x, c.A, v); });
    if (p > 0) {  // the adapter saw dropout(x): the forward equals the naive product on the dropped input
      std::vector<float> xd(c.x.size());
      dropout_apply(c.x.data(), xd.data(), c.T, c.in, p, 77, 4);
      const auto ref = naive(xd, c.A, c.B, c.T, c.in, c.out, c.r, 1, 0, 0.75);
      for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5) << i;
    }
  }
}

TEST(LoraLinear, ExpertSlicesForwardAndBackward) {
  Case c(3);
  for (int64_t e = 0; e < c.E; ++e) {
    SCOPED_TRACE(e);
    LoraScratch ws;
    std::vector<float> y(size_t(c.T * c.out), 0.0f), t(size_t(c.T * c.r));
    lora_expert_forward(c.view(), e, c.x.data(), c.T, y.data(), t.data(), ws);
    const auto ref = naive(c.x, c.A, c.B, c.T, c.in, c.out, c.r, c.E, e, 0.75);
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5) << i;
    auto L = [&](const std::vector<float>& x, const std::vector<float>& A, const std::vector<float>& B) {
      Case k = c;
      k.x = x;
      k.A = A;
      k.B = B;
      std::vector<float> yy(size_t(c.T * c.out), 0.0f);
      LoraScratch s;
      lora_expert_forward(k.view(), e, k.x.data(), c.T, yy.data(), nullptr, s);
      return dot(yy, c.w);
    };
    std::vector<float> dx(c.x.size(), 0.0f), gA(c.A.size(), 0.0f), gB(c.B.size(), 0.0f);
    lora_expert_backward(c.view(), e, c.x.data(), t.data(), c.w.data(), c.T, dx.data(), gA.data(), gB.data(), ws);
    check_fd(c.x, dx, [&](const std::vector<float>& v) { return L(v, c.A, c.B); });
    check_fd(c.A, gA, [&](const std::vector<float>& v) { return L(c.x, v, c.B); });  // other experts' rows: 0
    check_fd(c.B, gB, [&](const std::vector<float>& v) { return L(c.x, c.A, v); });
  }
}

// Mixed adapters over contiguous row groups in one call: each group gets exactly its own adapter's
// product (against the double-precision reference), a group without a view and rows outside every
// group are left alone.
TEST(LoraLinear, GroupedForwardAppliesEachGroupsAdapter) {
  const int64_t T = 9, in = 70, out = 150;
  const std::vector<float> x = randn(size_t(T * in), 11);
  struct Ad {
    int64_t r;
    std::vector<float> A, B;
    LoraView v;
  };
  std::vector<Ad> ads = {{3, {}, {}, {}}, {5, {}, {}, {}}, {2, {}, {}, {}}};
  for (size_t a = 0; a < ads.size(); ++a) {
    Ad& d = ads[a];
    d.A = randn(size_t(d.r * in), uint32_t(20 + a), 0.5f);
    d.B = randn(size_t(out * d.r), uint32_t(30 + a), 0.5f);
    d.v.A = d.A.data();
    d.v.B = d.B.data();
    d.v.r = d.r;
    d.v.in = in;
    d.v.out = out;
    d.v.scale = 0.5f + float(a);
  }
  // rows 0-1: adapter 0; 2: none; 3-5: adapter 1; 6: adapter 0 again; 7: adapter 2; row 8: no group
  const std::vector<LoraGroup> groups = {
      {&ads[0].v, 0, 2}, {nullptr, 2, 3}, {&ads[1].v, 3, 6}, {&ads[0].v, 6, 7}, {&ads[2].v, 7, 8}};
  std::vector<float> y(size_t(T * out), 1.0f), t;
  lora_linear_forward_grouped(groups.data(), int64_t(groups.size()), x.data(), in, y.data(), out, t);
  const int which[T] = {0, 0, -1, 1, 1, 1, 0, 2, -1};
  for (int64_t row = 0; row < T; ++row) {
    const int a = which[row];
    std::vector<double> ref(size_t(out), 0.0);
    if (a >= 0) {
      std::vector<float> xr(x.begin() + row * in, x.begin() + (row + 1) * in);
      ref = naive(xr, ads[size_t(a)].A, ads[size_t(a)].B, 1, in, out, ads[size_t(a)].r, 1, 0, ads[size_t(a)].v.scale);
    }
    for (int64_t o = 0; o < out; ++o) EXPECT_NEAR(y[size_t(row * out + o)], 1.0 + ref[size_t(o)], 1e-4) << row << "," << o;
  }
}
