// kernels/gelu: the gated GELU's backward against finite differences, in the two layouts the model
// uses (separate gate/up arrays, and the routed experts' fused [gate | up] rows).
#include "gemmatune/kernels/gelu.h"

#include <gtest/gtest.h>

#include "kernel_test_util.h"

using namespace gt;
using gt::test::check_fd;
using gt::test::dot;
using gt::test::randn;

TEST(Gelu, GateBackwardSeparateArrays) {
  const int64_t rows = 3, n = 5;
  const auto g = randn(size_t(rows * n), 31, 1.5f), u = randn(size_t(rows * n), 32), w = randn(size_t(rows * n), 33);
  std::vector<float> dg(g.size()), du(u.size());
  gelu_gate_backward(g.data(), n, u.data(), n, w.data(), dg.data(), n, du.data(), n, rows, n);
  auto L = [&](const std::vector<float>& gg, const std::vector<float>& uu) {
    std::vector<float> y(size_t(rows * n));
    gelu_gate_forward(gg.data(), n, uu.data(), n, y.data(), rows, n);
    return dot(y, w);
  };
  check_fd(g, dg, [&](const std::vector<float>& v) { return L(v, u); }, 1e-3);
  check_fd(u, du, [&](const std::vector<float>& v) { return L(g, v); }, 1e-3);
}

TEST(Gelu, GateBackwardFusedRows) {
  const int64_t rows = 4, n = 3;
  const auto gu = randn(size_t(rows * 2 * n), 34, 1.5f), w = randn(size_t(rows * n), 35);
  std::vector<float> d(gu.size());
  gelu_gate_backward(gu.data(), 2 * n, gu.data() + n, 2 * n, w.data(), d.data(), 2 * n, d.data() + n, 2 * n, rows, n);
  auto L = [&](const std::vector<float>& v) {
    std::vector<float> y(size_t(rows * n));
    gelu_gate_forward(v.data(), 2 * n, v.data() + n, 2 * n, y.data(), rows, n);
    return dot(y, w);
  };
  check_fd(gu, d, L, 1e-3);
}
