#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/util/error.h"
#include "test_util.h"

using namespace gt;

namespace {

std::string tmp_path(const std::string& name) {
  return test::scratch(name);
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

std::string with_header(const std::string& header, size_t data_bytes) {
  uint64_t n = header.size();
  std::string s(reinterpret_cast<const char*>(&n), 8);
  return s + header + std::string(data_bytes, '\0');
}

void expect_error(const std::string& path, const std::string& needle) {
  try {
    SafetensorsFile f(path);
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "error must name the file: " << e.what();
  }
}

}  // namespace

TEST(Safetensors, RoundTripWriteRead) {
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 7.0f, 8.0f};
  std::vector<int32_t> b = {4, 5, 6};
  std::string p = tmp_path("rt.safetensors");
  write_safetensors(p, {tensor_out_f32("a", {2, 3}, a), tensor_out_i32("b", {3}, b)});
  SafetensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 2u);
  const TensorView& va = f.tensors().at("a");
  EXPECT_EQ(va.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(va.to_floats(), a);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const TensorView& vb = f.tensors().at("b");
  EXPECT_EQ(std::memcmp(vb.data, b.data(), 12), 0);
}

TEST(Safetensors, ReadsFixtureModel) {
  TensorStore s = TensorStore::open_folder(test::fixture("gemma3_causal/model"));
  const TensorView& e = s.get("model.embed_tokens.weight");
  EXPECT_EQ(e.shape, (std::vector<int64_t>{384, 64}));
  EXPECT_EQ(e.dtype, DType::F32);
  TensorStore b = TensorStore::open_folder(test::fixture("gemma3_causal_bf16/model"));
  EXPECT_EQ(b.get("model.embed_tokens.weight").dtype, DType::BF16);
}

TEST(Safetensors, TruncatedFileIsRejected) {
  std::string src = read_file(test::fixture("gemma3_causal/model/model.safetensors"));
  std::string p = tmp_path("trunc.safetensors");
  write_raw(p, src.substr(0, src.size() - 1000));
  expect_error(p, "exceed");
  write_raw(p, src.substr(0, 5));
  expect_error(p, "not a safetensors file");
}

TEST(Safetensors, CorruptHeaderIsRejected) {
  std::string p = tmp_path("corrupt.safetensors");
  write_raw(p, with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]", 8));
  expect_error(p, "not valid JSON");
  write_raw(p, with_header("{\"a\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8));
  expect_error(p, "unsupported dtype Q4");
  write_raw(p, with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8));
  expect_error(p, "needs 12 bytes");
  std::string huge(8, '\xff');
  write_raw(p, huge + "{}");
  expect_error(p, "header length");
}

TEST(Safetensors, ShardedFolder) {
  std::string dir = tmp_path("sharded");
  std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str());
  std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_safetensors(dir + "/model-00001-of-00002.safetensors", {tensor_out_f32("x.a", {2}, a)});
  write_safetensors(dir + "/model-00002-of-00002.safetensors", {tensor_out_f32("x.b", {3}, b)});
  write_raw(dir + "/model.safetensors.index.json",
            R"({"metadata": {}, "weight_map": {"x.a": "model-00001-of-00002.safetensors", "x.b": "model-00002-of-00002.safetensors"}})");
  TensorStore s = TensorStore::open_folder(dir);
  EXPECT_EQ(s.get("x.a").to_floats(), a);
  EXPECT_EQ(s.get("x.b").to_floats(), b);
  write_raw(dir + "/model.safetensors.index.json",
            R"({"weight_map": {"x.a": "model-00001-of-00002.safetensors", "x.c": "model-00003-of-00002.safetensors"}})");
  try {
    TensorStore::open_folder(dir);
    FAIL() << "missing shard accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00003-of-00002.safetensors"), std::string::npos) << e.what();
  }
}
