// ggml block formats: quantization and dequantization bit-exact against vectors made with the `gguf`
// Python package (scripts/gen_quant_vectors.py), round trips stable, bad sizes refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/quant/blocks.h"
#include "gemmatune/util/error.h"
#include "test_util.h"

namespace gt {
namespace {

using quant::BlockType;

struct Vectors {
  SafetensorsFile f{test::data("quant/ggml_vectors.safetensors")};
  std::vector<float> floats(const std::string& name) const {
    const TensorView& t = f.tensors().at(name);
    EXPECT_EQ(t.dtype, DType::F32) << name;
    std::vector<float> v(size_t(t.numel()));
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
  }
  std::vector<uint8_t> bytes(const std::string& name) const {
    const TensorView& t = f.tensors().at(name);
    EXPECT_EQ(t.dtype, DType::U8) << name;
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    return std::vector<uint8_t>(p, p + t.nbytes);
  }
};

// Bitwise float equality (so -0 != +0 and the test sees a sign slip).
void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(std::memcmp(&a[i], &b[i], 4), 0) << what << " at " << i << ": " << a[i] << " vs " << b[i];
}

void check_format(BlockType t, const char* name, void (*quantize)(const float*, int64_t, uint8_t*)) {
  Vectors v;
  const std::vector<float> x = v.floats("x");
  const std::vector<uint8_t> want_q = v.bytes(std::string(name) + ".q");
  const std::vector<float> want_y = v.floats(std::string(name) + ".y");
  const int64_t n = int64_t(x.size());
  ASSERT_EQ(quant::quantized_bytes(t, n), int64_t(want_q.size()));
  std::vector<uint8_t> q(want_q.size());
  quantize(x.data(), n, q.data());
  for (size_t i = 0; i < q.size(); ++i)
    ASSERT_EQ(int(q[i]), int(want_q[i])) << name << ": byte " << i << " (block " << i / size_t(quant::block_info(t).block_bytes) << ")";
  std::vector<float> y(x.size());
  quant::dequantize(t, q.data(), n, y.data());
  expect_same_bits(y, want_y, name);
  // Stable round trip: quantizing the dequantized values gives back the same values (a zero may
  // change sign: a block whose f16 scale underflowed keeps negative codes the first time).
  std::vector<uint8_t> q2(q.size());
  quantize(y.data(), n, q2.data());
  std::vector<float> y2(x.size());
  quant::dequantize(t, q2.data(), n, y2.data());
  for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y2[i], y[i]) << name << " round trip at " << i;
  // Error bound: |x - y| <= d/2 (Q8_0) or d (Q4_0, whose grid is asymmetric) per block of 32.
  const auto& info = quant::block_info(t);
  for (int64_t b = 0; b < n / 32; ++b) {
    uint16_t h;
    std::memcpy(&h, &q[size_t(b * info.block_bytes)], 2);
    const float d = std::fabs(f16_to_f32(h));
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[size_t(b * 32 + i)]));
    if (d < 6.103515625e-05f) continue;  // an f16-subnormal scale carries few bits: no per-block bound
    for (int i = 0; i < 32; ++i) {
      const size_t k = size_t(b * 32 + i);
      EXPECT_LE(std::fabs(x[k] - y[k]), (t == BlockType::Q8_0 ? 0.5f : 1.0f) * d + 1e-3f * amax) << name << " block " << b;
    }
  }
}

TEST(QuantBlocks, Q8_0MatchesGgmlBitForBit) { check_format(BlockType::Q8_0, "q8_0", quant::quantize_q8_0); }
TEST(QuantBlocks, Q4_0MatchesGgmlBitForBit) { check_format(BlockType::Q4_0, "q4_0", quant::quantize_q4_0); }

TEST(QuantBlocks, Q4KDequantizesAsGgml) {
  Vectors v;
  const std::vector<uint8_t> q = v.bytes("q4_k.q");
  const std::vector<float> want = v.floats("q4_k.y");
  ASSERT_EQ(quant::quantized_bytes(BlockType::Q4_K, int64_t(want.size())), int64_t(q.size()));
  std::vector<float> y(want.size());
  quant::dequantize_q4_k(q.data(), int64_t(y.size()), y.data());
  expect_same_bits(y, want, "q4_k");
}

TEST(QuantBlocks, SizesAndNames) {
  EXPECT_EQ(quant::quantized_bytes(BlockType::Q8_0, 64), 68);
  EXPECT_EQ(quant::quantized_bytes(BlockType::Q4_0, 64), 36);
  EXPECT_EQ(quant::quantized_bytes(BlockType::Q4_K, 512), 288);
  EXPECT_EQ(quant::block_type_from_name("Q4_0"), BlockType::Q4_0);
  try {
    quant::quantized_bytes(BlockType::Q4_0, 33, "model.layers.0.mlp.up_proj.weight");
    FAIL() << "33 values accepted as q4_0 blocks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << e.what();
  }
  try {
    quant::block_type_from_name("q3_k");
    FAIL() << "q3_k accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q8_0, q4_0 or q4_k"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gt
