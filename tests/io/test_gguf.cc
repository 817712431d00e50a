// The GGUF container reader against a file written by the gguf Python package
// (scripts/gen_quant_vectors.py), and against every truncation and a set of lying headers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gemmatune/io/gguf.h"
#include "gemmatune/quant/blocks.h"
#include "gemmatune/tensor/dtype.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

namespace gt {
namespace {

const std::string kSmall = test::data("quant/small.gguf");

std::vector<float> expected_x() {  // what the generator stored: arange(192)/50 - 1.5, shape [3, 64]
  std::vector<float> x(192);
  for (int i = 0; i < 192; ++i) x[size_t(i)] = float(i) / 50.0f - 1.5f;
  return x;
}

TEST(Gguf, ReadsMetadataOfEveryType) {
  GgufFile f(kSmall);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "gemma3");
  EXPECT_EQ(f.get_int("t.u8"), 200);
  EXPECT_EQ(f.get_int("t.i8"), -100);
  EXPECT_EQ(f.get_int("t.u16"), 60000);
  EXPECT_EQ(f.get_int("t.i16"), -30000);
  EXPECT_EQ(f.get_int("t.u32"), 4000000000LL);
  EXPECT_EQ(f.get_int("t.i32"), -2000000000LL);
  EXPECT_EQ(f.get_float("t.f32"), 0.125);
  EXPECT_EQ(f.get_int("t.i64"), -(1LL << 62));
  EXPECT_EQ(f.get_float("t.f64"), 1e-300);
  EXPECT_TRUE(f.get_bool("t.bool"));
  EXPECT_EQ(f.get_string("t.str"), "h\u00e9llo");
  EXPECT_EQ(f.get_int("gemma3.context_length"), 32768);
  const GgufArray& a = f.get_array("t.arr_str");
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(std::get<std::string>(a[2].v), "<start_of_turn>");
  const GgufArray& b = f.get_array("t.arr_i32");
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(std::get<int64_t>(b[1].v), -2);
  // Wrong type, absent key, out of range: errors that name the file and key.
  auto expect_error = [&](auto fn, const char* key) {
    try {
      fn();
      FAIL() << key << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("small.gguf"), std::string::npos) << e.what();
    }
  };
  expect_error([&] { f.get_string("t.u8"); }, "t.u8");
  expect_error([&] { f.get_int("nope"); }, "nope");
  expect_error([&] { f.get_int("t.u64"); }, "t.u64");  // 2^63 + 5 does not fit
}

TEST(Gguf, TensorsHaveTheirShapesAndData) {
  GgufFile f(kSmall);
  ASSERT_EQ(f.tensors().size(), 5u);
  const std::vector<float> x = expected_x();
  const GgufTensor* t = f.find("f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dims, (std::vector<int64_t>{64, 3}));
  EXPECT_EQ(t->shape(), (std::vector<int64_t>{3, 64}));
  ASSERT_EQ(t->nbytes, 192u * 4);
  EXPECT_EQ(std::memcmp(t->data, x.data(), 192 * 4), 0);
  t = f.find("f16");
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->type, GgmlType::F16);
  for (int i = 0; i < 192; ++i) {
    uint16_t h;
    std::memcpy(&h, t->data + 2 * i, 2);
    EXPECT_EQ(h, f32_to_f16(x[size_t(i)])) << i;
  }
  // Quantized tensors: the bytes are what our quantizer makes of the same values.
  for (auto [name, type] : {std::pair{"q8_0", quant::BlockType::Q8_0}, std::pair{"q4_0", quant::BlockType::Q4_0}}) {
    t = f.find(name);
    ASSERT_NE(t, nullptr) << name;
    std::vector<uint8_t> q(size_t(quant::quantized_bytes(type, 192)));
    ASSERT_EQ(t->nbytes, q.size()) << name;
    (type == quant::BlockType::Q8_0 ? quant::quantize_q8_0 : quant::quantize_q4_0)(x.data(), 192, q.data());
    EXPECT_EQ(std::memcmp(t->data, q.data(), q.size()), 0) << name;
  }
  EXPECT_EQ(f.find("vec")->dims, (std::vector<int64_t>{4}));
  EXPECT_EQ(f.find("missing"), nullptr);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream o(path, std::ios::binary);
  o.write(bytes.data(), std::streamsize(bytes.size()));
}

// Opening must end in the file or a gt::Error naming the file: never a crash or another exception.
void expect_refused(const std::string& bytes, const std::string& what, const char* needle = nullptr) {
  const std::string p = test::scratch("bad.gguf");
  write_bytes(p, bytes);
  try {
    GgufFile f(p);
    FAIL() << what << ": accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.gguf"), std::string::npos) << what << ": " << e.what();
    if (needle) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": " << e.what();
    }
  }
}

TEST(Gguf, EveryTruncationIsAClearError) {
  const std::string good = read_file(kSmall);
  uint64_t end = 0;  // where the last tensor's data ends (the writer may pad the file beyond)
  const GgufFile parsed(kSmall);
  for (const auto& t : parsed.tensors()) end = std::max(end, t.offset + t.nbytes);
  ASSERT_GT(end, 2000u);
  // Every prefix shorter than that is missing something.
  for (size_t n = 0; n < end; ++n) {
    expect_refused(good.substr(0, n), "truncated to " + std::to_string(n));
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(Gguf, LyingHeadersAreClearErrors) {
  const std::string good = read_file(kSmall);
  auto patched = [&](size_t off, uint64_t v, size_t width) {
    std::string s = good;
    std::memcpy(&s[off], &v, width);
    return s;
  };
  expect_refused("GGML" + good.substr(4), "wrong magic", "not a GGUF file");
  expect_refused(patched(4, 7, 4), "version 7", "version 7");
  expect_refused(patched(8, uint64_t(1) << 40, 8), "2^40 tensors", "tensors");
  expect_refused(patched(16, uint64_t(1) << 40, 8), "2^40 metadata entries", "metadata");
  expect_refused(patched(16, 1000, 8), "more metadata than present");
  // The first key's length (offset 24): far past the end of the file.
  expect_refused(patched(24, uint64_t(1) << 35, 8), "huge key length");
  expect_refused(patched(24, 1u << 20, 8), "key length past the end", "truncated");
  // The first value's type (after the key "general.architecture": 24 + 8 + 20).
  expect_refused(patched(52, 99, 4), "value type 99", "unknown value type 99");
  // A tensor's dims, type and offset: find the tensor info of "vec" (the last one) and break it.
  const size_t vec = good.find("vec", 600);
  ASSERT_NE(vec, std::string::npos);
  const size_t nd = vec + 3, dim0 = nd + 4, type = dim0 + 8, off = type + 4;
  expect_refused(patched(nd, 9, 4), "9 dimensions", "dimensions");
  expect_refused(patched(dim0, 0, 8), "a zero dimension", "dimension");
  expect_refused(patched(dim0, uint64_t(1) << 62, 8), "a huge dimension", "dimension");
  expect_refused(patched(type, 77, 4), "ggml type 77", "ggml type 77");
  expect_refused(patched(type, 2, 4), "4 values as q4_0", "blocks of 32");
  expect_refused(patched(off, 3, 8), "misaligned offset", "alignment");
  expect_refused(patched(off, 1u << 20, 8), "offset past the end", "past the end");
  expect_refused(patched(off, 0, 8), "same offset as another tensor", "same offset");
  expect_refused(patched(off, 32, 8), "overlapping tensors", "overlap");
}

}  // namespace
}  // namespace gt
