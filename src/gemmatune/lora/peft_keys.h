// PEFT state-dict key names (utils/save_and_load.py: the adapter name ".default" removed), shared by
// Adapter::create and the PEFT reader/writer.
#pragma once
#include <string>
#include <vector>

#include "gemmatune/lora/adapter.h"

namespace gt::lora_detail {

inline constexpr const char* kPeftKeyPrefix = "base_model.model.";

// "base_model.model.<module>.lora_A.weight"
std::string peft_linear_key(const std::string& module_path, char ab);
// Nested ParamWrappers: "base_model.model.<...>.experts" + ".base_layer" x depth + ".lora_A.weight"
// (depth 0 = the outermost wrapper = the parameter wrapped last).
std::string peft_experts_key(const std::string& experts_module_path, int depth, char ab);
// Layer by layer, lora_proj_names() order within a layer.
void sort_modules(std::vector<LoraModule>& mods);

}  // namespace gt::lora_detail
