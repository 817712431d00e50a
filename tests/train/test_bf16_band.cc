// The bf16-input GEMM path end to end (docs/PERFORMANCE.md, "Precision contract"): 200 training
// steps of a tiny random Gemma 3 with BF16 weights, once with the avx512bf16 kernel (activations
// rounded to bf16 at every GEMM input) and once in exact f32 mode, from the same seed and data.
// Rounding changes every step a little and training amplifies it, so the two curves are not
// equal; the stated band, per block of 20 steps (mean loss), is
//   |mean_bf16 − mean_f32| ≤ 0.01 + 0.05·mean_f32,
// the first block within 1% (before training has amplified anything), and both runs trained
// (last-block mean below 0.1). Measured on a Zen 4 (docs/PERFORMANCE.md): first block 4.6138 vs
// 4.6160 (0.05%), every later block within 2e-5. Runs only where the CPU has AVX512_BF16 (skipped, not passed,
// elsewhere: ctest reports it as skipped).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gemmatune/kernels/gemm.h"
#include "gemmatune/train/trainer.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"
#include "train_util.h"

using namespace gt;

namespace {

std::vector<double> losses(const std::string& run) {
  std::vector<double> out;
  std::istringstream in(read_file(run + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("step") && j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

}  // namespace

TEST(Bf16Band, TwoHundredStepLossCurveStaysNearTheF32Run) {
  if (!gemm::isa_supported(gemm::Isa::Avx512Bf16)) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  InitOptions io;
  io.preset = "tiny";
  io.out_dir = test::scratch("bf16band_model");
  io.seed = 5;
  io.dtype = "bf16";
  io.tokenizer = test::unpacked("assets/gemma3_tokenizer.json");
  io.chat_template = test::data("assets/gemma3_chat_template.jinja");
  init_model(io);
  TrainOptions o;
  o.data = {test::write_chat_data(test::scratch("bf16band_data.jsonl"))};
  o.max_len = 48;
  o.batch_rows = 1;
  o.lora_r = 4;
  o.lora_alpha = 8;
  o.lr = 5e-3;
  o.warmup_steps = 0;
  o.schedule = LrSchedule::Constant;
  o.steps = 200;
  o.log_every = 1;
  o.save_every = 1000;
  o.seed = 11;

  gemm::configure("avx512bf16", "auto");
  ASSERT_TRUE(gemm::bf16_inputs_for(DType::BF16));
  train(io.out_dir, test::scratch("bf16band_bf16"), o);
  gemm::configure("avx512", "f32");
  ASSERT_FALSE(gemm::bf16_inputs_for(DType::BF16));
  train(io.out_dir, test::scratch("bf16band_f32"), o);
  gemm::configure("", "f32");

  const auto a = losses(test::scratch("bf16band_bf16")), b = losses(test::scratch("bf16band_f32"));
  ASSERT_EQ(a.size(), 200u);
  ASSERT_EQ(b.size(), 200u);
  EXPECT_NE(a, b) << "the bf16-input kernel was not used";
  constexpr size_t kBlock = 20;
  for (size_t s = 0; s < a.size(); s += kBlock) {
    double ma = 0, mb = 0;
    for (size_t i = s; i < s + kBlock; ++i) {
      ma += a[i] / kBlock;
      mb += b[i] / kBlock;
    }
    std::printf("steps %3zu-%3zu: mean loss bf16 %.5f, f32 %.5f\n", s + 1, s + kBlock, ma, mb);
    SCOPED_TRACE("steps " + std::to_string(s + 1) + "-" + std::to_string(s + kBlock));
    if (s == 0) {
      EXPECT_LE(std::fabs(ma - mb), 0.01 * mb) << ma << " vs " << mb;
    }
    EXPECT_LE(std::fabs(ma - mb), 0.01 + 0.05 * mb) << ma << " vs " << mb;
    if (s + kBlock == a.size()) {
      EXPECT_LT(ma, 0.1);
      EXPECT_LT(mb, 0.1);
    }
  }
}
