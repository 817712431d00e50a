// PEFT adapter folders: adapter_config.json (tuners/lora/config.py LoraConfig fields) and
// adapter_model.safetensors (utils/save_and_load.py key names), validated against the model.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/lora/peft_keys.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/json.h"
#include "gemmatune/util/fs.h"

namespace gt {

using json = nlohmann::json;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& x) {
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

// A value PEFT would write for an option left alone.
bool is_empty_value(const json& v) {
  return v.is_null() || (v.is_boolean() && !v.get<bool>()) || (v.is_object() && v.empty()) ||
         (v.is_array() && v.empty());
}

constexpr int64_t kMaxRank = int64_t(1) << 20;

const std::set<std::string>& ignored_fields() {
  // Informational, or only meaningful for options we reject anyway.
  static const std::set<std::string> s = {
      "base_model_name_or_path", "revision", "task_type", "inference_mode", "peft_version", "auto_mapping",
      "megatron_core", "qalora_group_size", "ensure_weight_tying", "eva_config", "corda_config", "loftq_config",
      "lora_ga_config", "layers_pattern", "init_lora_weights"};
  return s;
}

// Reads the fields of an adapter_config.json object; `origin` names the file in errors.
struct PeftJsonReader {
  const json& j;
  const std::string& origin;

  bool has(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  bool get_bool(const char* k, bool def) const {
    if (!has(k)) return def;
    if (!j[k].is_boolean()) fail(origin, ": \"", k, "\" must be true or false, found ", j[k].dump());
    return j[k].get<bool>();
  }
  double get_number(const char* k, double def) const {
    if (!has(k)) return def;
    if (!j[k].is_number()) fail(origin, ": \"", k, "\" must be a number, found ", j[k].dump());
    return j[k].get<double>();
  }
  json string_or_list(const char* k) const {
    if (!has(k)) return nullptr;
    const json& v = j[k];
    if (v.is_string()) return v;
    if (!v.is_array()) fail(origin, ": \"", k, "\" must be a list of module names, a regex string or null, found ", v.dump());
    for (const auto& e : v)
      if (!e.is_string()) fail(origin, ": \"", k, "\" entries must be strings, found ", e.dump());
    return v;
  }
};

// Ranks are bounded so that r * num_experts * in_features stays far inside 64 bits (real ones are <= 1024).
bool is_valid_rank(const json& v) {
  return v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(kMaxRank)) &&
         v.get<int64_t>() > 0 && v.get<int64_t>() <= kMaxRank;
}

void read_target_parameters(const PeftJsonReader& rd, LoraConfig& c) {
  const std::string& origin = rd.origin;
  if (!rd.has("target_parameters")) return;
  const json& v = rd.j["target_parameters"];
  if (!v.is_array()) fail(origin, ": \"target_parameters\" must be a list of parameter names or null, found ", v.dump());
  for (const auto& e : v) {
    if (!e.is_string()) fail(origin, ": \"target_parameters\" entries must be strings, found ", e.dump());
    c.target_parameters.push_back(e.get<std::string>());
  }
}

// rank_pattern and alpha_pattern: per-module overrides of r and lora_alpha.
void read_patterns(const PeftJsonReader& rd, LoraConfig& c) {
  const json& j = rd.j;
  const std::string& origin = rd.origin;
  if (rd.has("rank_pattern")) {
    if (!j["rank_pattern"].is_object()) fail(origin, ": \"rank_pattern\" must be an object, found ", j["rank_pattern"].dump());
    for (auto it = j["rank_pattern"].begin(); it != j["rank_pattern"].end(); ++it) {
      if (!is_valid_rank(*it))
        fail(origin, ": rank_pattern[\"", it.key(), "\"] must be a positive integer (at most ", kMaxRank, "), found ",
             it->dump());
      c.rank_pattern[it.key()] = it->get<int64_t>();
    }
  }
  if (rd.has("alpha_pattern")) {
    if (!j["alpha_pattern"].is_object()) fail(origin, ": \"alpha_pattern\" must be an object, found ", j["alpha_pattern"].dump());
    for (auto it = j["alpha_pattern"].begin(); it != j["alpha_pattern"].end(); ++it) {
      if (!it->is_number()) fail(origin, ": alpha_pattern[\"", it.key(), "\"] must be a number, found ", it->dump());
      c.alpha_pattern[it.key()] = it->get<double>();
    }
  }
}

void read_layers_to_transform(const PeftJsonReader& rd, LoraConfig& c) {
  const std::string& origin = rd.origin;
  if (!rd.has("layers_to_transform")) return;
  const json& v = rd.j["layers_to_transform"];
  if (v.is_number_integer()) {
    c.layers_to_transform.push_back(v.get<int64_t>());
  } else if (v.is_array()) {
    for (const auto& e : v) {
      if (!e.is_number_integer()) fail(origin, ": \"layers_to_transform\" entries must be integers, found ", e.dump());
      c.layers_to_transform.push_back(e.get<int64_t>());
    }
  } else {
    fail(origin, ": \"layers_to_transform\" must be an integer, a list of integers or null, found ", v.dump());
  }
}

void read_init_lora_weights(const PeftJsonReader& rd, LoraConfig& c) {
  const std::string& origin = rd.origin;
  if (!rd.has("init_lora_weights")) return;
  const json& v = rd.j["init_lora_weights"];
  if (v.is_boolean()) {
    c.init = v.get<bool>() ? LoraInit::Kaiming : LoraInit::None;
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    // These initialisations rewrite the base weights (the adapter is relative to a modified base model).
    for (const char* p : {"pissa", "olora", "corda", "loftq", "lora_ga"})
      if (starts_with(s, p))
        fail(origin, ": init_lora_weights \"", s,
             "\" is not supported: that initialisation modifies the base weights, so the adapter does not apply to "
             "the unmodified model (convert it to a plain LoRA with PEFT first)");
    if (s == "kaiming") c.init = LoraInit::Kaiming;
    else if (s == "gaussian") c.init = LoraInit::Gaussian;
    else c.init = LoraInit::Other, c.init_other = s;
  } else {
    fail(origin, ": \"init_lora_weights\" must be true, false or a string, found ", v.dump());
  }
}

// Refuses options that change what the adapter computes and that we do not implement, checks bias and
// the dropout / target_parameters combination, and warns about unknown options.
void check_unsupported_options(const PeftJsonReader& rd, const LoraConfig& c, std::vector<std::string>* warnings) {
  const json& j = rd.j;
  const std::string& origin = rd.origin;
  struct Unsupported {
    const char* key;
    const char* why;
  };
  static const Unsupported unsupported[] = {
      {"use_dora", "DoRA (weight-decomposed LoRA) is not supported"},
      {"fan_in_fan_out", "fan_in_fan_out (Conv1D-style transposed weights) is not supported; Gemma uses nn.Linear"},
      {"lora_bias", "LoRA bias terms (lora_bias) are not supported"},
      {"modules_to_save", "modules_to_save (fully trained extra modules) is not supported"},
      {"use_qalora", "QALoRA is not supported"},
      {"layer_replication", "layer_replication is not supported"},
      {"trainable_token_indices", "trainable_token_indices (trainable token embeddings) is not supported"},
      {"alora_invocation_tokens", "aLoRA (activated LoRA) is not supported"},
      {"arrow_config", "Arrow routing is not supported"},
      {"megatron_config", "Megatron parallel LoRA layers are not supported"},
      {"velora_config", "VeLoRA is not supported"},
      {"kasa_config", "KaSA is not supported"},
  };
  std::set<std::string> handled = {"peft_type", "r", "lora_alpha", "use_rslora", "lora_dropout", "target_modules",
                                   "exclude_modules", "target_parameters", "rank_pattern", "alpha_pattern",
                                   "layers_to_transform", "bias"};
  for (const auto& u : unsupported) {
    handled.insert(u.key);
    if (j.contains(u.key) && !is_empty_value(j[u.key]))
      fail(origin, ": \"", u.key, "\" is ", j[u.key].dump(), ": ", u.why);
  }
  if (rd.has("bias") && !(j["bias"].is_string() && j["bias"].get<std::string>() == "none"))
    fail(origin, ": \"bias\" is ", j["bias"].dump(), ", expected \"none\" (training/saving base biases is not supported)");
  if (!c.target_parameters.empty() && c.dropout > 0)
    fail(origin, ": lora_dropout is ", c.dropout, " with target_parameters: PEFT's ParamWrapper requires lora_dropout 0");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!handled.count(it.key()) && !ignored_fields().count(it.key()) && !is_empty_value(*it) && warnings)
      warnings->push_back(origin + ": unknown option \"" + it.key() + "\" = " + it->dump() + " ignored");
}

}  // namespace

LoraConfig lora_config_from_peft_json(const json& j, const std::string& origin, std::vector<std::string>* warnings) {
  if (!j.is_object()) fail(origin, ": expected a JSON object (a PEFT LoraConfig), found ", j.type_name());
  LoraConfig c;
  c.r = 8;  // PEFT LoraConfig defaults
  c.alpha = 8;
  const PeftJsonReader rd{j, origin};

  if (rd.has("peft_type") && (!j["peft_type"].is_string() || j["peft_type"].get<std::string>() != "LORA"))
    fail(origin, ": peft_type is ", j["peft_type"].dump(), ", expected \"LORA\" (only LoRA adapters are supported)");
  if (rd.has("r")) {
    if (!is_valid_rank(j["r"]))
      fail(origin, ": \"r\" must be a positive integer (at most ", kMaxRank, "), found ", j["r"].dump());
    c.r = j["r"].get<int64_t>();
  }
  c.alpha = rd.get_number("lora_alpha", c.alpha);
  c.use_rslora = rd.get_bool("use_rslora", false);
  c.dropout = rd.get_number("lora_dropout", 0.0);
  if (!(c.dropout >= 0 && c.dropout < 1)) fail(origin, ": \"lora_dropout\" must be in [0, 1), found ", c.dropout);
  c.target_modules = rd.string_or_list("target_modules");
  c.exclude_modules = rd.string_or_list("exclude_modules");
  read_target_parameters(rd, c);
  read_patterns(rd, c);
  read_layers_to_transform(rd, c);
  read_init_lora_weights(rd, c);
  check_unsupported_options(rd, c, warnings);
  return c;
}

json lora_config_to_peft_json(const LoraConfig& c, const std::string& base_model_name_or_path) {
  json j = json::object();
  json alpha = (std::floor(c.alpha) == c.alpha && std::fabs(c.alpha) < 1e15) ? json(int64_t(c.alpha)) : json(c.alpha);
  json apat = json::object(), rpat = json::object();
  for (const auto& [k, v] : c.alpha_pattern)
    apat[k] = (std::floor(v) == v && std::fabs(v) < 1e15) ? json(int64_t(v)) : json(v);
  for (const auto& [k, v] : c.rank_pattern) rpat[k] = v;
  json init = c.init == LoraInit::Kaiming ? json(true)
              : c.init == LoraInit::None  ? json(false)
              : c.init == LoraInit::Other ? json(c.init_other)
                                          : json("gaussian");
  json ltt = nullptr;
  if (!c.layers_to_transform.empty()) ltt = c.layers_to_transform;
  // The field set of PEFT 0.18's LoraConfig (sorted, as PEFT writes it).
  j["alora_invocation_tokens"] = nullptr;
  j["alpha_pattern"] = apat;
  j["arrow_config"] = nullptr;
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = base_model_name_or_path;
  j["bias"] = "none";
  j["corda_config"] = nullptr;
  j["ensure_weight_tying"] = false;
  j["eva_config"] = nullptr;
  j["exclude_modules"] = c.exclude_modules;
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = init;
  j["layer_replication"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = ltt;
  j["loftq_config"] = json::object();
  j["lora_alpha"] = alpha;
  j["lora_bias"] = false;
  j["lora_dropout"] = c.dropout;
  j["megatron_config"] = nullptr;
  j["megatron_core"] = "megatron.core";
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["peft_version"] = "0.18.0";
  j["qalora_group_size"] = 16;
  j["r"] = c.r;
  j["rank_pattern"] = rpat;
  j["revision"] = nullptr;
  j["target_modules"] = c.target_modules;
  j["target_parameters"] = c.target_parameters.empty() ? json(nullptr) : json(c.target_parameters);
  j["task_type"] = "CAUSAL_LM";
  j["trainable_token_indices"] = nullptr;
  j["use_dora"] = false;
  j["use_qalora"] = false;
  j["use_rslora"] = c.use_rslora;
  return j;
}

namespace {

struct KeyPair {
  const TensorView* a = nullptr;
  const TensorView* b = nullptr;
};

// Parts of a multimodal checkpoint the text-only engine never runs.
bool is_tower_path(const std::string& p) {
  for (const char* t : {"vision_tower", "multi_modal_projector", "audio_tower", "embed_vision", "embed_audio",
                        "vision_model"})
    if (p == t || starts_with(p, std::string(t) + ".") || p.find(std::string(".") + t + ".") != std::string::npos ||
        ends_with(p, std::string(".") + t))
      return true;
  return false;
}

std::string adaptable_summary() {
  return "layers.N.self_attn.{q,k,v,o}_proj, layers.N.mlp.{gate,up,down}_proj, and on MoE layers the parameters "
         "layers.N.experts.{gate_up_proj,down_proj}";
}

void check_shape(const std::string& file, const std::string& key, const TensorView& v, const std::vector<int64_t>& want,
                 const std::string& what) {
  if (v.shape != want)
    fail(file, ": tensor '", key, "' has shape ", v.shape_str(), ", expected ", shape_str(want), " (", what, ")");
  if (v.dtype != DType::F32 && v.dtype != DType::BF16 && v.dtype != DType::F16)
    fail(file, ": tensor '", key, "' has dtype ", dtype_name(v.dtype), ", expected F32, BF16 or F16");
}

struct ExpertKeys {
  std::string experts_path;  // module path of the experts as in the file
  std::map<int, KeyPair> by_depth;
};

// Groups the keys by module path (as written in the file, ".base_layer" nesting included); vision/audio
// tower keys are skipped with a warning.
std::map<std::string, KeyPair> group_keys_by_module(const TensorStore& st, const std::string& w_path,
                                                    std::vector<std::string>& warnings) {
  std::map<std::string, KeyPair> pairs;
  const std::string pre = lora_detail::kPeftKeyPrefix;
  for (const auto& name : st.names()) {
    const TensorView& v = st.get(name);
    if (!starts_with(name, pre))
      fail(w_path, ": unknown key '", name, "': PEFT LoRA keys look like ", pre, "<module>.lora_A.weight / .lora_B.weight");
    const std::string rest = name.substr(pre.size());
    char which;
    if (ends_with(rest, ".lora_A.weight")) which = 'A';
    else if (ends_with(rest, ".lora_B.weight")) which = 'B';
    else if (rest.find("lora_magnitude_vector") != std::string::npos)
      fail(w_path, ": key '", name, "' is a DoRA magnitude vector: DoRA is not supported");
    else if (rest.find("lora_embedding_") != std::string::npos)
      fail(w_path, ": key '", name, "' is an embedding LoRA: LoRA on embeddings is not supported");
    else
      fail(w_path, ": unknown key '", name, "': expected <module>.lora_A.weight or <module>.lora_B.weight (no LoRA "
           "biases, no extra trained modules)");
    const std::string mpath = rest.substr(0, rest.size() - std::string(".lora_A.weight").size());
    if (is_tower_path(mpath)) {
      warnings.push_back(w_path + ": skipped '" + name + "' (vision/audio tower: this engine runs the text model only)");
      continue;
    }
    KeyPair& kp = pairs[mpath];
    (which == 'A' ? kp.a : kp.b) = &v;
  }
  return pairs;
}

// Turns the grouped A/B pairs into the adapter's modules, each validated against the model and the config.
struct PeftModuleBuilder {
  Adapter& a;
  const LoraConfig& c;
  const Model& m;
  const std::string& w_path;
  const std::string& cfg_path;
  const std::string pre = lora_detail::kPeftKeyPrefix;
  const std::vector<LoraTarget> targets;
  const ModelConfig& mc;
  std::set<std::pair<int64_t, Proj>> seen;
  std::map<int64_t, ExpertKeys> experts;

  PeftModuleBuilder(Adapter& adapter, const Model& model, const std::string& weights_path, const std::string& config_path)
      : a(adapter), c(adapter.config), m(model), w_path(weights_path), cfg_path(config_path),
        targets(adaptable_targets(model)), mc(model.config()) {}

  const LoraTarget* find_target(int64_t layer, Proj proj) const {
    for (const auto& t : targets)
      if (t.layer == layer && t.proj == proj) return &t;
    return nullptr;
  }

  void make_module(const LoraTarget& t, const KeyPair& kp, int64_t r, double alpha) {
    LoraModule mod;
    mod.kind = t.kind;
    mod.target = t.path;
    mod.key_a = kp.a->name;
    mod.key_b = kp.b->name;
    mod.layer = t.layer;
    mod.proj = t.proj;
    mod.r = r;
    mod.in = t.in;
    mod.out = t.out;
    mod.experts = t.experts;
    mod.scaling = float(lora_scaling(alpha, r, c.use_rslora));
    mod.A = kp.a->to_floats();
    mod.B = kp.b->to_floats();
    if (!seen.insert({t.layer, t.proj}).second)
      fail(w_path, ": '", kp.a->name, "' adapts ", t.path, " a second time (another key prefix names the same module)");
    a.modules.push_back(std::move(mod));
  }

  // The module path relative to the decoder ("layers.N.<leaf>"), without the language-model prefix.
  std::string decoder_layer_path(const std::string& mpath, const std::string& key) const {
    std::string rest;
    for (const char* p : {"model.language_model.", "language_model.model.", "model.", "language_model."})
      if (starts_with(mpath, std::string(p) + "layers.")) {
        rest = mpath.substr(std::string(p).size());
        break;
      }
    if (rest.empty()) {
      const char* hint = (mpath.find("lm_head") != std::string::npos || mpath.find("embed_tokens") != std::string::npos)
                             ? " (LoRA on the embedding / LM head is not supported)"
                             : "";
      fail(w_path, ": key '", key, "' adapts '", mpath, "', which is not a decoder-layer module of ", m.dir(), hint,
           "; adaptable: ", adaptable_summary());
    }
    return rest;
  }

  // experts(.base_layer)*: collected per layer, turned into modules by add_expert_modules.
  void record_experts(int64_t layer, const std::string& leaf, const std::string& mpath, const std::string& key,
                      const KeyPair& kp) {
    std::string tail = leaf.substr(7);
    int depth = 0;
    while (starts_with(tail, ".base_layer")) {
      tail = tail.substr(11);
      ++depth;
    }
    if (!tail.empty()) fail(w_path, ": unknown key '", key, "': expected ...experts(.base_layer)*.lora_A.weight");
    if (!find_target(layer, Proj::experts_gate_up_proj))
      fail(w_path, ": key '", key, "' adapts the experts of layer ", layer, " but that layer of ", m.dir(),
           " has no MoE experts");
    ExpertKeys& ek = experts[layer];
    const std::string ep = mpath.substr(0, mpath.size() - (leaf.size() - 7));
    if (!ek.experts_path.empty() && ek.experts_path != ep)
      fail(w_path, ": key '", key, "' names the experts of layer ", layer, " as ", ep, " but other keys use ",
           ek.experts_path);
    ek.experts_path = ep;
    ek.by_depth[depth] = kp;
  }

  // The attention / MLP projection that `leaf` names in `layer`.
  const LoraTarget& projection_target(int64_t layer, const std::string& leaf, const std::string& mpath,
                                      const std::string& key) const {
    std::string proj;
    if (starts_with(leaf, "self_attn.")) proj = leaf.substr(10);
    else if (starts_with(leaf, "mlp.")) proj = leaf.substr(4);
    const std::optional<Proj> pp = proj_from_name(proj);
    if (!pp || is_expert_proj(*pp) || (*pp <= Proj::o_proj) != starts_with(leaf, "self_attn."))
      fail(w_path, ": key '", key, "' adapts '", mpath, "': '", leaf, "' is not an adaptable module (adaptable: ",
           adaptable_summary(), ")");
    const LoraTarget* t = find_target(layer, *pp);
    if (!t) {
      const LayerSpec& s = m.specs()[size_t(layer)];
      if ((proj == "k_proj" || proj == "v_proj") && s.kv_donor >= 0)
        fail(w_path, ": key '", key, "' adapts ", mpath, " but layer ", layer, " is KV-shared (it reuses layer ",
             s.kv_donor, "'s K/V and has no ", proj, " in transformers)");
      if (proj == "v_proj" && s.k_eq_v)
        fail(w_path, ": key '", key, "' adapts ", mpath, " but layer ", layer,
             " uses attention_k_eq_v (V comes from k_proj; there is no v_proj)");
      fail(w_path, ": key '", key, "' adapts ", mpath, ", which ", m.dir(), " does not have");
    }
    return *t;
  }

  // One module path of the file: a projection becomes a module now, expert parameters are recorded.
  void add_module_path(const std::string& mpath, const KeyPair& kp) {
    if (!kp.a || !kp.b) {
      const std::string have = (kp.a ? kp.a : kp.b)->name;
      fail(w_path, ": key '", have, "' has no matching '", pre + mpath, kp.a ? ".lora_B.weight" : ".lora_A.weight", "'");
    }
    const std::string& key = kp.a->name;
    const std::string rest = decoder_layer_path(mpath, key);
    // rest = "layers.N.<leaf>"
    size_t d1 = rest.find('.', 7);
    const std::string num = rest.substr(7, d1 == std::string::npos ? std::string::npos : d1 - 7);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos || d1 == std::string::npos)
      fail(w_path, ": key '", key, "' adapts '", mpath, "': expected layers.<index>.<module>");
    if (num.size() > 9)
      fail(w_path, ": key '", key, "' adapts ", mpath, " but ", m.dir(), " has ", mc.num_layers, " layers");
    const int64_t layer = std::stoll(num);
    const std::string leaf = rest.substr(d1 + 1);
    if (layer >= mc.num_layers)
      fail(w_path, ": key '", key, "' adapts ", mpath, " but ", m.dir(), " has ", mc.num_layers, " layers");
    if (starts_with(leaf, "router"))
      fail(w_path, ": key '", key, "' adapts the MoE router (", mpath, "): the router is never adapted");
    // experts(.base_layer)*
    if (leaf == "experts" || starts_with(leaf, "experts.base_layer")) {
      record_experts(layer, leaf, mpath, key, kp);
      return;
    }
    const LoraTarget* t = &projection_target(layer, leaf, mpath, key);
    if (!lora_selects(c, m, *t, mpath))
      fail(w_path, ": key '", key, "' adapts ", mpath, ", which ", cfg_path, " does not select (target_modules ",
           c.target_modules.dump(), ", exclude_modules ", c.exclude_modules.dump(), ")");
    const int64_t r = lora_rank_for(c, mpath);
    const double alpha = lora_alpha_for(c, mpath);
    check_shape(w_path, kp.a->name, *kp.a, {r, t->in},
                "lora_A is [r, in_features]: r = " + std::to_string(r) + " from " + cfg_path + ", in_features of " +
                    t->weight_key);
    check_shape(w_path, kp.b->name, *kp.b, {t->out, r},
                "lora_B is [out_features, r]: r = " + std::to_string(r) + " from " + cfg_path +
                    ", out_features of " + t->weight_key);
    make_module(*t, kp, r, alpha);
  }

  // Expert parameters: nested ParamWrappers, the parameter wrapped last outermost (tuners_utils.py
  // _inject_parameters walks named_parameters in registration order: gate_up_proj, then down_proj).
  void add_expert_modules(int64_t layer, const ExpertKeys& ek) {
    std::vector<const LoraTarget*> chosen;
    std::vector<std::string> ppaths;
    for (Proj p : {Proj::experts_gate_up_proj, Proj::experts_down_proj}) {
      const LoraTarget* t = find_target(layer, p);
      const std::string pp = ek.experts_path + "." + std::string(proj_name(p)).substr(8);
      if (t && lora_selects(c, m, *t, pp)) {
        chosen.push_back(t);
        ppaths.push_back(pp);
      }
    }
    const std::string& any_key = ek.by_depth.begin()->second.a->name;
    if (chosen.empty())
      fail(w_path, ": key '", any_key, "' adapts the experts of layer ", layer, " but ", cfg_path,
           "'s target_parameters (", json(c.target_parameters).dump(), ") selects neither gate_up_proj nor down_proj");
    const int n = int(chosen.size());
    std::vector<bool> used(size_t(n), false);
    for (const auto& entry : ek.by_depth) {
      const int depth = entry.first;
      const KeyPair& kp = entry.second;  // not a structured binding: clang 14 (the fuzz build) cannot capture one
      auto fits = [&](int i) {
        const LoraTarget& t = *chosen[size_t(i)];
        const int64_t r = lora_rank_for(c, ppaths[size_t(i)]);
        return kp.a->shape == std::vector<int64_t>{r * t.experts, t.in} &&
               kp.b->shape == std::vector<int64_t>{t.out, r * t.experts};
      };
      const int canonical = n - 1 - depth;
      if (canonical < 0)
        fail(w_path, ": key '", kp.a->name, "' is nested ", depth, " deep but ", cfg_path, " targets only ", n,
             " expert parameter(s) of layer ", layer);
      int pick = fits(canonical) ? canonical : -1;
      for (int i = 0; i < n && pick < 0; ++i)
        if (fits(i)) pick = i;  // a PEFT version that nested the wrappers the other way round
      if (pick < 0) {
        const LoraTarget& t = *chosen[size_t(canonical)];
        const int64_t r = lora_rank_for(c, ppaths[size_t(canonical)]);
        check_shape(w_path, kp.a->name, *kp.a, {r * t.experts, t.in},
                    "ParamWrapper lora_A of " + t.weight_key + " is [r*num_experts, in] = [" + std::to_string(r) +
                        "*" + std::to_string(t.experts) + ", " + std::to_string(t.in) + "]");
        check_shape(w_path, kp.b->name, *kp.b, {t.out, r * t.experts},
                    "ParamWrapper lora_B of " + t.weight_key + " is [out, r*num_experts] = [" + std::to_string(t.out) +
                        ", " + std::to_string(r) + "*" + std::to_string(t.experts) + "]");
        fail(w_path, ": tensors '", kp.a->name, "' / '", kp.b->name, "' fit no expert parameter of layer ", layer);
      }
      if (used[size_t(pick)])
        fail(w_path, ": key '", kp.a->name, "' adapts ", chosen[size_t(pick)]->path, " a second time");
      used[size_t(pick)] = true;
      check_shape(w_path, kp.a->name, *kp.a, kp.a->shape, "");  // dtype check
      check_shape(w_path, kp.b->name, *kp.b, kp.b->shape, "");
      make_module(*chosen[size_t(pick)], kp, lora_rank_for(c, ppaths[size_t(pick)]),
                  lora_alpha_for(c, ppaths[size_t(pick)]));
    }
  }
};

}  // namespace

Adapter Adapter::load_peft(const std::string& dir, const Model& m) {
  if (!is_directory(dir)) fail("adapter folder ", dir, " does not exist or is not a directory");
  const std::string cfg_path = dir + "/adapter_config.json";
  const std::string w_path = dir + "/adapter_model.safetensors";
  if (!file_exists(cfg_path))
    fail(cfg_path, ": not found (a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors)");
  const json j = parse_json_file(read_file(cfg_path), cfg_path);
  Adapter a;
  a.config = lora_config_from_peft_json(j, cfg_path, &a.warnings);
  if (!file_exists(w_path)) {
    if (file_exists(dir + "/adapter_model.bin"))
      fail(w_path, ": not found; only safetensors adapters are read (", dir,
           "/adapter_model.bin is a pickle: re-save the adapter with PEFT's save_pretrained(safe_serialization=True))");
    fail(w_path, ": not found (a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors)");
  }
  TensorStore st = TensorStore::open_file(w_path);
  const std::map<std::string, KeyPair> pairs = group_keys_by_module(st, w_path, a.warnings);

  PeftModuleBuilder b(a, m, w_path, cfg_path);
  for (const auto& [mpath, kp] : pairs) b.add_module_path(mpath, kp);
  for (const auto& [layer, ek] : b.experts) b.add_expert_modules(layer, ek);
  if (a.modules.empty()) fail(w_path, ": no LoRA tensors for the decoder layers of ", m.dir());
  lora_detail::sort_modules(a.modules);
  return a;
}

void Adapter::save_peft(const std::string& dir, const std::string& base_model_name_or_path) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!is_directory(dir)) fail("cannot create adapter folder ", dir, ": ", ec.message());
  std::vector<TensorOut> ts;
  std::set<std::string> names;
  for (const auto& mod : modules) {
    const auto sa = mod.shape_a(), sb = mod.shape_b();
    if (int64_t(mod.A.size()) != sa[0] * sa[1] || int64_t(mod.B.size()) != sb[0] * sb[1])
      fail("save_peft ", dir, ": module ", mod.target, " holds ", mod.A.size(), "/", mod.B.size(),
           " values for A/B, its shapes need ", sa[0] * sa[1], "/", sb[0] * sb[1]);
    if (mod.key_a.empty() || mod.key_b.empty() || !names.insert(mod.key_a).second || !names.insert(mod.key_b).second)
      fail("save_peft ", dir, ": module ", mod.target, " has an empty or duplicate key ('", mod.key_a, "', '",
           mod.key_b, "')");
    ts.push_back(tensor_out_f32(mod.key_a, sa, mod.A));
    ts.push_back(tensor_out_f32(mod.key_b, sb, mod.B));
  }
  std::sort(ts.begin(), ts.end(), [](const TensorOut& x, const TensorOut& y) { return x.name < y.name; });
  write_safetensors(dir + "/adapter_model.safetensors", ts);
  write_file_atomic(dir + "/adapter_config.json", lora_config_to_peft_json(config, base_model_name_or_path).dump(2));
}

}  // namespace gt
