// kernels/moe_router: the forward's routing (softmax, top-k with ties to the lower id, renormalised
// weights times per-expert scales) and the backward against finite differences.
#include "gemmatune/kernels/moe_router.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernel_test_util.h"

using namespace gt;
using gt::test::check_fd;
using gt::test::dot;
using gt::test::randn;

namespace {

struct Router {
  int64_t T = 4, H = 6, E = 5, K = 2;
  std::vector<float> W = randn(size_t(E * H), 21), scale = randn(size_t(H), 22, 0.3f), pes = randn(size_t(E), 23, 0.3f);
  Weight2D proj;
  Router() {
    for (auto& v : scale) v += 1.0f;
    for (auto& v : pes) v += 1.0f;
    proj.name = "router";
    proj.dtype = DType::F32;
    proj.data = W.data();
    proj.n = E;
    proj.k = H;
  }
  MoeRouter spec() const { return MoeRouter{&proj, scale.data(), pes.data(), E, K, 1e-6f}; }
  struct Out {
    std::vector<float> z, rs, probs, topw;
    std::vector<int32_t> topk;
  };
  Out run(const std::vector<float>& x) const {
    Out o;
    o.z.resize(size_t(T * H));
    o.rs.resize(size_t(T));
    o.probs.resize(size_t(T * E));
    o.topw.resize(size_t(T * K));
    o.topk.resize(size_t(T * K));
    moe_router_forward(spec(), x.data(), T, H, o.z.data(), o.rs.data(), o.probs.data(), o.topk.data(), o.topw.data());
    return o;
  }
};

}  // namespace

TEST(MoeRouter, ForwardRoutesToTheTopK) {
  Router r;
  const auto x = randn(size_t(r.T * r.H), 24);
  const auto o = r.run(x);
  for (int64_t t = 0; t < r.T; ++t) {
    const float* p = &o.probs[size_t(t * r.E)];
    double s = 0;
    for (int64_t e = 0; e < r.E; ++e) s += p[e];
    EXPECT_NEAR(s, 1.0, 1e-6);
    const int32_t a = o.topk[size_t(t * r.K)], b = o.topk[size_t(t * r.K + 1)];
    EXPECT_NE(a, b);
    for (int64_t e = 0; e < r.E; ++e)
      if (e != a && e != b) {
        EXPECT_LE(p[e], p[b]);
      }
    EXPECT_GE(p[a], p[b]);
    EXPECT_NEAR(o.topw[size_t(t * r.K)], p[a] / (p[a] + p[b]) * r.pes[size_t(a)], 1e-6);
  }
}

TEST(MoeRouter, BackwardMatchesFiniteDifferences) {
  Router r;
  const auto x = randn(size_t(r.T * r.H), 25);
  const auto wtop = randn(size_t(r.T * r.K), 26), wprob = randn(size_t(r.T * r.E), 27);
  const auto o = r.run(x);
  for (const bool extra : {false, true}) {
    SCOPED_TRACE(extra);
    // L = Σ wtop·topw (+ Σ wprob·probs): dL/dtopw = wtop, dL/dprobs = wprob.
    auto L = [&](const std::vector<float>& xx) {
      const auto q = r.run(xx);
      EXPECT_EQ(q.topk, o.topk) << "the perturbation changed the routing; pick other inputs";
      return dot(q.topw, wtop) + (extra ? dot(q.probs, wprob) : 0.0);
    };
    std::vector<float> dx(x.size(), 0.0f);
    moe_router_backward(r.spec(), x.data(), o.rs.data(), o.probs.data(), o.topk.data(), wtop.data(),
                        extra ? wprob.data() : nullptr, r.T, r.H, dx.data());
    check_fd(x, dx, L, 1e-3, 2e-2, 1e-3);
  }
}
