// Model configuration read from a Hugging Face config.json (every style the Hub has), with the
// transformers class defaults for absent fields, plus generation_config.json's eos ids.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gt {

enum class Family { Gemma3, Gemma4 };
enum class AttnType { Sliding, Full };

struct RopeParams {
  std::string type = "default";  // default | linear | proportional
  double theta = 10000.0;
  double factor = 1.0;
  double partial_rotary_factor = 1.0;
};

struct ModelConfig {
  std::string origin;        // file the config came from (for messages)
  std::string architecture;  // e.g. Gemma3ForCausalLM
  Family family = Family::Gemma3;
  bool causal_lm = true;     // *ForCausalLM (vs *ForConditionalGeneration)

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  double query_pre_attn_scalar = 256;  // Gemma 3 only
  int64_t sliding_window = 0;
  std::vector<AttnType> layer_types;
  RopeParams rope_sliding, rope_full;
  std::optional<double> final_logit_softcapping;
  bool tie_word_embeddings = true;
  std::string hidden_activation = "gelu_pytorch_tanh";
  std::string torch_dtype;  // as declared ("float32", "bfloat16", ...), informational

  // Gemma 4
  int64_t global_head_dim = 0;
  int64_t num_global_kv_heads = 0;  // 0 = not set
  bool attention_k_eq_v = false;
  int64_t hidden_size_per_layer_input = 0;
  int64_t vocab_size_per_layer_input = 0;
  int64_t num_kv_shared_layers = 0;
  bool use_double_wide_mlp = false;
  bool enable_moe_block = false;
  int64_t num_experts = 0;
  int64_t top_k_experts = 0;
  int64_t moe_intermediate_size = 0;
  // per_layer_config overrides (newest serialisation): layer -> head_dim / kv heads; -1 = none
  std::vector<int64_t> layer_head_dim_override, layer_kv_heads_override;

  int32_t bos_id = 2, pad_id = 0;
  std::vector<int32_t> eos_ids;

  int64_t layer_head_dim(int64_t i) const;
  int64_t layer_kv_heads(int64_t i) const;
  bool layer_k_eq_v(int64_t i) const;
  bool layer_kv_shared(int64_t i) const;  // Gemma 4 KV sharing
  int64_t layer_kv_donor(int64_t i) const;  // -1 if the layer computes its own K/V
  int64_t layer_intermediate(int64_t i) const;
};

// Parses config.json text (nested text_config honoured). `origin` names the file in errors.
ModelConfig parse_config(const nlohmann::json& j, const std::string& origin);
// Reads <dir>/config.json and, when present, <dir>/generation_config.json (eos ids).
ModelConfig load_config(const std::string& model_dir);

const char* attn_type_name(AttnType t);

}  // namespace gt
