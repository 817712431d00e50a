// Published model sizes as config.json documents, for `gemmatune init-model` (random weights at
// real shapes: benchmarks and the demo run without downloading anything).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gt {

// Names (preset_names()): tiny, gemma3-270m, gemma3-1b, gemma3-4b, gemma4-tiny, gemma4-tiny-moe, gemma4-e2b, gemma4-e4b,
// gemma4-26b-a4b, gemma4-31b. layers > 0 overrides num_hidden_layers (and keeps the layer
// pattern and KV-sharing proportions). vocab > 0 overrides the vocabulary size.
nlohmann::json preset_config(const std::string& name, int64_t layers = 0, int64_t vocab = 0);
std::vector<std::string> preset_names();

struct InitOptions {
  std::string preset;
  std::string out_dir;
  uint64_t seed = 0;
  std::string dtype = "bf16";  // bf16 | f32
  std::string tokenizer;       // tokenizer.json to copy into the folder (optional)
  std::string chat_template;   // chat template file to copy as chat_template.jinja (optional)
  int64_t layers = 0;
  int64_t vocab = 0;
};

// Writes config.json, generation_config.json and model.safetensors (random weights) into
// out_dir, streaming tensor by tensor. Returns the number of parameters written.
int64_t init_model(const InitOptions& o);

}  // namespace gt
