// Linear layers over Q8_0 / Q4_0 / Q4_K weights compute f32 math on the dequantized weight: the
// decode GEMV (AVX2 and, where the CPU has it, AVX-512 for Q8_0/Q4_0) up to summation order; the
// GEMM forward and the backward-input product bit for bit like the f32 GEMM on a dequantized copy.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gemmatune/kernels/linear.h"
#include "gemmatune/quant/blocks.h"
#include "test_util.h"

namespace gt {
namespace {

struct QWeight {
  std::vector<uint8_t> blocks;
  std::vector<float> deq;  // dequantized, [n, k]
  Weight2D w, wf;          // quantized and dense f32 views
};

QWeight make(WFormat f, int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> x(size_t(n * k));
  for (auto& v : x) v = nd(rng);
  QWeight q;
  const auto bt = f == WFormat::Q8_0   ? quant::BlockType::Q8_0
                  : f == WFormat::Q4_0 ? quant::BlockType::Q4_0
                                       : quant::BlockType::Q4_K;
  q.blocks.resize(size_t(quant::quantized_bytes(bt, n * k)));
  quant::quantize(bt, x.data(), n * k, q.blocks.data());
  q.deq.resize(x.size());
  quant::dequantize(bt, q.blocks.data(), n * k, q.deq.data());
  q.w = Weight2D{"q", DType::U8, q.blocks.data(), n, k, f};
  q.wf = Weight2D{"f", DType::F32, q.deq.data(), n, k, WFormat::Dense};
  return q;
}

std::vector<float> randv(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_EQ(std::memcmp(&a[i], &b[i], 4), 0) << what << " at " << i << ": " << a[i] << " vs " << b[i];
}

class QuantLinear : public ::testing::TestWithParam<WFormat> {
 protected:
  // Row length of `blocks` blocks (32 values; Q4_K: super-blocks of 256).
  int64_t K(int64_t blocks) const { return (GetParam() == WFormat::Q4_K ? 256 : 32) * blocks; }
};

TEST_P(QuantLinear, RowsToF32IsGgmlDequantization) {
  const int64_t k = K(3);
  QWeight q = make(GetParam(), 9, k, 1);
  std::vector<float> got(size_t(9 * k));
  weight_rows_to_f32(q.w, 0, 9, got.data());
  expect_same_bits(got, q.deq, "all rows");
  std::vector<float> row(static_cast<size_t>(k));
  weight_rows_to_f32(q.w, 7, 1, row.data());
  expect_same_bits(row, std::vector<float>(q.deq.begin() + 7 * k, q.deq.begin() + 8 * k), "row 7");
  EXPECT_EQ(q.w.bytes(), q.blocks.size());
}

TEST_P(QuantLinear, GemvMatchesF32OnDequantized) {
  for (int64_t n : {1, 7, 64, 301}) {
    for (int64_t k : {K(1), K(3), K(36)}) {
      QWeight q = make(GetParam(), n, k, uint32_t(n * 1000 + k));
      for (int64_t m : {1, 2, 3, 4, 5, 9}) {
        const int64_t ldx = k + 32, ldy = n + 3;  // strided rows
        const auto x = randv(size_t(m * ldx), uint32_t(m));
        std::vector<float> want(size_t(m * ldy), 0.5f);
        linear_detail::linear_path(linear_detail::Path::Reference, x.data(), m, q.wf, want.data(), true, ldx, ldy);
        for (int isa : {-1, 0, 1}) {
          if (isa == 1 && (!linear_detail::gemv_quant_avx512_supported() || GetParam() == WFormat::Q4_K)) continue;
          std::vector<float> got(size_t(m * ldy), 0.5f);
          linear_detail::gemv_forward_quant(x.data(), m, q.w, got.data(), true, ldx, ldy, isa);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              // Any f32 summation order errs by at most ~k u Σ|x w| (u = 2^-24); both sides do.
              double mag = 0;
              for (int64_t t = 0; t < k; ++t) mag += std::fabs(x[size_t(i * ldx + t)] * q.deq[size_t(j * k + t)]);
              const float g = got[size_t(i * ldy + j)], w = want[size_t(i * ldy + j)];
              ASSERT_NEAR(g, w, 2.0 * double(k + 2) * 6e-8 * mag + 1e-6) << "isa " << isa << " n " << n << " k " << k << " m " << m
                                                    << " at " << i << "," << j;
            }
          // padding between rows untouched
          if (ldy > n) {
            EXPECT_EQ(got[size_t(n)], 0.5f);
          }
        }
      }
    }
  }
}

TEST_P(QuantLinear, GemmForwardIsBitIdenticalToF32Gemm) {
  for (int64_t n : {5, 300, 600}) {
    const int64_t k = K(5), m = 37;
    QWeight q = make(GetParam(), n, k, uint32_t(n));
    const auto x = randv(size_t(m * k), 3);
    for (bool acc : {false, true}) {
      std::vector<float> want(size_t(m * n), 0.25f), got(size_t(m * n), 0.25f), autop(size_t(m * n), 0.25f);
      linear_detail::gemm_forward(x.data(), m, q.wf, want.data(), acc, 0, 0);
      linear_detail::gemm_forward(x.data(), m, q.w, got.data(), acc, 0, 0);
      linear(x.data(), m, q.w, autop.data(), acc);  // m > kGemvMaxM: the GEMM path
      expect_same_bits(got, want, "gemm forward n=" + std::to_string(n));
      expect_same_bits(autop, want, "linear() n=" + std::to_string(n));
    }
  }
}

TEST_P(QuantLinear, BackwardInputIsBitIdenticalToF32Gemm) {
  for (int64_t n : {7, 256, 700}) {  // several 256-row panels and a partial one
    const int64_t k = K(3), m = 29;
    QWeight q = make(GetParam(), n, k, uint32_t(n + 5));
    const auto dy = randv(size_t(m * n), 4);
    for (bool acc : {false, true}) {
      std::vector<float> want(size_t(m * k), 0.125f), got(size_t(m * k), 0.125f);
      linear_backward_input(dy.data(), m, q.wf, want.data(), acc);
      linear_backward_input(dy.data(), m, q.w, got.data(), acc);
      expect_same_bits(got, want, "backward input n=" + std::to_string(n));
    }
  }
}

TEST_P(QuantLinear, ReferenceAndOneDnnPathsAcceptBlocks) {
  const int64_t k = K(2);
  QWeight q = make(GetParam(), 40, k, 9);
  const auto x = randv(size_t(30 * k), 5);
  std::vector<float> a(size_t(30 * 40)), b(size_t(30 * 40)), c(size_t(30 * 40));
  linear_detail::linear_path(linear_detail::Path::Reference, x.data(), 30, q.w, a.data(), false, 0, 0);
  linear_detail::linear_path(linear_detail::Path::Reference, x.data(), 30, q.wf, b.data(), false, 0, 0);
  linear_detail::linear_path(linear_detail::Path::OneDnn, x.data(), 30, q.w, c.data(), false, 0, 0);
  expect_same_bits(a, b, "reference");
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(c[i], b[i], 1e-4) << i;
}

TEST(QuantLinearErrors, KNotMultipleOf32IsRefused) {
  std::vector<uint8_t> blocks(34 * 4);
  Weight2D w{"bad", DType::U8, blocks.data(), 4, 40, WFormat::Q8_0};
  std::vector<float> x(40), y(4);
  EXPECT_TRUE(test::contains(test::error_of([&] { linear(x.data(), 1, w, y.data()); }), "not a multiple of 32"));
}

TEST(QuantLinearErrors, Q4KNeedsWholeSuperBlocks) {
  std::vector<uint8_t> blocks(144 * 4);
  Weight2D w{"model.layers.0.mlp.up_proj.weight", DType::U8, blocks.data(), 4, 288, WFormat::Q4_K};
  std::vector<float> x(288 * 30), y(4 * 30), row(288);
  for (int64_t m : {1, 30}) {
    const std::string e = test::error_of([&] { linear(x.data(), m, w, y.data()); });
    EXPECT_TRUE(test::contains(e, "not a multiple of 256")) << e;
    EXPECT_TRUE(test::contains(e, "model.layers.0.mlp.up_proj.weight")) << e;
  }
  EXPECT_TRUE(test::contains(test::error_of([&] { linear_backward_input(y.data(), 1, w, x.data()); }), "not a multiple of 256"));
  EXPECT_TRUE(test::contains(test::error_of([&] { weight_rows_to_f32(w, 0, 1, row.data()); }), "not a multiple of 256"));
}

TEST(QuantLinearErrors, NoAvx512Q4KGemv) {
  // Q4_K has no AVX-512 GEMV: asking for it fails (on any host); isa -1 runs the AVX2 kernel.
  std::vector<uint8_t> blocks(144);
  Weight2D w{"q4k", DType::U8, blocks.data(), 1, 256, WFormat::Q4_K};
  std::vector<float> x(256), y(1);
  EXPECT_NE(test::error_of([&] { linear_detail::gemv_forward_quant(x.data(), 1, w, y.data(), false, 0, 0, 1); }),
            "(no error)");
  EXPECT_EQ(test::error_of([&] { linear_detail::gemv_forward_quant(x.data(), 1, w, y.data(), false, 0, 0, -1); }),
            "(no error)");
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantLinear, ::testing::Values(WFormat::Q8_0, WFormat::Q4_0, WFormat::Q4_K),
                         [](const auto& i) { return std::string(wformat_name(i.param)); });

}  // namespace
}  // namespace gt
