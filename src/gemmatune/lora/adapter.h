// A LoRA adapter: its config and one LoraModule per adapted module/parameter, in f32, in PEFT's
// tensor layouts (lora/layer.py: Linear, ParamWrapper). Read/written as a PEFT folder
// (adapter_config.json + adapter_model.safetensors, peft_io.cc), created for training with PEFT's
// target rules and initialisation (adapter.cc), merged into a base checkpoint by merge.h.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gemmatune/lora/targets.h"
#include "gemmatune/model/lora_views.h"

namespace gt {

class Model;

struct LoraModule {
  LoraKind kind = LoraKind::Linear;
  std::string target;        // HF path, e.g. "model.layers.0.self_attn.q_proj" or "model.language_model.layers.0.experts.gate_up_proj"
  std::string key_a, key_b;  // full PEFT state-dict keys, e.g. "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
  int64_t layer = -1;        // decoder layer index
  Proj proj = Proj::q_proj;
  int64_t r = 0, in = 0, out = 0, experts = 1;
  float scaling = 1;         // alpha/r, or alpha/sqrt(r) with rsLoRA (per-module r/alpha after patterns)
  std::vector<float> A;      // Linear: [r, in]; Experts: [E*r, in] rows expert-major (PEFT layout)
  std::vector<float> B;      // Linear: [out, r]; Experts: [out, r*E] columns rank-major (PEFT layout: B.reshape(out, r, E))

  std::vector<int64_t> shape_a() const { return {r * experts, in}; }
  std::vector<int64_t> shape_b() const { return {out, r * experts}; }
};

class Adapter {
 public:
  LoraConfig config;
  std::vector<LoraModule> modules;   // layer by layer, Proj order within a layer
  std::vector<std::string> warnings; // things load_peft/create skipped or could not check (the CLI prints them)

  const LoraModule* find(int64_t layer, Proj proj) const;  // nullptr if not adapted
  LoraModule* find(int64_t layer, Proj proj);
  int64_t num_parameters() const;

  // PEFT folder (adapter_config.json + adapter_model.safetensors) validated against the model: unknown keys,
  // wrong shapes, a key for a module the model lacks, a router target, unsupported options (use_dora,
  // fan_in_fan_out, lora_bias, modules_to_save, ...) -> gt::Error naming file and key. F32/BF16/F16 tensors.
  // Keys of a multimodal checkpoint's vision/audio towers are skipped (text-only engine), with a warning.
  static Adapter load_peft(const std::string& dir, const Model& m);
  // Writes adapter_config.json (PEFT field names, peft_type LORA, the fields PEFT 0.18 writes) and
  // adapter_model.safetensors (F32, PEFT key names), each atomically; creates `dir` if needed.
  void save_peft(const std::string& dir, const std::string& base_model_name_or_path) const;
  // New adapter for training: targets chosen by PEFT rules over the model's modules (null target_modules:
  // default_lora_config's), PEFT init (B zero; A kaiming-uniform a=sqrt(5) i.e. U(-1/sqrt(in), 1/sqrt(in)),
  // or N(0, 1/r) for "gaussian"), deterministic in `seed` (each module's stream depends on its path only).
  static Adapter create(const Model& m, const LoraConfig& cfg, uint64_t seed);
};

// Binds an adapter to a model for the decoder (model/lora_views.h): one view per adapted projection,
// pointing into the adapter's tensors (which must outlive the views), with `scale` (the run-time
// adapter scale, e.g. generate --adapter-scale) folded into each module's scaling.
LoraViews bind_adapter(const Adapter& a, const Model& m, float scale = 1.0f);

// PEFT adapter_config.json <-> LoraConfig. `origin` names the file in errors.
LoraConfig lora_config_from_peft_json(const nlohmann::json& j, const std::string& origin,
                                      std::vector<std::string>* warnings = nullptr);
nlohmann::json lora_config_to_peft_json(const LoraConfig& c, const std::string& base_model_name_or_path);

}  // namespace gt
