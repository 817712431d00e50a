// Helpers for kernel tests: random inputs, dot products and central finite differences.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace gt::test {

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// Checks grad (analytic dL/dx) against central differences of L(x).
inline void check_fd(std::vector<float> x, const std::vector<float>& grad,
                     const std::function<double(const std::vector<float>&)>& L, double eps = 1e-2, double rtol = 2e-2,
                     double atol = 2e-3) {
  ASSERT_EQ(x.size(), grad.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float x0 = x[i];
    x[i] = x0 + float(eps);
    const double lp = L(x);
    x[i] = x0 - float(eps);
    const double lm = L(x);
    x[i] = x0;
    const double fd = (lp - lm) / (2 * eps);
    EXPECT_NEAR(grad[i], fd, atol + rtol * std::fabs(fd)) << "entry " << i;
  }
}

}  // namespace gt::test
