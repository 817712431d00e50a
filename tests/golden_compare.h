// Comparison of computed golden tensors against a fixture's golden.safetensors, with the
// tolerances its golden.json recommends.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/kernels/gemm.h"
#include "gemmatune/tools/golden.h"
#include "gemmatune/util/fs.h"

namespace gt::test {

inline nlohmann::json golden_json(const std::string& dir) { return nlohmann::json::parse(read_file(dir + "/golden.json")); }

// Whether this process runs the fixture's GEMMs with bf16 inputs (BF16 weights and the avx512bf16
// kernel selected, e.g. GEMMATUNE_KERNELS=avx512bf16): then the f32 tolerances do not apply.
inline bool bf16_inputs(const nlohmann::json& gj) {
  return gj.at("model").value("weights_dtype", std::string("F32")) == "BF16" && gt::gemm::bf16_inputs_for(DType::BF16);
}

// Tolerances of the bf16-input path (docs/PERFORMANCE.md, "Precision"): G = 4L + 1 roundings of
// GEMM inputs lie on the path to the logits (per layer: attention input, o_proj input, MLP input,
// down_proj input; then the LM head), each a relative error of at most u = 2^-8, modelled as
// independent, zero mean, standard deviation u/sqrt(3). The logits then err by about
// sqrt(G)·u/sqrt(3)·|logit|max (one sigma); the bound is 4 sigma. The loss (mean of log-softmax
// terms) errs by at most twice the logits; gradients see the forward and the backward roundings
// (2G), relative to each tensor's absmax. One AdamW step from zero state moves each entry by at
// most lr, so a gradient sign change moves it by 2·lr: the AdamW end-to-end check takes the
// fixture's all-entries tolerance (2·lr). Products that involve no GEMM keep the f32 tolerance.
inline double bf16_extra_tolerance(const nlohmann::json& gj, const std::string& key) {
  const double u = 1.0 / 256.0;
  const double L = gj.at("dims").at("num_hidden_layers").get<double>();
  const double G = 4.0 * L + 1.0;
  const double logits = 4.0 * std::sqrt(G) * u / std::sqrt(3.0) * gj.at("logit_abs_max").get<double>();
  if (key == "logits_atol" || key == "decode_vs_full_atol") return logits;
  if (key == "loss_atol") return 2.0 * logits;
  if (key == "grads_rtol_vs_tensor_absmax") return 4.0 * std::sqrt(2.0 * G) * u / std::sqrt(3.0);
  return 0.0;
}

inline double tolerance(const nlohmann::json& gj, const char* key) {
  const auto& t = gj.at("tolerances_for_float32_implementation");
  if (bf16_inputs(gj)) {
    if (std::string(key) == "adamw_end_to_end_atol") return t.at("adamw_end_to_end_atol_all_entries").get<double>();
    return t.at(key).get<double>() + bf16_extra_tolerance(gj, key);
  }
  return t.at(key).get<double>();
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
