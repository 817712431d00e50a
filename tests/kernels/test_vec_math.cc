// kernels/vec_math.h and the functions built on it: exp8 against double exp over the whole float
// range (≤ 2 ulp where the result is normal; 0 below the underflow bound, inf above the overflow
// bound, NaN kept), sigmoid8, and the GELU against a double-precision tanh reference, each lane of
// a vector and the scalar entry point agreeing bit for bit.
#include "gemmatune/kernels/vec_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gemmatune/kernels/gelu.h"

using namespace gt;

namespace {

std::vector<float> exp8_of(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); i += 8) {
    const __m256i m = vec::tail_mask(int64_t(x.size() - i));
    _mm256_maskstore_ps(y.data() + i, m, vec::exp8(_mm256_maskload_ps(x.data() + i, m)));
  }
  return y;
}

// Distance in units in the last place of the exact result (as a float).
double ulps(float got, double exact) {
  const float e = float(exact);
  const double ulp = double(std::nextafter(e, std::numeric_limits<float>::infinity())) - double(e);
  return std::fabs(double(got) - exact) / ulp;
}

// 0.5·x·(1 + tanh u) in double, written as x·σ(2u) (the same function) so that the reference itself
// does not cancel to 0 on the negative tail; checked against the tanh form where that is exact enough.
double gelu_ref(double x) {
  const double u = std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x);
  return x / (1 + std::exp(-2 * u));
}
double gelu_grad_ref(double x) {
  const double k = std::sqrt(2 / M_PI), u = k * (x + 0.044715 * x * x * x), s = 1 / (1 + std::exp(-2 * u));
  return s + x * 2 * s * (1 - s) * k * (1 + 3 * 0.044715 * x * x);
}

}  // namespace

TEST(VecMath, ExpWithinTwoUlpOverTheNormalRange) {
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.5f; v += 0.0137f) x.push_back(v);
  for (float v = -1e-3f; v <= 1e-3f; v += 1.3e-6f) x.push_back(v);
  x.push_back(0.0f);
  const auto y = exp8_of(x);
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, ulps(y[i], std::exp(double(x[i]))));
  EXPECT_LE(worst, 2.0);
  EXPECT_EQ(y[x.size() - 1], 1.0f);  // exp(0) exactly
}

TEST(VecMath, ExpEdgesUnderflowOverflowNan) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {-88.0f, -1000.0f, -inf, 89.0f, 1000.0f, inf, nan, -87.3f, 88.7f};
  const auto y = exp8_of(x);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], inf);
  EXPECT_EQ(y[4], inf);
  EXPECT_EQ(y[5], inf);
  EXPECT_TRUE(std::isnan(y[6]));
  EXPECT_NEAR(y[7] / std::exp(double(x[7])), 1.0, 3e-7);
  EXPECT_NEAR(y[8] / std::exp(double(x[8])), 1.0, 3e-7);
  EXPECT_TRUE(std::isfinite(y[8]));
}

TEST(VecMath, SigmoidIsRelativelyAccurateOnBothTails) {
  for (float v = -80.0f; v <= 80.0f; v += 0.37f) {
    const double exact = 1 / (1 + std::exp(-double(v)));
    const float got = vec::first_lane(vec::sigmoid8(_mm256_set1_ps(v)));
    EXPECT_LE(ulps(got, exact), 4.0) << v;
  }
}

TEST(VecMath, GeluAndItsGradientMatchDoubleTanhReference) {
  std::vector<float> g, u, out;
  for (float v = -12.0f; v <= 12.0f; v += 0.011f) g.push_back(v);
  const int64_t n = int64_t(g.size());  // not a multiple of 8: exercises the masked tail
  u.assign(g.size(), 1.0f);
  out.assign(g.size(), 0.0f);
  gelu_gate_forward(g.data(), n, u.data(), n, out.data(), 1, n);
  std::vector<float> dg(g.size()), du(g.size());
  gelu_gate_backward(g.data(), n, u.data(), n, u.data(), dg.data(), n, du.data(), n, 1, n);
  for (double x = -3; x <= 3; x += 0.01)
    ASSERT_NEAR(gelu_ref(x), 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))), 1e-15);
  for (int64_t i = 0; i < n; ++i) {
    const double x = g[size_t(i)], ref = gelu_ref(x), dref = gelu_grad_ref(x);
    // f32 evaluation of the formula: e^(−2u) amplifies the relative rounding of its argument 2u by
    // |2u| (the condition number of exp), so the bound is a few f32 epsilons times (1 + |2u|),
    // relative to the value: the negative tail is relatively accurate (no 1 + tanh cancellation).
    const double two_u = 2 * std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x);
    const double rel = 8 * 1.1920929e-7 * (1 + std::fabs(two_u));
    EXPECT_NEAR(out[size_t(i)], ref, rel * std::fabs(ref) + 1e-30) << x;
    // the derivative is a sum of two terms that cancel near its zeros: bound relative to their sizes
    const double k = std::sqrt(2 / M_PI), sg = 1 / (1 + std::exp(-two_u));
    const double terms = sg + std::fabs(x) * 2 * sg * (1 - sg) * k * (1 + 3 * 0.044715 * x * x);
    EXPECT_NEAR(dg[size_t(i)], dref, rel * terms + 1e-30) << x;
    EXPECT_EQ(du[size_t(i)], out[size_t(i)]) << x;
    // the scalar entry points are the same computation
    EXPECT_EQ(gelu_tanh(g[size_t(i)]), out[size_t(i)]) << x;
    EXPECT_EQ(gelu_tanh_grad(g[size_t(i)]), dg[size_t(i)]) << x;
  }
}

TEST(VecMath, TanhIsAccurateAcrossTheThresholdAndOddInSign) {
  for (float v = -20.0f; v <= 20.0f; v += 0.00731f) {
    const float got = vec::first_lane(vec::tanh8(_mm256_set1_ps(v)));
    const double exact = std::tanh(double(v));
    EXPECT_NEAR(got, exact, 6e-8 + 4e-7 * std::fabs(exact)) << v;
    EXPECT_EQ(vec::first_lane(vec::tanh8(_mm256_set1_ps(-v))), -got) << v;
  }
  for (float v : {1e-30f, 1e-6f, 0.01f, 0.0624f, 0.0626f})  // relative accuracy near 0
    EXPECT_NEAR(vec::first_lane(vec::tanh8(_mm256_set1_ps(v))) / std::tanh(double(v)), 1.0, 6e-7) << v;
  EXPECT_EQ(vec::first_lane(vec::tanh8(_mm256_set1_ps(0.0f))), 0.0f);
  EXPECT_EQ(vec::first_lane(vec::tanh8(_mm256_set1_ps(100.0f))), 1.0f);
}
