// Comparison of computed golden tensors against a fixture's golden.safetensors, with the
// tolerances its golden.json recommends.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/tools/golden.h"
#include "gemmatune/util/fs.h"

namespace gt::test {

inline nlohmann::json golden_json(const std::string& dir) { return nlohmann::json::parse(read_file(dir + "/golden.json")); }

inline double tolerance(const nlohmann::json& gj, const char* key) {
  return gj.at("tolerances_for_float32_implementation").at(key).get<double>();
}

// max |got - want| over a float tensor; also checks the shape.
inline double max_abs_diff(const TensorStore& gs, const std::string& name, const GoldenResult::Tensor& got) {
  const TensorView& want = gs.get(name);
  EXPECT_EQ(want.shape, got.shape) << name;
  if (want.shape != got.shape) return INFINITY;
  std::vector<float> w = want.to_floats();
  double m = 0;
  for (size_t i = 0; i < w.size(); ++i) m = std::max(m, std::fabs(double(w[i]) - double(got.f32[i])));
  return m;
}

inline void expect_ids_equal(const TensorStore& gs, const std::string& name, const GoldenResult::Tensor& got) {
  const TensorView& want = gs.get(name);
  ASSERT_EQ(want.shape, got.shape) << name;
  std::vector<int32_t> w(size_t(want.numel()));
  std::memcpy(w.data(), want.data, w.size() * 4);
  EXPECT_EQ(w, got.i32) << name;
}

}  // namespace gt::test
