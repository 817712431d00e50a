// Computes the golden tensors of a fixture (../shared/fixtures/README.md) with the same code paths
// the real commands use, under the names the fixture's golden.safetensors uses.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gt {

struct GoldenResult {
  struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> f32;
    std::vector<int32_t> i32;  // used when is_int
    bool is_int = false;
  };
  std::map<std::string, Tensor> tensors;
};

struct GoldenOptions {
  std::string adapter_dir;     // the adapter of the lora/train/merge parts (empty: the fixture's <dir>/adapter)
  double adapter_scale = 1.0;  // multiplier of the adapter's contribution (as generate/chat --adapter-scale)
};

// parts: any of forward, decode, greedy, lora, train, merge.
GoldenResult compute_golden(const std::string& fixture_dir, const std::vector<std::string>& parts,
                            const GoldenOptions& opt = {});
void write_golden(const std::string& path, const GoldenResult& r);

struct AdamWConfig;
// The optimizer settings of a fixture's golden.json "train" section (betas, eps, weight_decay).
AdamWConfig golden_adamw_config(const nlohmann::json& golden_json);

}  // namespace gt
