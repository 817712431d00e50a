// Every GEMM kernel of kernels/gemm.h that this CPU runs, called directly (whatever the process
// selected), against double-precision references: forward and backward-input layouts, F32/BF16/F16
// weights, shapes that cut every blocking (m, n, k tails; k across KC), accumulate, row strides,
// 1 and 2 threads. A kernel this CPU lacks is reported as skipped, never as passed.
//
// Bounds: f32 kernels |got - ref| <= 2e-6 · Σ|x||w| (f32 accumulation of K terms, as test_linear).
// avx512bf16 (BF16 weights): against the reference on bf16-rounded activations the same f32 bound
// holds (bf16 x bf16 products are exact in f32); against the unrounded reference the bound is
// u · Σ|x||w| + 2e-6 · Σ|x||w| with u = 2^-8, the unit roundoff of bf16 (round to nearest even).
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
using gt::gemm::Isa;

namespace {

struct Problem {
  int64_t m, n, k;
  bool trans, accumulate;
  int64_t lda_pad, ldc_pad;
};

uint16_t to_bits(DType dt, float v) { return dt == DType::BF16 ? gt::f32_to_bf16(v) : gt::f32_to_f16(v); }
float from_bits(DType dt, uint16_t h) { return dt == DType::BF16 ? gt::bf16_to_f32(h) : gt::f16_to_f32(h); }

struct Data {
  std::vector<uint8_t> w;      // stored weight (exact size)
  std::vector<float> wv;       // its values, row-major as stored
  std::vector<float> a, c0;    // A [m, lda], C start [m, ldc]
  int64_t lda, ldc, ldw, wrows;
};

Data make(const Problem& p, DType dt, uint32_t seed) {
  Data d;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // forward: W is [n, k]; backward: W is [k, n] (reduction over its rows)
  d.wrows = p.trans ? p.n : p.k;
  d.ldw = p.trans ? p.k : p.n;
  const size_t cnt = size_t(d.wrows * d.ldw);
  d.w.resize(cnt * gt::dtype_size(dt));
  d.wv.resize(cnt);
  for (size_t i = 0; i < cnt; ++i) {
    const float v = u(rng);
    if (dt == DType::F32) {
      std::memcpy(d.w.data() + 4 * i, &v, 4);
      d.wv[i] = v;
    } else {
      const uint16_t h = to_bits(dt, v);
      std::memcpy(d.w.data() + 2 * i, &h, 2);
      d.wv[i] = from_bits(dt, h);
    }
  }
  d.lda = p.k + p.lda_pad;
  d.ldc = p.n + p.ldc_pad;
  d.a.resize(size_t(p.m * d.lda));
  d.c0.resize(size_t(p.m * d.ldc));
  for (auto& v : d.a) v = u(rng);
  for (auto& v : d.c0) v = u(rng);
  return d;
}

float wval(const Data& d, const Problem& p, int64_t kk, int64_t j) {
  return p.trans ? d.wv[size_t(j * d.ldw + kk)] : d.wv[size_t(kk * d.ldw + j)];
}

void run_check(Isa isa, DType dt, const Problem& p, int threads) {
  SCOPED_TRACE(::testing::Message() << "kernel=" << gt::gemm::isa_name(isa) << " dtype=" << gt::dtype_name(dt)
                                    << " m=" << p.m << " n=" << p.n << " k=" << p.k << " trans=" << p.trans
                                    << " acc=" << p.accumulate << " lda+" << p.lda_pad << " ldc+" << p.ldc_pad
                                    << " threads=" << threads);
  const Data d = make(p, dt, uint32_t(p.m * 7 + p.n * 131 + p.k * 3 + int(dt)));
  const bool bf16_in = isa == Isa::Avx512Bf16 && dt == DType::BF16;
  std::vector<float> c = d.c0;
  omp_set_num_threads(threads);
  gt::gemm::gemm(isa, d.a.data(), d.lda, p.m, dt, d.w.data(), d.ldw, p.trans, p.n, p.k, c.data(), d.ldc, p.accumulate);
  const double u = std::ldexp(1.0, -8);
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = 0; j < d.ldc; ++j) {
      const float got = c[size_t(i * d.ldc + j)];
      if (j >= p.n) {
        ASSERT_EQ(got, d.c0[size_t(i * d.ldc + j)]) << "stride padding written at i=" << i << " j=" << j;
        continue;
      }
      double ref = p.accumulate ? double(d.c0[size_t(i * d.ldc + j)]) : 0.0, refr = ref, mag = std::fabs(ref);
      for (int64_t kk = 0; kk < p.k; ++kk) {
        const float x = d.a[size_t(i * d.lda + kk)];
        const double w = wval(d, p, kk, j);
        ref += double(x) * w;
        refr += double(gt::bf16_to_f32(gt::f32_to_bf16(x))) * w;
        mag += std::fabs(double(x) * w);
      }
      if (bf16_in) {
        ASSERT_NEAR(got, refr, 2e-6 * mag + 1e-30) << "vs bf16-rounded inputs at i=" << i << " j=" << j;
        ASSERT_NEAR(got, ref, (u + 2e-6) * mag + 1e-30) << "vs exact inputs at i=" << i << " j=" << j;
      } else {
        ASSERT_NEAR(got, ref, 2e-6 * mag + 1e-30) << "at i=" << i << " j=" << j;
      }
    }
}

const Problem kProblems[] = {
    {1, 1, 1, true, false, 0, 0},      {5, 17, 3, true, false, 0, 0},     {13, 33, 31, true, true, 3, 5},
    {25, 64, 256, true, false, 0, 0},  {37, 100, 257, true, true, 0, 0},  {150, 70, 515, true, false, 2, 1},
    {200, 300, 1030, true, false, 0, 0}, {7, 45, 70, false, false, 0, 0}, {30, 33, 513, false, true, 0, 0},
    {150, 520, 129, false, false, 0, 0}, {61, 1040, 96, true, false, 0, 0}, {64, 96, 64, false, true, 0, 0},
};

class GemmKernels : public ::testing::TestWithParam<Isa> {};

TEST_P(GemmKernels, MatchesDoubleReference) {
  const Isa isa = GetParam();
  if (!gt::gemm::isa_supported(isa))
    GTEST_SKIP() << "not run: this CPU lacks " << gt::gemm::isa_missing(isa) << " for kernel " << gt::gemm::isa_name(isa);
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (const Problem& p : kProblems)
      for (int t : {1, 2}) run_check(isa, dt, p, t);
}

INSTANTIATE_TEST_SUITE_P(Isa, GemmKernels, ::testing::ValuesIn(gt::gemm::kAllIsas),
                         [](const ::testing::TestParamInfo<Isa>& i) { return std::string(gt::gemm::isa_name(i.param)); });

// The f32 kernels accumulate in the same order: bit-identical results (so the probe's choice
// between them never changes a result).
TEST(GemmKernels, F32KernelsAreBitIdentical) {
  if (!gt::gemm::isa_supported(Isa::Avx512)) GTEST_SKIP() << "not run: this CPU lacks " << gt::gemm::isa_missing(Isa::Avx512);
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (const Problem& p : kProblems) {
      const Data d = make(p, dt, 5);
      std::vector<float> c1 = d.c0, c2 = d.c0;
      gt::gemm::gemm(Isa::Avx2, d.a.data(), d.lda, p.m, dt, d.w.data(), d.ldw, p.trans, p.n, p.k, c1.data(), d.ldc,
                     p.accumulate);
      gt::gemm::gemm(Isa::Avx512, d.a.data(), d.lda, p.m, dt, d.w.data(), d.ldw, p.trans, p.n, p.k, c2.data(), d.ldc,
                     p.accumulate);
      ASSERT_EQ(std::memcmp(c1.data(), c2.data(), c1.size() * 4), 0)
          << gt::dtype_name(dt) << " m=" << p.m << " n=" << p.n << " k=" << p.k;
    }
}

TEST(GemmSelection, ForcedChoicesAndPrecision) {
  EXPECT_TRUE(gt::gemm::isa_supported(Isa::Avx2));  // the build's baseline
  Isa isa;
  EXPECT_TRUE(gt::gemm::parse_isa("avx512bf16", &isa));
  EXPECT_EQ(isa, Isa::Avx512Bf16);
  EXPECT_FALSE(gt::gemm::parse_isa("avx512_bf16", &isa));
  EXPECT_THROW(gt::gemm::configure("sse2"), gt::Error);
  EXPECT_THROW(gt::gemm::configure("auto", "fp8"), gt::Error);

  gt::gemm::configure("avx2", "auto");
  EXPECT_EQ(gt::gemm::kernel_for(DType::BF16), Isa::Avx2);
  EXPECT_EQ(gt::gemm::kernel_for(DType::F32), Isa::Avx2);
  EXPECT_TRUE(gt::gemm::selection().forced);
  for (Isa i : {Isa::Avx512, Isa::Avx512Bf16}) {
    if (gt::gemm::isa_supported(i)) continue;
    EXPECT_THROW(gt::gemm::configure(gt::gemm::isa_name(i)), gt::Error) << gt::gemm::isa_name(i);
  }
  if (gt::gemm::isa_supported(Isa::Avx512Bf16)) {
    gt::gemm::configure("avx512bf16", "auto");
    EXPECT_EQ(gt::gemm::kernel_for(DType::BF16), Isa::Avx512Bf16);
    EXPECT_EQ(gt::gemm::kernel_for(DType::F32), Isa::Avx512);  // f32 weights never take bf16 inputs
    EXPECT_EQ(gt::gemm::kernel_for(DType::F16), Isa::Avx512);
    EXPECT_TRUE(gt::gemm::bf16_inputs_for(DType::BF16));
    gt::gemm::configure("avx512bf16", "f32");
    EXPECT_EQ(gt::gemm::kernel_for(DType::BF16), Isa::Avx512);
    EXPECT_FALSE(gt::gemm::bf16_inputs_for(DType::BF16));
  }
  // Automatic choice: whatever the probe says, precision f32 never selects bf16 inputs, and the
  // chosen kernels are supported.
  gt::gemm::configure("auto", "f32");
  const auto& s = gt::gemm::selection();
  EXPECT_FALSE(s.forced);
  EXPECT_FALSE(s.bf16_inputs());
  EXPECT_TRUE(gt::gemm::isa_supported(s.f32));
  EXPECT_TRUE(s.probed[int(Isa::Avx2)]);
  EXPECT_GT(s.probe_gflops[int(Isa::Avx2)], 0.0);
  gt::gemm::configure("auto", "auto");
  EXPECT_TRUE(gt::gemm::isa_supported(gt::gemm::selection().bf16));
  EXPECT_FALSE(gt::gemm::selection().why.empty());
}

// linear()/linear_backward_input() route through the selected kernel of the weight's dtype.
TEST(GemmSelection, LinearUsesTheSelectedKernel) {
  const int64_t m = 40, n = 48, k = 80;
  std::vector<uint16_t> wb(size_t(n * k));
  std::vector<float> x(size_t(m * k)), y1(size_t(m * n)), y2(size_t(m * n));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : wb) v = gt::f32_to_bf16(u(rng));
  for (auto& v : x) v = u(rng) * 1.01f;
  gt::Weight2D w{"w", DType::BF16, wb.data(), n, k};
  for (Isa isa : gt::gemm::kAllIsas) {
    if (!gt::gemm::isa_supported(isa)) continue;
    gt::gemm::configure(gt::gemm::isa_name(isa), "auto");
    gt::linear(x.data(), m, w, y1.data());
    gt::linear_detail::gemm_forward_isa(isa, x.data(), m, w, y2.data(), false, 0, 0);
    EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << gt::gemm::isa_name(isa);
  }
  gt::gemm::configure("", "");
}

TEST(GemmSelection, RegisterPeaksAreMeasurable) {
  for (Isa isa : gt::gemm::kAllIsas) {
    const double g = gt::gemm::register_peak_gflops(isa, 1, 1);
    if (gt::gemm::isa_supported(isa))
      EXPECT_GT(g, 0.0) << gt::gemm::isa_name(isa);
    else
      EXPECT_EQ(g, 0.0) << gt::gemm::isa_name(isa);
  }
}

}  // namespace
