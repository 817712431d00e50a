// A loaded model: config, per-layer specs (data that drive the one decoder loop) and the frozen
// weights as views into the memory-mapped checkpoint.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/kernels/linear.h"
#include "gemmatune/model/config.h"

namespace gt {

// Everything the decoder loop needs to know about one layer; built once from the config.
struct LayerSpec {
  int64_t index = 0;
  AttnType type = AttnType::Sliding;
  int64_t window = 0;  // 0 = full attention
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
  float attn_scale = 1.0f;
  bool k_eq_v = false;       // V from the raw k_proj output (Gemma 4 full layers)
  bool v_norm = false;       // scaleless RMSNorm on V (Gemma 4)
  int64_t kv_donor = -1;     // >= 0: reuse that layer's K/V (Gemma 4 KV sharing); no own cache
  bool kv_publish = false;   // this layer's K/V are read by shared layers
  int64_t intermediate = 0;  // dense MLP width
  bool moe = false;
  bool ple = false;
  bool layer_scalar = false;
  // RoPE: inv_freq[head_dim/2], fp32 as transformers computes it.
  std::vector<float> inv_freq;
};

struct ExpertWeights {
  Weight2D gate_up;  // [2*I, H] (gate rows first)
  Weight2D down;     // [H, I]
};

struct LayerWeights {
  Weight2D q, k, v, o, gate, up, down;
  // Effective RMSNorm gains in f32: (1 + w) for Gemma 3, w for Gemma 4.
  std::vector<float> input_norm, post_attn_norm, pre_ff_norm, post_ff_norm, q_norm, k_norm;
  float layer_scalar = 1.0f;
  // MoE (Gemma 4 26B-A4B style)
  Weight2D router;  // [E, H]
  std::vector<float> router_scale, per_expert_scale;
  std::vector<ExpertWeights> experts;
  std::vector<float> pre_ff_norm_2, post_ff_norm_1, post_ff_norm_2;
  // Per-layer embeddings (Gemma 4 E2B/E4B)
  Weight2D ple_gate;  // [P, H]
  Weight2D ple_proj;  // [H, P]
  std::vector<float> post_ple_norm;
};

struct ModelWeights {
  Weight2D embed;    // [V, H], also the tied LM head
  Weight2D lm_head;  // == embed unless an untied head is stored
  float embed_scale = 1.0f;
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;
  // PLE
  Weight2D ple_embed;       // [V_ple, L*P] (stays mapped; rows are read on lookup)
  Weight2D ple_model_proj;  // [L*P, H]
  std::vector<float> ple_proj_norm;  // [P]
  float ple_embed_scale = 1.0f;
};

struct LoadOptions {
  // "" (as stored) | "q8_0" | "q4_0" | "q4_k": quantize the dense weights the policy selects
  // (quant::quantize_policy) while loading, as bitsandbytes' load_in_4bit does (q4_k: a weight
  // whose rows are not whole super-blocks of 256 gets q4_0, quant::block_type_for). The quantized
  // copies are owned by the Model; the mapped dense pages are released.
  std::string quantize;
};

class Model {
 public:
  // Loads config.json (+ generation_config.json) and the safetensors of a model folder. A folder
  // written by `gemmatune quantize` (config.json "quantization_config") holds U8 block tensors.
  // `dir` may also be a GGUF file (model/gguf_model.h): its metadata, tensors (under their Hugging
  // Face names; Q8_0/Q4_0 blocks in place) and norms are mapped to the same Model.
  static Model load(const std::string& dir, const LoadOptions& opt);
  // The same with the process-wide options (set_default_load_options; the global --quantize).
  static Model load(const std::string& dir);

  const ModelConfig& config() const { return cfg_; }
  const std::vector<LayerSpec>& specs() const { return specs_; }
  const ModelWeights& weights() const { return w_; }
  const std::string& dir() const { return dir_; }
  const std::string& key_prefix() const { return prefix_; }
  int64_t vocab_rows() const { return w_.lm_head.n; }
  // Bytes of frozen weights read to decode one token (all projections + LM head + the embedding row).
  size_t decode_bytes_per_token() const;
  size_t weight_bytes() const;
  // "" when every weight is dense, else the block format(s) of the quantized weights ("q4_0",
  // "q4_k,q4_0").
  std::string quantization() const;

 private:
  std::string dir_, prefix_;
  ModelConfig cfg_;
  TensorStore store_;
  ModelWeights w_;
  std::vector<LayerSpec> specs_;
  // Weights quantized at load time (shared: copies of a Model point at the same blocks).
  std::vector<std::shared_ptr<std::vector<uint8_t>>> owned_;
  size_t replaced_bytes_ = 0;  // stored bytes of the tensors replaced by owned_ copies
};

std::vector<LayerSpec> build_layer_specs(const ModelConfig& c);

// Process-wide load options used by Model::load(dir): set once by the CLI's global --quantize
// (cli/commands.cc) so that generate, chat, bench, plan, train and serve all honour it.
void set_default_load_options(const LoadOptions& o);
const LoadOptions& default_load_options();
// The block format a weight whose rows have k values gets when `want` is asked for (--quantize,
// `gemmatune quantize`, plan): `want`, except Q4_K -> Q4_0 when k % 256 != 0
// (quant::block_type_for). Dense stays dense.
WFormat quantized_format(WFormat want, int64_t k);

}  // namespace gt
