// LoRA target selection: which modules/parameters of a model a LoRA config adapts, with PEFT's
// matching rules (tuners_utils.py: check_target_module_exists, _inject_parameters; other.py:
// get_pattern_key), plus MaxText-style names (docs: maxtext_sft_lora.md section 7).
//
// Paths are Hugging Face module paths as transformers names them (the module tree, which is what
// PEFT matches): "model.layers.3.self_attn.q_proj" (Gemma3ForCausalLM) or
// "model.language_model.layers.3.mlp.down_proj" (*ForConditionalGeneration; legacy checkpoints
// stored under "language_model.model." also have this module tree). MoE experts are parameters:
// "model.language_model.layers.3.experts.gate_up_proj" / ".experts.down_proj". The router is
// never adaptable; neither are KV-shared layers' k/v (the module does not exist in HF) nor v_proj
// on k_eq_v layers.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/model/lora_views.h"
#include "gemmatune/model/proj.h"
#include "gemmatune/util/enum_names.h"
#include "gemmatune/tensor/dtype.h"

namespace gt {

class Model;

// PEFT init_lora_weights. Kaiming (true): A kaiming-uniform(a=sqrt(5)), B zero; Gaussian: A ~ N(0, (1/r)^2),
// B zero; None (false): a loaded adapter's; Other: a loaded adapter's string this engine does not
// implement (kept in LoraConfig::init_other and written back as is).
enum class LoraInit { Kaiming, Gaussian, None, Other };
// The values `create` implements (the train option lora_init).
inline constexpr std::array<EnumName<LoraInit>, 2> kLoraInitNames = {
    {{LoraInit::Kaiming, "kaiming"}, {LoraInit::Gaussian, "gaussian"}}};

struct LoraConfig {
  int64_t r = kDefaultLoraRank;
  double alpha = kDefaultLoraAlpha;
  bool use_rslora = false;
  double dropout = 0.0;
  nlohmann::json target_modules;                 // list of names or a regex string (PEFT semantics); null = model default
  std::vector<std::string> target_parameters;    // e.g. "experts.gate_up_proj", "experts.down_proj"
  nlohmann::json exclude_modules;                // list or regex, PEFT semantics
  std::map<std::string, int64_t> rank_pattern;   // PEFT semantics: regex keys, (.*\.)?(key) full match on the path
  std::map<std::string, double> alpha_pattern;
  LoraInit init = LoraInit::Kaiming;
  std::string init_other;  // init == Other: PEFT's init_lora_weights string
  // PEFT layers_to_transform (only with a list target_modules, as in PEFT): decoder layer indices; empty = all.
  std::vector<int64_t> layers_to_transform;
};

enum class LoraKind { Linear, Experts };

// One adaptable module (Linear) or fused expert parameter (Experts) of a model.
struct LoraTarget {
  LoraKind kind = LoraKind::Linear;
  std::string path;        // HF module / parameter path (see above)
  std::string weight_key;  // checkpoint tensor name: "<key prefix>layers.N.self_attn.q_proj.weight", "...experts.down_proj"
  int64_t layer = -1;
  Proj proj = Proj::q_proj;
  int64_t in = 0, out = 0, experts = 1;  // Linear weight [out, in]; Experts weight [E, out, in]
  DType dtype = DType::F32;
  const void* data = nullptr;  // the mapped base weight
};

// The module-tree prefix of a model's decoder ("model." or "model.language_model.").
std::string lora_module_prefix(const Model& m);

// Every adaptable module/parameter of the model, layer by layer in Proj order.
std::vector<LoraTarget> adaptable_targets(const Model& m);
// Their paths, e.g. "model.layers.3.mlp.down_proj", "model.language_model.layers.3.experts.gate_up_proj".
std::vector<std::string> adaptable_modules(const Model& m);

// PEFT target_modules / exclude_modules matching of one module path: a list matches a path equal to an
// entry or ending in "." + entry (MaxText-style entries are translated first); a string is a regex that
// must match the whole path (std::regex ECMAScript, which agrees with Python `re` on the usual patterns).
// "all-linear" matches every path. null matches nothing. Throws gt::Error on an invalid regex.
bool peft_module_matches(const nlohmann::json& target_modules, const std::string& module_path);

// MaxText-style names -> HF: runtime module paths ("decoder/layers_3/self_attention/query"), list-indexed
// ("decoder/layers/3/mlp/wo"), checkpoint keys ("params-decoder-layers_3-mlp-wi_0-kernel"), leaves
// ("self_attention/out", "wi_1") -> "layers.3.self_attn.q_proj", "layers.3.mlp.down_proj",
// "layers.3.mlp.gate_proj", "self_attn.o_proj", "up_proj". MoE: shared_experts/* -> mlp.*,
// MoeBlock_0/{wi_0,wi_1} -> experts.gate_up_proj, MoeBlock_0/wo -> experts.down_proj, MoeBlock_0/gate ->
// router.proj. Paths without '/' and not starting with "params-" that are not MaxText leaf names are
// returned unchanged (HF paths). A path inside a scanned block ("decoder/layers/layers_2/...",
// "decoder/scanned_blocks/global_layer/...") stands for several HF layers and cannot be one HF path:
// gt::Error saying so (a MaxText regex in target_modules covers those layouts, see lora_selects).
std::string translate_maxtext_path(const std::string& path);

// The MaxText runtime module paths one HF module has in every layout MaxText uses for this model
// (unscanned "decoder/layers_N/...", list-indexed "decoder/layers/N/...", Gemma 3 scanned blocks,
// Gemma 4 scanned_blocks/{local_layers,global_layer} and the pre-#4530 scanned_blocks/layers_j).
std::vector<std::string> maxtext_module_paths(const Model& m, const LoraTarget& t);

// Per-model defaults (used when target_modules is null): all attention and MLP projections; for Gemma 4
// MoE also the experts through target_parameters; never the router. kDefaultLoraRank, kDefaultLoraAlpha.
LoraConfig default_lora_config(const Model& m);

// Whether `cfg` adapts `t`, with PEFT rules: exclude_modules, then target_modules (list, regex, or a
// MaxText regex - one containing '/' - matched in full against maxtext_module_paths), layers_to_transform;
// experts through target_parameters (equal or "." + entry suffix). `path` is the path to match (defaults
// to t.path; a loaded adapter passes the path its keys use).
bool lora_selects(const LoraConfig& cfg, const Model& m, const LoraTarget& t, const std::string& path = "");

// PEFT rank_pattern / alpha_pattern for one path (get_pattern_key: the first key K, in key order, with
// "(.*\.)?(K)" matching the whole path), falling back to cfg.r / cfg.alpha.
int64_t lora_rank_for(const LoraConfig& cfg, const std::string& path);
double lora_alpha_for(const LoraConfig& cfg, const std::string& path);
// alpha / r, or alpha / sqrt(r) with rsLoRA.
double lora_scaling(double alpha, int64_t r, bool use_rslora);

}  // namespace gt
