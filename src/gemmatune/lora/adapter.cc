#include "gemmatune/lora/adapter.h"

#include <algorithm>
#include <cmath>

#include "gemmatune/lora/peft_keys.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/random.h"

namespace gt {

using json = nlohmann::json;

namespace lora_detail {

std::string peft_linear_key(const std::string& module_path, char ab) {
  return std::string(kPeftKeyPrefix) + module_path + ".lora_" + ab + ".weight";
}

std::string peft_experts_key(const std::string& experts_module_path, int depth, char ab) {
  std::string k = std::string(kPeftKeyPrefix) + experts_module_path;
  for (int i = 0; i < depth; ++i) k += ".base_layer";
  return k + ".lora_" + ab + ".weight";
}

void sort_modules(std::vector<LoraModule>& mods) {
  std::stable_sort(mods.begin(), mods.end(), [](const LoraModule& a, const LoraModule& b) {
    if (a.layer != b.layer) return a.layer < b.layer;
    return a.proj < b.proj;
  });
}

}  // namespace lora_detail

const LoraModule* Adapter::find(int64_t layer, Proj proj) const {
  for (const auto& m : modules)
    if (m.layer == layer && m.proj == proj) return &m;
  return nullptr;
}

LoraModule* Adapter::find(int64_t layer, Proj proj) {
  for (auto& m : modules)
    if (m.layer == layer && m.proj == proj) return &m;
  return nullptr;
}

int64_t Adapter::num_parameters() const {
  int64_t n = 0;
  for (const auto& m : modules) n += int64_t(m.A.size() + m.B.size());
  return n;
}

LoraViews bind_adapter(const Adapter& a, const Model& m, float scale) {
  LoraViews v;
  v.bound = true;
  v.modules = int64_t(a.modules.size());
  v.dropout = a.config.dropout;
  const int64_t L = m.config().num_layers;
  v.views.assign(size_t(L * kNumProj), LoraView{});
  for (size_t i = 0; i < a.modules.size(); ++i) {
    const LoraModule& mod = a.modules[i];
    GT_CHECK(mod.layer >= 0 && mod.layer < L, "bind_adapter: module ", mod.target, " has layer ", mod.layer, " of ", L);
    LoraView& lv = v.at(mod.layer, mod.proj);
    GT_CHECK(!lv, "bind_adapter: ", mod.target, " is adapted twice");
    lv.A = mod.A.data();
    lv.B = mod.B.data();
    lv.r = mod.r;
    lv.in = mod.in;
    lv.out = mod.out;
    lv.experts = mod.experts;
    lv.scale = mod.scaling * scale;
    lv.slot = int64_t(i);
  }
  return v;
}

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// A small deterministic generator (same numbers on every platform and standard library).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  double uniform() { return double(splitmix64(s_) >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {
    if (have_) {
      have_ = false;
      return spare_;
    }
    double u1 = 1.0 - uniform(), u2 = uniform();  // u1 in (0, 1]
    double rad = std::sqrt(-2.0 * std::log(u1)), th = 2.0 * M_PI * u2;
    spare_ = rad * std::sin(th);
    have_ = true;
    return rad * std::cos(th);
  }

 private:
  uint64_t s_;
  bool have_ = false;
  double spare_ = 0;
};

bool mentions_router(const std::string& e) { return e.find("router") != std::string::npos; }

}  // namespace

Adapter Adapter::create(const Model& m, const LoraConfig& cfg_in, uint64_t seed) {
  Adapter a;
  LoraConfig c = cfg_in;
  if (c.target_modules.is_null()) {
    const LoraConfig def = default_lora_config(m);
    c.target_modules = def.target_modules;
    if (c.target_parameters.empty()) c.target_parameters = def.target_parameters;
  }
  if (c.r <= 0) fail("LoRA config: r must be a positive integer, found ", c.r);
  if (!std::isfinite(c.alpha)) fail("LoRA config: lora_alpha must be a finite number, found ", c.alpha);
  if (c.init != LoraInit::Kaiming && c.init != LoraInit::Gaussian)
    fail("LoRA config: init must be one of ", enum_choices(kLoraInitNames), " (kaiming: PEFT's default), found ",
         c.init == LoraInit::None ? std::string("false") : "\"" + c.init_other + "\"");
  if (!(c.dropout >= 0.0 && c.dropout < 1.0)) fail("LoRA config: lora_dropout must be in [0, 1), found ", c.dropout);
  for (const auto& [k, v] : c.rank_pattern)
    if (v <= 0) fail("LoRA config: rank_pattern '", k, "' gives r = ", v, ", expected a positive integer");
  // The router is never adapted: naming it explicitly is an error (a regex merely never selects it).
  if (c.target_modules.is_array())
    for (const auto& e : c.target_modules)
      if (e.is_string() && mentions_router(e.get<std::string>()))
        fail("LoRA config: target_modules names '", e.get<std::string>(),
             "': the MoE router is never adapted (its top-k choice must stay the base model's)");
  for (const auto& e : c.target_parameters)
    if (mentions_router(e))
      fail("LoRA config: target_parameters names '", e, "': the MoE router is never adapted");

  const std::vector<LoraTarget> targets = adaptable_targets(m);
  std::vector<const LoraTarget*> chosen;
  for (const auto& t : targets)
    if (lora_selects(c, m, t)) chosen.push_back(&t);
  if (chosen.empty())
    fail("LoRA config selects no module of ", m.dir(), ": target_modules ", c.target_modules.dump(),
         ", target_parameters ", json(c.target_parameters).dump(), ", exclude_modules ", c.exclude_modules.dump(),
         " (adaptable: ", targets.empty() ? std::string("none") : targets.front().path, ", ...)");
  bool has_experts = false;
  for (const auto* t : chosen) has_experts = has_experts || t->kind == LoraKind::Experts;
  if (has_experts && c.dropout > 0)
    fail("LoRA config: lora_dropout must be 0 when experts are adapted (PEFT ParamWrapper cannot apply dropout), found ",
         c.dropout);
  // Entries of a list that match nothing are most likely typos.
  if (c.target_modules.is_array())
    for (const auto& e : c.target_modules) {
      bool used = false;
      for (const auto* t : chosen) used = used || (t->kind == LoraKind::Linear && peft_module_matches(json::array({e}), t->path));
      if (!used) a.warnings.push_back("target_modules entry " + e.dump() + " matches no adaptable module");
    }
  for (const auto& e : c.target_parameters) {
    LoraConfig one;
    one.target_parameters = {e};
    bool used = false;
    for (const auto* t : chosen) used = used || (t->kind == LoraKind::Experts && lora_selects(one, m, *t));
    if (!used)
      fail("LoRA config: target_parameters entry '", e, "' matches no parameter of ", m.dir(),
           " (adaptable parameters: <layer>.experts.gate_up_proj and <layer>.experts.down_proj on MoE layers)");
  }

  for (const LoraTarget* t : chosen) {
    LoraModule mod;
    mod.kind = t->kind;
    mod.target = t->path;
    mod.layer = t->layer;
    mod.proj = t->proj;
    mod.r = lora_rank_for(c, t->path);
    if (mod.r <= 0) fail("LoRA config: r for ", t->path, " is ", mod.r, ", expected a positive integer");
    mod.in = t->in;
    mod.out = t->out;
    mod.experts = t->experts;
    mod.scaling = float(lora_scaling(lora_alpha_for(c, t->path), mod.r, c.use_rslora));
    if (t->kind == LoraKind::Linear) {
      mod.key_a = lora_detail::peft_linear_key(t->path, 'A');
      mod.key_b = lora_detail::peft_linear_key(t->path, 'B');
    }
    mod.A.resize(size_t(mod.r * mod.experts * mod.in));
    mod.B.assign(size_t(mod.out * mod.r * mod.experts), 0.0f);
    uint64_t s = seed ^ fnv1a(t->path);
    Rng rng(splitmix64(s));
    if (c.init == LoraInit::Gaussian) {
      const double sd = 1.0 / double(mod.r);
      for (auto& x : mod.A) x = float(rng.normal() * sd);
    } else {
      // kaiming_uniform_(a=sqrt(5)) on [rows, in]: gain sqrt(2/(1+5)), bound gain*sqrt(3/in) = 1/sqrt(in).
      const double bound = 1.0 / std::sqrt(double(mod.in));
      for (auto& x : mod.A) x = float((2.0 * rng.uniform() - 1.0) * bound);
    }
    a.modules.push_back(std::move(mod));
  }
  // Expert parameters of one layer nest as PEFT nests its ParamWrappers: the last targeted parameter
  // (registration order gate_up_proj, down_proj) is the outermost wrapper (no ".base_layer").
  for (size_t i = 0; i < a.modules.size(); ++i) {
    LoraModule& mod = a.modules[i];
    if (mod.kind != LoraKind::Experts) continue;
    int n = 0, my = 0;
    for (const auto& o : a.modules)
      if (o.kind == LoraKind::Experts && o.layer == mod.layer) {
        if (&o == &mod) my = n;
        ++n;
      }
    const std::string experts_path = mod.target.substr(0, mod.target.rfind('.'));
    mod.key_a = lora_detail::peft_experts_key(experts_path, n - 1 - my, 'A');
    mod.key_b = lora_detail::peft_experts_key(experts_path, n - 1 - my, 'B');
  }
  lora_detail::sort_modules(a.modules);
  a.config = std::move(c);
  return a;
}

}  // namespace gt
