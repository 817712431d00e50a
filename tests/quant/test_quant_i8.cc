// The int8-activation decode GEMV over Q8_0 / Q4_0 weights (kernels/linear_quant_i8.cc): the
// activation quantizer's rounding bound, the integer dot products against a scalar reference in
// double, the distance to exact f32 math within the bound derived from the activation rounding,
// and which path `linear` takes under `--precision auto` and `f32`.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gemmatune/kernels/gemm.h"
#include "gemmatune/kernels/linear.h"
#include "gemmatune/quant/blocks.h"
#include "gemmatune/tensor/dtype.h"

namespace gt {
namespace {

struct QW {
  std::vector<uint8_t> blocks;
  std::vector<float> deq;
  Weight2D w;
};

QW make(WFormat f, int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> x(size_t(n * k));
  for (auto& v : x) v = nd(rng);
  QW q;
  const auto bt = f == WFormat::Q8_0 ? quant::BlockType::Q8_0 : quant::BlockType::Q4_0;
  q.blocks.resize(size_t(quant::quantized_bytes(bt, n * k)));
  quant::quantize(bt, x.data(), n * k, q.blocks.data());
  q.deq.resize(x.size());
  quant::dequantize(bt, q.blocks.data(), n * k, q.deq.data());
  q.w = Weight2D{"w", DType::U8, q.blocks.data(), n, k, f};
  return q;
}

std::vector<float> activations(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = nd(rng) * (i % 97 == 0 ? 30.0f : 1.0f);  // a few outliers per block range
  return v;
}

float f16_at(const uint8_t* p) {
  float v;
  to_f32(DType::F16, p, &v, 1);
  return v;
}

// The stored integer weight values (Q8_0: q, Q4_0: nibble - 8) and scales of row j.
void row_ints(const QW& q, int64_t j, std::vector<int>& vals, std::vector<float>& scales) {
  const int64_t nb = q.w.k / 32;
  const uint8_t* row = q.blocks.data() + size_t(j) * q.w.row_bytes();
  vals.assign(size_t(q.w.k), 0);
  scales.assign(size_t(nb), 0.0f);
  for (int64_t b = 0; b < nb; ++b) {
    if (q.w.format == WFormat::Q8_0) {
      const uint8_t* blk = row + b * 34;
      scales[size_t(b)] = f16_at(blk);
      for (int i = 0; i < 32; ++i) vals[size_t(b * 32 + i)] = int(int8_t(blk[2 + i]));
    } else {
      const uint8_t* blk = row + b * 18;
      scales[size_t(b)] = f16_at(blk);
      for (int i = 0; i < 16; ++i) {
        vals[size_t(b * 32 + i)] = int(blk[2 + i] & 15) - 8;
        vals[size_t(b * 32 + 16 + i)] = int(blk[2 + i] >> 4) - 8;
      }
    }
  }
}

TEST(QuantI8, ActivationQuantizerRoundsWithinHalfAStep) {
  std::vector<float> x = activations(32 * 9, 3);
  for (int i = 64; i < 96; ++i) x[size_t(i)] = 0.0f;  // an all-zero block
  std::vector<int8_t> q(x.size());
  std::vector<float> d(x.size() / 32);
  linear_detail::quantize_activations_i8(x.data(), int64_t(x.size()), q.data(), d.data());
  for (size_t b = 0; b < d.size(); ++b) {
    float am = 0.0f;
    for (int i = 0; i < 32; ++i) am = std::max(am, std::fabs(x[b * 32 + size_t(i)]));
    EXPECT_EQ(d[b], am / 127.0f) << "block " << b;
    for (int i = 0; i < 32; ++i) {
      const size_t e = b * 32 + size_t(i);
      ASSERT_GE(q[e], -127);
      ASSERT_LE(q[e], 127);
      EXPECT_LE(std::fabs(x[e] - d[b] * float(q[e])), d[b] * 0.5f * (1 + 1e-5f) + 1e-30f) << "element " << e;
      if (std::fabs(x[e]) == am && am > 0) {
        EXPECT_EQ(std::abs(int(q[e])), 127) << "the block maximum maps to 127";
      }
    }
  }
  EXPECT_EQ(d[2], 0.0f);
  for (int i = 64; i < 96; ++i) EXPECT_EQ(q[size_t(i)], 0);
}

class QuantI8Gemv : public ::testing::TestWithParam<WFormat> {};

TEST_P(QuantI8Gemv, IntegerDotsAndTheActivationRoundingBound) {
  const int64_t n = 37, k = 160;  // odd n: the paired rows and the lone last row; 5 blocks
  QW q = make(GetParam(), n, k, 11);
  for (int64_t m : {1, 2, 3, 4, 5, 8, 9}) {
    const int64_t ldx = k + 32, ldy = n + 3;
    std::vector<float> x = activations(size_t(m * ldx), uint32_t(100 + m));
    std::vector<float> y(size_t(m * ldy), 0.5f), ye(size_t(m * ldy), 0.5f);
    linear_detail::gemv_forward_quant_i8(x.data(), m, q.w, y.data(), false, ldx, ldy);
    linear_detail::gemv_forward_quant(x.data(), m, q.w, ye.data(), false, ldx, ldy, /*isa=*/0);  // exact f32
    std::vector<int8_t> qx(static_cast<size_t>(k));
    std::vector<float> dx(static_cast<size_t>(k / 32));
    std::vector<int> wv;
    std::vector<float> ws;
    for (int64_t i = 0; i < m; ++i) {
      linear_detail::quantize_activations_i8(x.data() + i * ldx, k, qx.data(), dx.data());
      for (int64_t j = 0; j < n; ++j) {
        row_ints(q, j, wv, ws);
        double ref = 0.0, mag = 0.0, bound = 0.0;
        for (int64_t b = 0; b < k / 32; ++b) {
          long long isum = 0;
          double wabs = 0.0;
          for (int t = 0; t < 32; ++t) {
            isum += (long long)wv[size_t(b * 32 + t)] * qx[size_t(b * 32 + t)];
            wabs += std::fabs(q.deq[size_t(j * k + b * 32 + t)]);
          }
          const double s = double(ws[size_t(b)]) * double(dx[size_t(b)]);
          ref += s * double(isum);
          mag += std::fabs(s * double(isum));
          bound += 0.5 * double(dx[size_t(b)]) * wabs;
        }
        const float got = y[size_t(i * ldy + j)];
        // The integer dot products are exact; only the f32 accumulation of the block terms rounds.
        EXPECT_NEAR(got, ref, 1e-6 * mag + 1e-30) << "m=" << m << " row " << i << " col " << j;
        // Against exact f32 math on the dequantized weight: the activation rounding bound.
        const double fe = 1e-5 * (mag + bound);
        EXPECT_LE(std::fabs(double(got) - double(ye[size_t(i * ldy + j)])), bound + fe)
            << "m=" << m << " row " << i << " col " << j;
      }
      for (int64_t j = n; j < ldy; ++j) EXPECT_EQ(y[size_t(i * ldy + j)], 0.5f) << "outside the output";
    }
    // accumulate adds onto y
    std::vector<float> ya = y;
    linear_detail::gemv_forward_quant_i8(x.data(), m, q.w, ya.data(), true, ldx, ldy);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        EXPECT_FLOAT_EQ(ya[size_t(i * ldy + j)], 2.0f * y[size_t(i * ldy + j)]) << "accumulate m=" << m;
  }
}

TEST_P(QuantI8Gemv, LinearTakesItUnderPrecisionAutoOnly) {
  const int64_t n = 300, k = 1152;  // large enough for the threaded split
  QW q = make(GetParam(), n, k, 21);
  std::vector<float> x = activations(size_t(3 * k), 5);
  std::vector<float> yl(size_t(3 * n)), yi(size_t(3 * n)), ye(size_t(3 * n));
  const std::string before = gemm::selection().precision == gemm::Precision::F32 ? "f32" : "auto";
  linear_detail::gemv_forward_quant_i8(x.data(), 3, q.w, yi.data(), false, 0, 0);
  gemm::configure("", "auto");
  linear(x.data(), 3, q.w, yl.data());
  EXPECT_EQ(std::memcmp(yl.data(), yi.data(), yl.size() * 4), 0) << "auto: linear() is the int8 GEMV";
  gemm::configure("", "f32");
  linear(x.data(), 3, q.w, yl.data());
  linear_detail::gemv_forward_quant(x.data(), 3, q.w, ye.data(), false, 0, 0, /*isa=*/-1);
  EXPECT_EQ(std::memcmp(yl.data(), ye.data(), yl.size() * 4), 0) << "f32: linear() is the exact GEMV";
  EXPECT_NE(std::memcmp(yl.data(), yi.data(), yl.size() * 4), 0) << "the two paths differ (activation rounding)";
  gemm::configure("", before);
}

TEST(QuantI8, RefusesOtherFormatsAndRaggedK) {
  std::vector<float> w(64 * 2, 0.1f), x(64, 1.0f), y(2);
  Weight2D dense{"dense.w", DType::F32, w.data(), 2, 64, WFormat::Dense};
  try {
    linear_detail::gemv_forward_quant_i8(x.data(), 1, dense, y.data(), false, 0, 0);
    FAIL() << "a dense weight was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("dense.w"), std::string::npos) << e.what();
  }
  std::vector<int8_t> q(40);
  std::vector<float> d(2);
  EXPECT_THROW(linear_detail::quantize_activations_i8(x.data(), 40, q.data(), d.data()), std::exception);
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantI8Gemv, ::testing::Values(WFormat::Q8_0, WFormat::Q4_0),
                         [](const auto& info) { return std::string(wformat_name(info.param)); });

}  // namespace
}  // namespace gt
