// Merging a LoRA adapter into the base weights (PEFT merge semantics: W + scale * delta, with
// Linear delta = (B @ A) * scaling and ParamWrapper delta[e] = B.reshape(out, r, E)[:, :, e] @
// A.reshape(E, r, in)[e] * scaling), and the `gemmatune merge` core that writes a merged HF folder.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gemmatune/lora/adapter.h"

namespace gt {

class Model;

// scale * delta in the weight's layout: Linear [out, in]; Experts [E, out, in]. Accumulated in double.
std::vector<float> lora_delta(const LoraModule& mod, double scale = 1.0);
// The base weight of the module (upcast to f32) plus scale * delta, in the weight's layout; W + delta is
// formed in double and rounded once.
std::vector<float> merged_weight(const Model& m, const LoraModule& mod, double scale = 1.0);

struct MergeSummary {
  int64_t modules = 0;         // adapted modules merged
  int64_t tensors_merged = 0;  // checkpoint tensors rewritten
  int64_t tensors_copied = 0;  // checkpoint tensors copied byte for byte
  int64_t files_copied = 0;    // config / tokenizer / template / generation files copied
  uint64_t bytes = 0;          // safetensors bytes written
};

// Writes `out_dir`: the model's safetensors files (same file names, key names, dtypes, shapes and metadata;
// adapted tensors W + scale*delta rounded once to the stored dtype, every other tensor copied byte for byte,
// tensor by tensor, never the whole model in memory), plus the folder's other files (config.json,
// generation_config.json, tokenizer files, chat template, index, ...) copied; other weight files
// (*.bin, *.pt, *.gguf, stray *.safetensors) are not. The folder is built under a temporary name and renamed
// into place. Refuses the model folder itself, and an existing non-empty `out_dir` unless `overwrite`.
MergeSummary merge_adapter(const Model& m, const Adapter& a, const std::string& out_dir, double scale = 1.0,
                           bool overwrite = false,
                           const std::function<void(const std::string&)>& progress = nullptr);

}  // namespace gt
