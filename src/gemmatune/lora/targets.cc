#include "gemmatune/lora/targets.h"

#include <cmath>
#include <memory>
#include <mutex>
#include <regex>

#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"

namespace gt {

using json = nlohmann::json;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Patterns come from adapter_config.json files, i.e. from anyone. libstdc++'s default (backtracking)
// matcher takes exponential time on patterns such as "(.*)*x" (hours for one module path);
// its __polynomial mode matches with the NFA simulation instead (linear in the path for a given
// pattern), with the same result for regex_match. It refuses back-references, which no module
// pattern needs.
#ifdef __GLIBCXX__
constexpr auto kRegexFlags = std::regex::ECMAScript | std::regex_constants::__polynomial;
#else
constexpr auto kRegexFlags = std::regex::ECMAScript;
#endif

constexpr size_t kMaxRegexLength = 4096;

// Compiled regexes are cached: the same few patterns are matched against hundreds of paths. The
// cache is small and bounded (emptied when full): a process that sees many patterns (a long-running
// tool, the fuzzer) must not grow without limit. Entries are shared, so emptying it never pulls a
// regex from under a caller still matching with it.
std::shared_ptr<const std::regex> cached_regex(const std::string& pattern, const char* what) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const std::regex>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(pattern);
  if (it != cache.end()) return it->second;
  // Matching time grows with the pattern's size (a 14 kB alternation took seconds over a small
  // model's modules); real module patterns are well under a kilobyte.
  if (pattern.size() > kMaxRegexLength)
    fail(what, " is a regular expression of ", pattern.size(), " characters; at most ", kMaxRegexLength,
         " are accepted");
  std::shared_ptr<const std::regex> re;
  try {
    re = std::make_shared<const std::regex>(pattern, kRegexFlags);
  } catch (const std::regex_error& e) {
    fail(what, " '", pattern, "' is not a valid regular expression (ECMAScript syntax, as Python re for the usual "
         "patterns): ", e.what());
  }
  if (cache.size() >= 1024) cache.clear();
  cache.emplace(pattern, re);
  return re;
}

bool full_match(const std::string& pattern, const std::string& s, const char* what) {
  return std::regex_match(s, *cached_regex(pattern, what));
}

const std::map<std::string, std::string>& maxtext_leaves() {
  static const std::map<std::string, std::string> m = {{"query", "q_proj"},   {"key", "k_proj"},  {"value", "v_proj"},
                                                        {"out", "o_proj"},     {"wi_0", "gate_proj"},
                                                        {"wi_1", "up_proj"},   {"wo", "down_proj"}};
  return m;
}

bool is_maxtext_style(const std::string& e) {
  return e.find('/') != std::string::npos || starts_with(e, "params-") || maxtext_leaves().count(e) != 0;
}

std::string maybe_translate(const std::string& e) { return is_maxtext_style(e) ? translate_maxtext_path(e) : e; }

std::string leaf_of(Proj p) {
  const std::string name(proj_name(p));
  if (p <= Proj::o_proj) return "self_attn." + name;
  if (p <= Proj::down_proj) return "mlp." + name;
  return name;  // experts.*
}

bool list_matches(const json& list, const std::string& path, const char* what) {
  for (const auto& e : list) {
    if (!e.is_string()) fail(what, " entries must be strings, found ", e.dump());
    const std::string t = maybe_translate(e.get<std::string>());
    if (path == t || ends_with(path, "." + t)) return true;
  }
  return false;
}

// target_modules / exclude_modules against one target: lists and HF regexes on the HF path, MaxText
// regexes (with '/') on the target's MaxText paths.
bool spec_matches(const json& spec, const Model& m, const LoraTarget& t, const std::string& path, const char* what) {
  if (spec.is_null()) return false;
  if (spec.is_string()) {
    const std::string s = spec.get<std::string>();
    if (s == "all-linear") return true;
    if (s.find('/') == std::string::npos) return full_match(s, path, what);
    for (const auto& mp : maxtext_module_paths(m, t))
      if (full_match(s, mp, what)) return true;
    return false;
  }
  if (spec.is_array()) return list_matches(spec, path, what);
  fail(what, " must be a list of names, a regex string or null, found ", spec.dump());
}

}  // namespace

std::string lora_module_prefix(const Model& m) {
  // transformers' module tree for legacy "language_model.model." checkpoints is model.language_model.
  return m.key_prefix() == "language_model.model." ? "model.language_model." : m.key_prefix();
}

std::vector<LoraTarget> adaptable_targets(const Model& m) {
  std::vector<LoraTarget> out;
  const std::string prefix = lora_module_prefix(m);
  const ModelConfig& c = m.config();
  for (const LayerSpec& s : m.specs()) {
    const LayerWeights& lw = m.weights().layers[size_t(s.index)];
    const std::string lp = "layers." + std::to_string(s.index) + ".";
    const Weight2D* lin[kNumLinearProj] = {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down};
    for (int i = 0; i < kNumLinearProj; ++i) {
      const Weight2D& w = *lin[i];
      if (w.empty()) continue;  // KV-shared layers' k/v, v on k_eq_v layers
      LoraTarget t;
      t.kind = LoraKind::Linear;
      t.proj = kAllProj[size_t(i)];
      t.layer = s.index;
      t.path = prefix + lp + leaf_of(t.proj);
      t.weight_key = w.name;
      t.in = w.k;
      t.out = w.n;
      t.dtype = w.dtype;
      t.data = w.data;
      out.push_back(std::move(t));
    }
    if (s.moe && !lw.experts.empty()) {
      const int64_t E = int64_t(lw.experts.size()), H = c.hidden_size, I = c.moe_intermediate_size;
      for (int j = 0; j < 2; ++j) {
        LoraTarget t;
        t.kind = LoraKind::Experts;
        t.proj = j == 0 ? Proj::experts_gate_up_proj : Proj::experts_down_proj;
        t.layer = s.index;
        t.path = prefix + lp + std::string(proj_name(t.proj));
        t.weight_key = m.key_prefix() + lp + std::string(proj_name(t.proj));
        t.experts = E;
        const Weight2D& w0 = j == 0 ? lw.experts[0].gate_up : lw.experts[0].down;
        t.out = j == 0 ? 2 * I : H;
        t.in = j == 0 ? H : I;
        t.dtype = w0.dtype;
        t.data = w0.data;  // expert 0 starts the fused [E, out, in] tensor
        out.push_back(std::move(t));
      }
    }
  }
  return out;
}

std::vector<std::string> adaptable_modules(const Model& m) {
  std::vector<std::string> out;
  for (const auto& t : adaptable_targets(m)) out.push_back(t.path);
  return out;
}

bool peft_module_matches(const json& target_modules, const std::string& module_path) {
  if (target_modules.is_null()) return false;
  if (target_modules.is_string()) {
    const std::string s = target_modules.get<std::string>();
    return s == "all-linear" || full_match(s, module_path, "target_modules");
  }
  if (target_modules.is_array()) return list_matches(target_modules, module_path, "target_modules");
  fail("target_modules must be a list of names, a regex string or null, found ", target_modules.dump());
}

std::string translate_maxtext_path(const std::string& path) {
  const bool ckpt = starts_with(path, "params-");
  if (!ckpt && path.find('/') == std::string::npos) {
    auto it = maxtext_leaves().find(path);
    return it == maxtext_leaves().end() ? path : it->second;
  }
  std::vector<std::string> p;
  {
    const char sep = ckpt ? '-' : '/';
    size_t b = 0;
    while (b <= path.size()) {
      size_t e = path.find(sep, b);
      if (e == std::string::npos) e = path.size();
      if (e > b) p.push_back(path.substr(b, e - b));
      b = e + 1;
    }
  }
  size_t i = 0;
  if (i < p.size() && p[i] == "params") ++i;
  if (i < p.size() && p[i] == "model") ++i;
  // trailing parameter names: the module path is what is translated
  while (p.size() > i) {
    const std::string& last = p.back();
    if (last == "kernel" || last == "kernel_lora_a" || last == "kernel_lora_b" || last == "lora_a" ||
        last == "lora_b" || last == "scale" || last == "embedding" ||
        (last == "value" && p.size() >= 2 && p[p.size() - 2] == "kernel"))
      p.pop_back();
    else
      break;
  }
  auto scanned = [&](const std::string& where) -> std::string {
    fail("MaxText path '", path, "' names a layer inside a scanned block ('", where,
         "'): it stands for several Hugging Face layers, so it has no single HF path; write the unscanned form "
         "(decoder/layers_N/...), a leaf (self_attention/query), or a MaxText regex as target_modules");
  };
  std::vector<std::string> hf;
  if (i < p.size() && p[i] == "decoder") {
    ++i;
    if (i < p.size()) {
      const std::string& l = p[i];
      if (starts_with(l, "layers_") && all_digits(l.substr(7))) {
        hf.push_back("layers." + l.substr(7));
        ++i;
      } else if (l == "layers") {
        if (i + 1 < p.size() && all_digits(p[i + 1])) {
          hf.push_back("layers." + p[i + 1]);
          i += 2;
        } else {
          scanned(l);
        }
      } else if (l == "scanned_blocks" || l == "layers_remainder") {
        scanned(l);
      }
    }
  }
  auto fail_at = [&](size_t k) -> std::string {
    fail("MaxText path '", path, "': cannot translate '", k < p.size() ? p[k] : std::string("(end)"),
         "' to a Hugging Face name (known: decoder/layers_N, self_attention/{query,key,value,out}, "
         "mlp/{wi_0,wi_1,wo}, mlp/moe_block/{shared_experts,MoeBlock_0}/...)");
  };
  while (i < p.size()) {
    const std::string& s = p[i];
    if (s == "self_attention" || s == "attention" || s == "self_attention_local" || s == "self_attention_global") {
      if (i + 1 >= p.size()) {
        hf.push_back("self_attn");
        ++i;
        continue;
      }
      const std::string& leaf = p[i + 1];
      static const std::map<std::string, std::string> attn = {{"query", "q_proj"}, {"key", "k_proj"},
                                                              {"value", "v_proj"}, {"out", "o_proj"},
                                                              {"query_norm", "q_norm"}, {"key_norm", "k_norm"},
                                                              {"value_norm", "v_norm"}};
      auto it = attn.find(leaf);
      if (it == attn.end()) fail_at(i + 1);
      hf.push_back("self_attn." + it->second);
      i += 2;
    } else if (s == "mlp" || s == "mlp_local" || s == "mlp_global") {
      ++i;
      if (i < p.size() && p[i] == "moe_block") ++i;
      if (i >= p.size()) {
        hf.push_back("mlp");
        continue;
      }
      if (p[i] == "shared_experts") ++i;
      if (i < p.size() && p[i] == "MoeBlock_0") {
        ++i;
        if (i >= p.size()) fail_at(i);
        if (p[i] == "wi_0" || p[i] == "wi_1") hf.push_back("experts.gate_up_proj");
        else if (p[i] == "wo") hf.push_back("experts.down_proj");
        else if (p[i] == "gate") hf.push_back("router.proj");
        else if (p[i] == "per_expert_scale") hf.push_back("router.per_expert_scale");
        else fail_at(i);
        ++i;
        continue;
      }
      if (i >= p.size()) {
        hf.push_back("mlp");
        continue;
      }
      auto it = maxtext_leaves().find(p[i]);
      if (it == maxtext_leaves().end() || (p[i] != "wi_0" && p[i] != "wi_1" && p[i] != "wo")) fail_at(i);
      hf.push_back("mlp." + it->second);
      ++i;
    } else if (maxtext_leaves().count(s)) {
      hf.push_back(maxtext_leaves().at(s));
      ++i;
    } else {
      fail_at(i);
    }
  }
  std::string out;
  for (const auto& h : hf) out += (out.empty() ? "" : ".") + h;
  if (out.empty()) fail("MaxText path '", path, "' names no module");
  return out;
}

std::vector<std::string> maxtext_module_paths(const Model& m, const LoraTarget& t) {
  const ModelConfig& c = m.config();
  const LayerSpec& s = m.specs()[size_t(t.layer)];
  const int64_t N = t.layer, nb = c.num_layers / 6, j = N % 6;
  std::vector<std::string> prefixes = {"decoder/layers_" + std::to_string(N), "decoder/layers/" + std::to_string(N)};
  if (c.family == Family::Gemma3) {
    prefixes.push_back(N < 6 * nb ? "decoder/layers/layers_" + std::to_string(j)
                                  : "decoder/layers_remainder/layers_" + std::to_string(N - 6 * nb));
  } else {
    const std::string block = N < 6 * nb ? "decoder/scanned_blocks/" : "decoder/layers_remainder/";
    prefixes.push_back(block + (s.type == AttnType::Full ? "global_layer" : "local_layers"));
    prefixes.push_back(block + "layers_" + std::to_string(N < 6 * nb ? j : N - 6 * nb));
  }
  std::string leaf;
  const std::string mlp = s.moe ? "mlp/moe_block/shared_experts/" : "mlp/";
  switch (t.proj) {
    case Proj::q_proj: leaf = "self_attention/query"; break;
    case Proj::k_proj: leaf = "self_attention/key"; break;
    case Proj::v_proj: leaf = "self_attention/value"; break;
    case Proj::o_proj: leaf = "self_attention/out"; break;
    case Proj::gate_proj: leaf = mlp + "wi_0"; break;
    case Proj::up_proj: leaf = mlp + "wi_1"; break;
    case Proj::down_proj: leaf = mlp + "wo"; break;
    case Proj::experts_gate_up_proj:
    case Proj::experts_down_proj: leaf = "mlp/moe_block/MoeBlock_0"; break;  // one module holding wi_0/wi_1/wo
  }
  std::vector<std::string> out;
  for (const auto& p : prefixes) out.push_back(p + "/" + leaf);
  return out;
}

LoraConfig default_lora_config(const Model& m) {
  LoraConfig c;
  c.target_modules = json::array();
  for (int i = 0; i < kNumLinearProj; ++i) c.target_modules.push_back(std::string(proj_name(kAllProj[size_t(i)])));
  for (const auto& s : m.specs())
    if (s.moe) {
      c.target_parameters = {std::string(proj_name(Proj::experts_gate_up_proj)), std::string(proj_name(Proj::experts_down_proj))};
      break;
    }
  return c;
}

bool lora_selects(const LoraConfig& cfg, const Model& m, const LoraTarget& t, const std::string& path_in) {
  const std::string& path = path_in.empty() ? t.path : path_in;
  if (t.kind == LoraKind::Experts) {
    // tuners_utils.py _inject_parameters: "<module>.<param>" equal to an entry or ending in "." + entry.
    for (const auto& e0 : cfg.target_parameters) {
      const std::string e = maybe_translate(e0);
      if (path == e || ends_with(path, "." + e)) return true;
    }
    return false;
  }
  if (spec_matches(cfg.exclude_modules, m, t, path, "exclude_modules")) return false;
  if (!spec_matches(cfg.target_modules, m, t, path, "target_modules")) return false;
  // PEFT applies layers_to_transform to list target_modules only.
  if (cfg.target_modules.is_array() && !cfg.layers_to_transform.empty()) {
    bool in = false;
    for (int64_t l : cfg.layers_to_transform) in = in || l == t.layer;
    if (!in) return false;
  }
  return true;
}

int64_t lora_rank_for(const LoraConfig& cfg, const std::string& path) {
  for (const auto& [k, v] : cfg.rank_pattern)
    if (full_match("(.*\\.)?(" + k + ")", path, "rank_pattern key")) return v;
  return cfg.r;
}

double lora_alpha_for(const LoraConfig& cfg, const std::string& path) {
  for (const auto& [k, v] : cfg.alpha_pattern)
    if (full_match("(.*\\.)?(" + k + ")", path, "alpha_pattern key")) return v;
  return cfg.alpha;
}

double lora_scaling(double alpha, int64_t r, bool use_rslora) {
  return use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r);
}

}  // namespace gt
