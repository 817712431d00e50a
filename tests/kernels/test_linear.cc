// Linear-layer kernels against a double-precision reference: every path (auto dispatch, GEMV,
// own GEMM, oneDNN comparison path), all three weight dtypes, m from 1 to 130, odd n and k (tails
// of every blocking), accumulate, row strides, 1 and 2 threads; backward_input likewise.
// Tolerance is relative to sum_t |x_t||w_t| (f32 accumulation).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gemmatune/kernels/gemm.h"
#include "gemmatune/kernels/linear.h"
#include "gemmatune/util/error.h"

using gt::DType;
using gt::Weight2D;
using gt::linear_detail::Path;

namespace {

struct TestWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // exact decoded values, [n, k]
  Weight2D w;
};

TestWeight make_weight(DType dt, int64_t n, int64_t k, uint32_t seed) {
  TestWeight t;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const size_t cnt = size_t(n * k);
  t.bytes.resize(cnt * gt::dtype_size(dt));  // exact size: an over-read shows up under ASan
  t.values.resize(cnt);
  for (size_t i = 0; i < cnt; ++i) {
    const float v = u(rng);
    if (dt == DType::BF16) {
      const uint16_t h = gt::f32_to_bf16(v);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
      t.values[i] = gt::bf16_to_f32(h);
    } else if (dt == DType::F16) {
      const uint16_t h = gt::f32_to_f16(v);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
      t.values[i] = gt::f16_to_f32(h);
    } else {
      std::memcpy(t.bytes.data() + 4 * i, &v, 4);
      t.values[i] = v;
    }
  }
  t.w.name = "test";
  t.w.dtype = dt;
  t.w.data = t.bytes.data();
  t.w.n = n;
  t.w.k = k;
  return t;
}

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

constexpr double kTol = 2e-6;  // times sum |x||w|; f32 rounding of K-term sums is ~1e-7 of that

const DType kDTypes[] = {DType::F32, DType::BF16, DType::F16};

// When the process selected the bf16-input GEMM kernel for this dtype (GEMMATUNE_KERNELS=avx512bf16),
// the GEMM paths round the activations to bf16: each output then errs by at most u·Σ|x||w| more,
// u = 2^-8 (bf16 unit roundoff; bf16 products are exact in f32). See tests/kernels/test_gemm_isa.cc.
double tol_for(Path p, DType dt) {
  return (p == Path::Auto || p == Path::Gemm) && gt::gemm::bf16_inputs_for(dt) ? kTol + 1.0 / 256 : kTol;
}

// Runs every path in `paths` at every thread count in `threads` on one problem and compares
// each result with a double-precision reference computed once.
void check_forward(std::initializer_list<Path> paths, DType dt, int64_t m, int64_t n, int64_t k, bool accumulate,
                   bool strided, std::initializer_list<int> threads) {
  TestWeight tw = make_weight(dt, n, k, uint32_t(n * 131 + k));
  const int64_t ldx = strided ? k + 3 : k, ldy = strided ? n + 5 : n;
  std::vector<float> x = random_vec(size_t(m * ldx), uint32_t(m + 7));
  std::vector<float> y0 = random_vec(size_t(m * ldy), uint32_t(m + 99));
  std::vector<double> ref(size_t(m * n)), mag(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double r = accumulate ? double(y0[size_t(i * ldy + j)]) : 0.0, g = std::fabs(r);
      for (int64_t t = 0; t < k; ++t) {
        const double p = double(x[size_t(i * ldx + t)]) * double(tw.values[size_t(j * k + t)]);
        r += p;
        g += std::fabs(p);
      }
      ref[size_t(i * n + j)] = r;
      mag[size_t(i * n + j)] = g;
    }
  for (Path path : paths)
    for (int nt : threads) {
      if (path == Path::Reference && m * n * k > 2'000'000) continue;  // the naive loop is slow
      SCOPED_TRACE(::testing::Message() << "path=" << gt::linear_detail::path_name(path) << " dtype="
                                        << gt::dtype_name(dt) << " m=" << m << " n=" << n << " k=" << k
                                        << " acc=" << accumulate << " strided=" << strided << " threads=" << nt);
      std::vector<float> y = y0;
      const double tol = tol_for(path, dt);
      omp_set_num_threads(nt);
      gt::linear_detail::linear_path(path, x.data(), m, tw.w, y.data(), accumulate, strided ? ldx : 0,
                                     strided ? ldy : 0);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < ldy; ++j) {
          const float got = y[size_t(i * ldy + j)];
          if (j >= n) {  // stride padding must be untouched
            ASSERT_EQ(got, y0[size_t(i * ldy + j)]) << "padding written at i=" << i << " j=" << j;
            continue;
          }
          ASSERT_NEAR(got, ref[size_t(i * n + j)], tol * mag[size_t(i * n + j)] + 1e-30) << "at i=" << i << " j=" << j;
        }
    }
}

void check_backward(std::initializer_list<Path> paths, DType dt, int64_t m, int64_t n, int64_t k, bool accumulate,
                    std::initializer_list<int> threads) {
  TestWeight tw = make_weight(dt, n, k, uint32_t(n * 17 + k * 3));
  std::vector<float> dy = random_vec(size_t(m * n), uint32_t(m + 5));
  std::vector<float> dx0 = random_vec(size_t(m * k), uint32_t(m + 77));
  std::vector<double> ref(size_t(m * k)), mag(size_t(m * k));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t t = 0; t < k; ++t) {
      double r = accumulate ? double(dx0[size_t(i * k + t)]) : 0.0, g = std::fabs(r);
      for (int64_t j = 0; j < n; ++j) {
        const double p = double(dy[size_t(i * n + j)]) * double(tw.values[size_t(j * k + t)]);
        r += p;
        g += std::fabs(p);
      }
      ref[size_t(i * k + t)] = r;
      mag[size_t(i * k + t)] = g;
    }
  for (Path path : paths)
    for (int nt : threads) {
      if (path == Path::Reference && m * n * k > 2'000'000) continue;
      SCOPED_TRACE(::testing::Message() << "backward path=" << gt::linear_detail::path_name(path)
                                        << " dtype=" << gt::dtype_name(dt) << " m=" << m << " n=" << n << " k=" << k
                                        << " acc=" << accumulate << " threads=" << nt);
      std::vector<float> dx = dx0;
      const double tol = tol_for(path, dt);
      omp_set_num_threads(nt);
      gt::linear_detail::linear_backward_input_path(path, dy.data(), m, tw.w, dx.data(), accumulate);
      for (int64_t i = 0; i < m * k; ++i)
        ASSERT_NEAR(dx[size_t(i)], ref[size_t(i)], tol * mag[size_t(i)] + 1e-30) << "at i=" << i / k << " t=" << i % k;
    }
}

const int64_t kMs[] = {1, 2, 3, 5, 8, 17, 64, 130};

}  // namespace

#define ALL_FWD                                                                          \
  {                                                                                      \
    Path::Auto, Path::Gemv, Path::Gemm, Path::OneDnn, Path::Reference                    \
  }
#define ALL_BWD                                        \
  {                                                    \
    Path::Auto, Path::Gemm, Path::OneDnn, Path::Reference \
  }

TEST(Linear, ForwardSmallOddShapes) {
  for (DType dt : kDTypes)
    for (int64_t m : kMs)
      for (int acc = 0; acc < 2; ++acc)
        for (int strided = 0; strided < 2; ++strided) {
          check_forward(ALL_FWD, dt, m, 37, 53, acc, strided, {2});
          if (::testing::Test::HasFatalFailure()) return;
        }
}

TEST(Linear, ForwardTinyShapes) {
  for (DType dt : kDTypes)
    for (int64_t m : {1, 3, 7})
      for (auto [n, k] : {std::pair<int64_t, int64_t>{1, 1}, {1, 16}, {16, 1}, {5, 17}, {9, 32}, {16, 16}}) {
        check_forward(ALL_FWD, dt, m, n, k, m == 3, false, {1, 2});
        if (::testing::Test::HasFatalFailure()) return;
      }
}

// Shapes that cross every blocking boundary: k > KC (256) with a tail, n > NC (1024) with a tail
// that is not a multiple of 16 or 8, m > MC (120), and enough rows for both GEMV threads.
TEST(Linear, ForwardBlockBoundaries) {
  for (DType dt : kDTypes)
    for (int64_t m : kMs) {
      check_forward(ALL_FWD, dt, m, 1059, 531, m % 2 == 1, m == 17 || m == 2, {1, 2});
      if (::testing::Test::HasFatalFailure()) return;
    }
}

TEST(Linear, AutoDispatchAcrossThreadCounts) {
  for (int64_t m : {1, 4, 20, 21, 32}) {
    check_forward({Path::Auto}, DType::BF16, m, 2048 + 3, 1152, false, false, {1, 2});
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(Linear, BackwardInputSmallOddShapes) {
  for (DType dt : kDTypes)
    for (int64_t m : kMs)
      for (int acc = 0; acc < 2; ++acc) {
        check_backward(ALL_BWD, dt, m, 37, 53, acc, {2});
        if (::testing::Test::HasFatalFailure()) return;
      }
}

TEST(Linear, BackwardInputBlockBoundaries) {
  for (DType dt : kDTypes)
    for (int64_t m : kMs) {
      check_backward(ALL_BWD, dt, m, 531, 1059, m % 2 == 0, {1, 2});
      if (::testing::Test::HasFatalFailure()) return;
    }
}

TEST(Linear, PublicApiDefaults) {
  TestWeight tw = make_weight(DType::BF16, 70, 45, 3);
  for (int64_t m : {1, 2, 9}) {
    std::vector<float> x = random_vec(size_t(m * 45), 1), y(size_t(m * 70), 0.0f), y2(size_t(m * 70), 0.0f);
    gt::linear(x.data(), m, tw.w, y.data());
    gt::linear_detail::linear_path(Path::Reference, x.data(), m, tw.w, y2.data(), false, 0, 0);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y2[i], 1e-4f);
    std::vector<float> dx(size_t(m * 45), 1.0f), dx2(size_t(m * 45), 1.0f);
    gt::linear_backward_input(y.data(), m, tw.w, dx.data(), true);
    gt::linear_detail::linear_backward_input_path(Path::Reference, y.data(), m, tw.w, dx2.data(), true);
    // (bf16-input kernel selected: each entry may differ by u·Σ_j |y_j||w_jt| more, see tol_for)
    const bool b16 = gt::gemm::bf16_inputs_for(DType::BF16);
    for (size_t i = 0; i < dx.size(); ++i) {
      double mag = 0;
      for (int64_t j = 0; b16 && j < 70; ++j)
        mag += std::fabs(double(y[size_t(int64_t(i) / 45 * 70 + j)]) * double(tw.values[size_t(j * 45 + int64_t(i) % 45)]));
      ASSERT_NEAR(dx[i], dx2[i], 1e-3 + mag / 256);
    }
  }
}

TEST(Linear, RejectsUnsupportedDtypeAndMissingData) {
  std::vector<int32_t> ints(12);
  Weight2D w{"ints", DType::I32, ints.data(), 3, 4};
  std::vector<float> x(4), y(3);
  EXPECT_THROW(gt::linear(x.data(), 1, w, y.data()), gt::Error);
  Weight2D e{"empty", DType::BF16, nullptr, 3, 4};
  EXPECT_THROW(gt::linear(x.data(), 1, e, y.data()), gt::Error);
}
