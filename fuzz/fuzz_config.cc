// libFuzzer target: a model folder's config.json and generation_config.json. The input is
// config.json, optionally followed by gt_fuzz::kFileSeparator and generation_config.json. Both
// are written into a folder and read by load_config() (the code every command runs first); an
// accepted config then goes through build_layer_specs() (per-layer shapes, RoPE tables) and the
// per-layer accessors the model code uses. gt::Error is the expected way to fail; anything else
// -- a crash, a sanitizer report, another exception (e.g. nlohmann::json's), a hang, runaway
// memory -- is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_files.h"
#include "gemmatune/model/config.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = gt_fuzz::split_files(data, size, 2);
  const std::string dir = gt_fuzz::fresh_dir("model");
  gt_fuzz::write_bytes(dir + "/config.json", parts[0]);
  if (parts.size() > 1) gt_fuzz::write_bytes(dir + "/generation_config.json", parts[1]);
  try {
    const gt::ModelConfig c = gt::load_config(dir);
    const auto specs = gt::build_layer_specs(c);
    int64_t sum = 0;
    for (int64_t i = 0; i < c.num_layers; ++i)
      sum += c.layer_head_dim(i) + c.layer_kv_heads(i) + c.layer_intermediate(i) + c.layer_kv_donor(i) +
             int64_t(c.layer_k_eq_v(i)) + int64_t(specs[size_t(i)].inv_freq.size());
    volatile int64_t sink = sum;
    (void)sink;
  } catch (const gt::Error&) {
  }
  return 0;
}
