// LoRA adapters: PEFT folders read/written against every fixture (modules, shapes, scaling, key names
// incl. the nested MoE ParamWrapper keys), merge vs the golden `<key>.merged` tensors, the merged folder,
// PEFT target matching (lists, regexes, exclude, rank/alpha patterns, rsLoRA, MaxText names, the router,
// KV-shared and k_eq_v layers), PEFT initialisation, and every bad-input error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/lora/merge.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

using namespace gt;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kFixtures = {"gemma3_causal", "gemma3_causal_bf16", "gemma3_conditional",
                                            "gemma4_dense",  "gemma4_moe",         "gemma4_small"};

std::string fresh_dir(const std::string& name) {
  std::string d = test::scratch("lora_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

json golden_json(const std::string& fx) { return json::parse(read_file(test::fixture(fx) + "/golden.json")); }

Model load_model(const std::string& fx) { return Model::load(test::fixture(fx) + "/model"); }

using test::contains;
using test::error_of;


// Copies a fixture's adapter folder, letting `edit` change tensors and config on the way.
std::string edited_adapter(const std::string& fx, const std::string& name,
                           const std::function<void(std::vector<TensorOut>&, json&, std::vector<std::vector<float>>&)>& edit) {
  const std::string src = test::fixture(fx) + "/adapter";
  TensorStore s = TensorStore::open_file(src + "/adapter_model.safetensors");
  std::vector<TensorOut> ts;
  for (const auto& n : s.names()) {
    const TensorView& v = s.get(n);
    ts.push_back(TensorOut{n, v.dtype, v.shape, v.data, v.nbytes});
  }
  json cfg = json::parse(read_file(src + "/adapter_config.json"));
  std::vector<std::vector<float>> keep;
  keep.reserve(64);
  edit(ts, cfg, keep);
  const std::string d = fresh_dir(name);
  write_safetensors(d + "/adapter_model.safetensors", ts);
  write_file_atomic(d + "/adapter_config.json", cfg.dump(2));
  return d;
}

size_t count_proj(const Adapter& a, const std::string& proj) {
  size_t n = 0;
  for (const auto& m : a.modules) n += proj_name(m.proj) == proj;
  return n;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float d = 0;
  for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Loading every fixture adapter: modules, keys, shapes and scaling agree with golden.json.

TEST(LoraLoad, EveryFixtureMatchesGoldenLoraSection) {
  for (const auto& fx : kFixtures) {
    SCOPED_TRACE(fx);
    Model m = load_model(fx);
    Adapter a = Adapter::load_peft(test::fixture(fx) + "/adapter", m);
    const json g = golden_json(fx)["lora"];
    EXPECT_EQ(a.config.r, g["r"].get<int64_t>());
    EXPECT_DOUBLE_EQ(a.config.alpha, g["lora_alpha"].get<double>());
    EXPECT_EQ(a.config.use_rslora, g["use_rslora"].get<bool>());
    EXPECT_EQ(a.config.target_modules, g["target_modules"]);
    if (g["target_parameters"].is_null()) EXPECT_TRUE(a.config.target_parameters.empty());
    else EXPECT_EQ(json(a.config.target_parameters), g["target_parameters"]);
    EXPECT_TRUE(a.warnings.empty()) << a.warnings.front();

    const json& keys = g["keys"];
    ASSERT_EQ(a.modules.size() * 2, keys.size());
    TensorStore st = TensorStore::open_file(test::fixture(fx) + "/adapter/adapter_model.safetensors");
    const double scaling = g["scaling"].get<double>();
    int64_t params = 0;
    for (const auto& mod : a.modules) {
      SCOPED_TRACE(mod.key_a);
      ASSERT_TRUE(keys.contains(mod.key_a));
      ASSERT_TRUE(keys.contains(mod.key_b));
      const json& ka = keys[mod.key_a];
      EXPECT_EQ(ka["target"].get<std::string>(), mod.target);
      EXPECT_EQ(keys[mod.key_b]["target"].get<std::string>(), mod.target);
      EXPECT_EQ(ka["kind"].get<std::string>(), mod.kind == LoraKind::Linear ? "linear" : "param");
      EXPECT_EQ(mod.r, g["r"].get<int64_t>());
      EXPECT_NEAR(mod.scaling, scaling, 1e-6 * scaling);
      // shapes as stored, and against the model's weight
      EXPECT_EQ(st.get(mod.key_a).shape, mod.shape_a());
      EXPECT_EQ(st.get(mod.key_b).shape, mod.shape_b());
      EXPECT_EQ(mod.A.size(), size_t(mod.r * mod.experts * mod.in));
      EXPECT_EQ(mod.B.size(), size_t(mod.out * mod.r * mod.experts));
      EXPECT_EQ(mod.A, st.get(mod.key_a).to_floats());
      const LayerWeights& lw = m.weights().layers[size_t(mod.layer)];
      if (mod.kind == LoraKind::Linear) {
        const Weight2D* w = proj_name(mod.proj) == "q_proj" ? &lw.q : proj_name(mod.proj) == "k_proj" ? &lw.k : proj_name(mod.proj) == "v_proj" ? &lw.v
                          : proj_name(mod.proj) == "o_proj" ? &lw.o : proj_name(mod.proj) == "gate_proj" ? &lw.gate
                          : proj_name(mod.proj) == "up_proj" ? &lw.up : &lw.down;
        EXPECT_EQ(mod.in, w->k);
        EXPECT_EQ(mod.out, w->n);
        EXPECT_EQ(mod.experts, 1);
      } else {
        const Weight2D& w = proj_name(mod.proj) == "experts.gate_up_proj" ? lw.experts[0].gate_up : lw.experts[0].down;
        EXPECT_EQ(mod.in, w.k);
        EXPECT_EQ(mod.out, w.n);
        EXPECT_EQ(mod.experts, int64_t(lw.experts.size()));
      }
      EXPECT_EQ(a.find(mod.layer, mod.proj), &mod);
      params += int64_t(mod.A.size() + mod.B.size());
    }
    EXPECT_EQ(a.num_parameters(), params);
    EXPECT_FALSE(proj_from_name("no_such_proj").has_value());
  }
}

TEST(LoraLoad, MoeParamWrapperNesting) {
  Model m = load_model("gemma4_moe");
  Adapter a = Adapter::load_peft(test::fixture("gemma4_moe") + "/adapter", m);
  const LoraModule* gu = a.find(0, Proj::experts_gate_up_proj);
  const LoraModule* dn = a.find(0, Proj::experts_down_proj);
  ASSERT_TRUE(gu && dn);
  // gate_up_proj [E, 2I, H] is the inner wrapper, down_proj [E, H, I] the outer one (README item 18).
  EXPECT_EQ(gu->key_a, "base_model.model.model.language_model.layers.0.experts.base_layer.lora_A.weight");
  EXPECT_EQ(dn->key_a, "base_model.model.model.language_model.layers.0.experts.lora_A.weight");
  EXPECT_EQ(gu->experts, 8);
  EXPECT_EQ(gu->out, 32);
  EXPECT_EQ(gu->in, 64);
  EXPECT_EQ(dn->out, 64);
  EXPECT_EQ(dn->in, 16);
  EXPECT_EQ(gu->shape_a(), (std::vector<int64_t>{4 * 8, 64}));
  EXPECT_EQ(gu->shape_b(), (std::vector<int64_t>{32, 4 * 8}));
  // The router is never adapted.
  for (const auto& mod : a.modules) EXPECT_FALSE(contains(mod.target, "router"));
}

// ---------------------------------------------------------------------------------------------
// PEFT round trip: load -> save -> byte-equal tensors, equal config; the saved folder loads again.

TEST(LoraSave, RoundTripEveryFixture) {
  for (const auto& fx : kFixtures) {
    SCOPED_TRACE(fx);
    Model m = load_model(fx);
    const std::string src = test::fixture(fx) + "/adapter";
    Adapter a = Adapter::load_peft(src, m);
    const std::string out = fresh_dir("rt_" + fx);
    a.save_peft(out, "../model");

    TensorStore orig = TensorStore::open_file(src + "/adapter_model.safetensors");
    TensorStore saved = TensorStore::open_file(out + "/adapter_model.safetensors");
    ASSERT_EQ(orig.names(), saved.names());
    for (const auto& n : orig.names()) {
      const TensorView &x = orig.get(n), &y = saved.get(n);
      EXPECT_EQ(y.dtype, DType::F32) << n;
      EXPECT_EQ(x.shape, y.shape) << n;
      ASSERT_EQ(x.nbytes, y.nbytes) << n;
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0) << n;
    }
    // The fixture configs were written by PEFT 0.18: the saved config is the same document.
    const json jo = json::parse(read_file(src + "/adapter_config.json"));
    const json js = json::parse(read_file(out + "/adapter_config.json"));
    EXPECT_EQ(jo, js) << "original: " << jo.dump() << "\nsaved: " << js.dump();

    Adapter b = Adapter::load_peft(out, m);
    ASSERT_EQ(a.modules.size(), b.modules.size());
    for (size_t i = 0; i < a.modules.size(); ++i) {
      EXPECT_EQ(a.modules[i].key_a, b.modules[i].key_a);
      EXPECT_EQ(a.modules[i].target, b.modules[i].target);
      EXPECT_EQ(a.modules[i].A, b.modules[i].A);
      EXPECT_EQ(a.modules[i].B, b.modules[i].B);
      EXPECT_EQ(a.modules[i].scaling, b.modules[i].scaling);
    }
  }
}

TEST(LoraSave, ConfigJsonRoundTripOfNonDefaultOptions) {
  LoraConfig c;
  c.r = 6;
  c.alpha = 12.5;
  c.use_rslora = true;
  c.dropout = 0.05;
  c.target_modules = ".*\\.(q_proj|v_proj)";
  c.exclude_modules = json::array({"model.layers.0.self_attn.q_proj"});
  c.rank_pattern = {{"v_proj", 4}};
  c.alpha_pattern = {{"q_proj", 3.0}};
  c.layers_to_transform = {1, 2};
  c.init = LoraInit::Gaussian;
  const json j = lora_config_to_peft_json(c, "google/gemma-3-1b-it");
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["base_model_name_or_path"], "google/gemma-3-1b-it");
  EXPECT_EQ(j["init_lora_weights"], "gaussian");
  EXPECT_EQ(j["alpha_pattern"]["q_proj"], 3);
  const LoraConfig d = lora_config_from_peft_json(j, "test");
  EXPECT_EQ(d.r, 6);
  EXPECT_DOUBLE_EQ(d.alpha, 12.5);
  EXPECT_TRUE(d.use_rslora);
  EXPECT_DOUBLE_EQ(d.dropout, 0.05);
  EXPECT_EQ(d.target_modules, c.target_modules);
  EXPECT_EQ(d.exclude_modules, c.exclude_modules);
  EXPECT_EQ(d.rank_pattern, c.rank_pattern);
  EXPECT_EQ(d.alpha_pattern, c.alpha_pattern);
  EXPECT_EQ(d.layers_to_transform, c.layers_to_transform);
  EXPECT_EQ(d.init, LoraInit::Gaussian);
}

// ---------------------------------------------------------------------------------------------
// Merge: W + delta vs golden `<HF key>.merged` (this checks the ParamWrapper layout), and the
// merged folder.

TEST(LoraMerge, MergedWeightsMatchGolden) {
  for (const auto& fx : kFixtures) {
    SCOPED_TRACE(fx);
    Model m = load_model(fx);
    Adapter a = Adapter::load_peft(test::fixture(fx) + "/adapter", m);
    const double atol = golden_json(fx)["tolerances_for_float32_implementation"]["merged_atol"].get<double>();
    TensorStore golden = TensorStore::open_file(test::fixture(fx) + "/golden.safetensors");
    size_t n_golden = 0;
    for (const auto& n : golden.names()) n_golden += n.size() > 7 && n.compare(n.size() - 7, 7, ".merged") == 0;
    ASSERT_EQ(n_golden, a.modules.size());
    const auto targets = adaptable_targets(m);
    for (const auto& mod : a.modules) {
      std::string key;
      for (const auto& t : targets)
        if (t.layer == mod.layer && t.proj == mod.proj) key = t.weight_key;
      SCOPED_TRACE(key);
      const TensorView& g = golden.get(key + ".merged");
      const std::vector<float> want = g.to_floats();
      const std::vector<float> got = merged_weight(m, mod);
      ASSERT_EQ(got.size(), want.size());
      EXPECT_LE(max_abs_diff(got.data(), want.data(), got.size()), atol);
      if (mod.kind == LoraKind::Experts) {
        EXPECT_EQ(g.shape, (std::vector<int64_t>{mod.experts, mod.out, mod.in}));
      }
      // delta alone, scaled
      const std::vector<float> d = lora_delta(mod, 0.5);
      const TensorStore base = TensorStore::open_folder(m.dir());
      const std::vector<float> w = base.get(key).to_floats();
      float err = 0;
      for (size_t i = 0; i < d.size(); ++i) err = std::max(err, std::fabs(w[i] + 2 * d[i] - want[i]));
      EXPECT_LE(err, 4 * atol);
    }
  }
}

TEST(LoraMerge, MergedFolderLoadsWithSameNamesAndDtypes) {
  for (const auto& fx : kFixtures) {
    SCOPED_TRACE(fx);
    Model m = load_model(fx);
    Adapter a = Adapter::load_peft(test::fixture(fx) + "/adapter", m);
    const std::string out = test::scratch("lora_merged_" + fx);
    fs::remove_all(out);
    std::vector<std::string> progress;
    MergeSummary s = merge_adapter(m, a, out, 1.0, false, [&](const std::string& p) { progress.push_back(p); });
    EXPECT_FALSE(progress.empty());
    EXPECT_EQ(s.modules, int64_t(a.modules.size()));
    EXPECT_EQ(s.tensors_merged, int64_t(a.modules.size()));
    EXPECT_EQ(s.files_copied, 1);  // config.json
    EXPECT_EQ(read_file(out + "/config.json"), read_file(m.dir() + "/config.json"));
    EXPECT_FALSE(fs::exists(out + ".partial-" + std::to_string(::getpid())));

    Model merged = Model::load(out);
    EXPECT_EQ(merged.key_prefix(), m.key_prefix());
    TensorStore bs = TensorStore::open_folder(m.dir()), ms = TensorStore::open_folder(out);
    ASSERT_EQ(bs.names(), ms.names());
    EXPECT_EQ(s.tensors_copied + s.tensors_merged, int64_t(bs.names().size()));
    std::set<std::string> adapted;
    for (const auto& t : adaptable_targets(m))
      if (a.find(t.layer, t.proj)) adapted.insert(t.weight_key);
    const double atol = golden_json(fx)["tolerances_for_float32_implementation"]["merged_atol"].get<double>();
    TensorStore golden = TensorStore::open_file(test::fixture(fx) + "/golden.safetensors");
    for (const auto& n : bs.names()) {
      const TensorView &x = bs.get(n), &y = ms.get(n);
      EXPECT_EQ(x.dtype, y.dtype) << n;
      EXPECT_EQ(x.shape, y.shape) << n;
      ASSERT_EQ(x.nbytes, y.nbytes) << n;
      if (!adapted.count(n)) {
        EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0) << n << " should be copied byte for byte";
        continue;
      }
      const std::vector<float> got = y.to_floats(), want = golden.get(n + ".merged").to_floats();
      if (y.dtype == DType::F32) {
        EXPECT_LE(max_abs_diff(got.data(), want.data(), got.size()), atol) << n;
      } else {
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_LE(std::fabs(got[i] - want[i]), std::fabs(want[i]) * (1.0f / 256) + atol) << n << "[" << i << "]";
      }
      EXPECT_NE(std::memcmp(x.data, y.data, x.nbytes), 0) << n << " should have changed";
    }
  }
}

TEST(LoraMerge, ScaleZeroReproducesTheBaseAndRefusesBadOutputs) {
  Model m = load_model("gemma3_causal_bf16");
  Adapter a = Adapter::load_peft(test::fixture("gemma3_causal_bf16") + "/adapter", m);
  const std::string out = fresh_dir("merge_zero");
  fs::remove(out);
  merge_adapter(m, a, out, 0.0);
  TensorStore bs = TensorStore::open_folder(m.dir()), ms = TensorStore::open_folder(out);
  for (const auto& n : bs.names())
    EXPECT_EQ(std::memcmp(bs.get(n).data, ms.get(n).data, bs.get(n).nbytes), 0) << n;

  // never over the model folder; not over a non-empty folder unless asked
  std::string e = error_of([&] { merge_adapter(m, a, m.dir(), 1.0, true); });
  EXPECT_TRUE(contains(e, "model folder itself")) << e;
  e = error_of([&] { merge_adapter(m, a, m.dir() + "/", 1.0, true); });
  EXPECT_TRUE(contains(e, "model folder itself")) << e;
  e = error_of([&] { merge_adapter(m, a, out, 1.0, false); });
  EXPECT_TRUE(contains(e, "not empty")) << e;
  merge_adapter(m, a, out, 1.0, true);
  TensorStore ms2 = TensorStore::open_folder(out);
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  EXPECT_NE(std::memcmp(bs.get(q).data, ms2.get(q).data, bs.get(q).nbytes), 0);
  EXPECT_TRUE(fs::exists(m.dir() + "/model.safetensors"));
}

TEST(LoraMerge, CommandLine) {
  const std::string out = test::scratch("lora_cli_merged");
  fs::remove_all(out);
  const std::string log = test::scratch("lora_cli_log");
  const std::string fx = test::fixture("gemma4_moe");
  std::string cmd = "'" + test::binary() + "' merge --model '" + fx + "/model' --adapter '" + fx + "/adapter' --out '" +
                    out + "' > '" + log + "' 2> '" + log + ".err'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(log + ".err");
  EXPECT_TRUE(contains(read_file(log), "merged 43 modules")) << read_file(log);
  Model merged = Model::load(out);
  EXPECT_EQ(merged.config().num_layers, 5);
  // refuses the model folder itself
  cmd = "'" + test::binary() + "' merge --model '" + fx + "/model' --adapter '" + fx + "/adapter' --out '" + fx +
        "/model' --force > '" + log + "' 2> '" + log + ".err'";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_TRUE(contains(read_file(log + ".err"), "model folder itself")) << read_file(log + ".err");
  cmd = "'" + test::binary() + "' merge --help > '" + log + "' 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_TRUE(contains(read_file(log), "--adapter"));
}

// ---------------------------------------------------------------------------------------------
// Target matching.

TEST(LoraTargets, PeftListAndRegexSemantics) {
  const json list = json::array({"q_proj", "mlp.down_proj"});
  EXPECT_TRUE(peft_module_matches(list, "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(peft_module_matches(list, "q_proj"));
  EXPECT_FALSE(peft_module_matches(list, "model.layers.0.self_attn.q_proj_x"));
  EXPECT_FALSE(peft_module_matches(list, "model.layers.0.self_attn.xq_proj"));
  EXPECT_TRUE(peft_module_matches(list, "model.layers.3.mlp.down_proj"));
  EXPECT_FALSE(peft_module_matches(list, "model.layers.3.mlpx.down_proj"));
  EXPECT_TRUE(peft_module_matches(json::array({"model.layers.0.self_attn.q_proj"}), "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(peft_module_matches(json::array({"layers.0.self_attn.q_proj"}), "model.layers.10.self_attn.q_proj"));
  // a string is a regex that must match the whole path
  EXPECT_FALSE(peft_module_matches(json("q_proj"), "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(peft_module_matches(json(".*q_proj"), "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(peft_module_matches(json(".*q_proj"), "model.layers.0.self_attn.q_proj_x"));
  EXPECT_TRUE(peft_module_matches(json(".*language_model.*\\.(q_proj|o_proj)"), "model.language_model.layers.2.self_attn.o_proj"));
  EXPECT_FALSE(peft_module_matches(json(".*language_model.*\\.(q_proj|o_proj)"), "model.layers.2.self_attn.o_proj"));
  EXPECT_FALSE(peft_module_matches(json(nullptr), "model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(peft_module_matches(json("all-linear"), "model.layers.0.mlp.up_proj"));
  EXPECT_TRUE(contains(error_of([] { peft_module_matches(json("(q_proj"), "x"); }), "(q_proj"));
  EXPECT_TRUE(contains(error_of([] { peft_module_matches(json(3), "x"); }), "target_modules"));
}

TEST(LoraTargets, FixtureConfigsSelectExactlyTheFixtureModules) {
  // create() with each fixture's own config selects the same modules, with the same PEFT key names
  // (including the nested ParamWrapper keys), as PEFT did.
  for (const auto& fx : kFixtures) {
    SCOPED_TRACE(fx);
    Model m = load_model(fx);
    Adapter ref = Adapter::load_peft(test::fixture(fx) + "/adapter", m);
    Adapter a = Adapter::create(m, ref.config, 1);
    ASSERT_EQ(a.modules.size(), ref.modules.size());
    for (size_t i = 0; i < a.modules.size(); ++i) {
      EXPECT_EQ(a.modules[i].key_a, ref.modules[i].key_a);
      EXPECT_EQ(a.modules[i].key_b, ref.modules[i].key_b);
      EXPECT_EQ(a.modules[i].shape_a(), ref.modules[i].shape_a());
      EXPECT_EQ(a.modules[i].shape_b(), ref.modules[i].shape_b());
      EXPECT_EQ(a.modules[i].scaling, ref.modules[i].scaling);
    }
  }
}

TEST(LoraTargets, AdaptableModulesSkipRouterSharedKvAndKeqV) {
  {
    Model m = load_model("gemma4_small");  // layers 4..7 KV-shared
    const auto mods = adaptable_modules(m);
    for (int l = 0; l < 8; ++l) {
      std::string p = "model.language_model.layers.";
      p += std::to_string(l);
      p += ".self_attn.";
      const bool has_k = std::count(mods.begin(), mods.end(), p + "k_proj") == 1;
      EXPECT_EQ(has_k, l < 4) << l;
      EXPECT_EQ(std::count(mods.begin(), mods.end(), p + "v_proj") == 1, l < 4) << l;
      EXPECT_EQ(std::count(mods.begin(), mods.end(), p + "q_proj"), 1) << l;
    }
    LoraConfig c;
    c.target_modules = ".*";
    Adapter a = Adapter::create(m, c, 7);
    for (const auto& mod : a.modules)
      if (proj_name(mod.proj) == "k_proj" || proj_name(mod.proj) == "v_proj") {
        EXPECT_LT(mod.layer, 4) << mod.target;
      }
    EXPECT_EQ(a.modules.size(), 8u * 5 + 4u * 2);
  }
  {
    Model m = load_model("gemma4_moe");  // k_eq_v on full layers 2 and 4; router on every layer
    const auto mods = adaptable_modules(m);
    for (const auto& p : mods) EXPECT_FALSE(contains(p, "router")) << p;
    EXPECT_EQ(std::count(mods.begin(), mods.end(), "model.language_model.layers.2.self_attn.v_proj"), 0);
    EXPECT_EQ(std::count(mods.begin(), mods.end(), "model.language_model.layers.1.self_attn.v_proj"), 1);
    EXPECT_EQ(std::count(mods.begin(), mods.end(), "model.language_model.layers.3.experts.gate_up_proj"), 1);
    LoraConfig c;
    c.target_modules = ".*";  // catch-all regex: still never the router
    c.target_parameters = {"experts.gate_up_proj", "experts.down_proj"};
    Adapter a = Adapter::create(m, c, 7);
    EXPECT_EQ(a.modules.size(), mods.size());
    for (const auto& mod : a.modules) EXPECT_FALSE(contains(mod.target, "router"));
    EXPECT_EQ(count_proj(a, "v_proj"), 3u);
    c.target_modules = json::array({"router.proj"});
    EXPECT_TRUE(contains(error_of([&] { Adapter::create(m, c, 1); }), "router"));
    c.target_modules = json::array({"q_proj"});
    c.target_parameters = {"router.proj.weight"};
    EXPECT_TRUE(contains(error_of([&] { Adapter::create(m, c, 1); }), "router"));
    c.target_parameters = {"experts.nothing"};
    EXPECT_TRUE(contains(error_of([&] { Adapter::create(m, c, 1); }), "experts.nothing"));
  }
}

TEST(LoraTargets, ExcludeModulesAndLayersToTransform) {
  Model m = load_model("gemma3_causal");
  LoraConfig c;
  c.target_modules = json::array({"q_proj", "k_proj"});
  c.exclude_modules = json::array({"model.layers.0.self_attn.q_proj"});
  Adapter a = Adapter::create(m, c, 1);
  EXPECT_EQ(a.find(0, Proj::q_proj), nullptr);
  EXPECT_NE(a.find(0, Proj::k_proj), nullptr);
  EXPECT_NE(a.find(1, Proj::q_proj), nullptr);
  EXPECT_EQ(a.modules.size(), 13u);
  c.exclude_modules = ".*layers\\.1\\..*";  // regex: full match
  a = Adapter::create(m, c, 1);
  EXPECT_EQ(a.find(1, Proj::q_proj), nullptr);
  EXPECT_EQ(a.find(1, Proj::k_proj), nullptr);
  EXPECT_EQ(a.modules.size(), 12u);
  c.exclude_modules = nullptr;
  c.layers_to_transform = {2, 5};
  a = Adapter::create(m, c, 1);
  EXPECT_EQ(a.modules.size(), 4u);
  EXPECT_NE(a.find(5, Proj::k_proj), nullptr);
  c.layers_to_transform = {};
  c.target_modules = json::array({"nothing_like_this"});
  EXPECT_TRUE(contains(error_of([&] { Adapter::create(m, c, 1); }), "selects no module"));
}

TEST(LoraTargets, RankAndAlphaPatternsAndRsLora) {
  Model m = load_model("gemma3_causal");
  LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.target_modules = json::array({"q_proj", "v_proj", "down_proj"});
  c.rank_pattern = {{"q_proj", 8}, {"proj", 2}};  // "proj" must not match "...q_proj" (needs a '.' before it)
  c.alpha_pattern = {{"model\\.layers\\.3\\.mlp\\.down_proj", 32.0}};
  Adapter a = Adapter::create(m, c, 1);
  for (const auto& mod : a.modules) {
    SCOPED_TRACE(mod.target);
    const int64_t r = proj_name(mod.proj) == "q_proj" ? 8 : 4;
    EXPECT_EQ(mod.r, r);
    EXPECT_EQ(mod.A.size(), size_t(r * mod.in));
    const double alpha = (mod.layer == 3 && proj_name(mod.proj) == "down_proj") ? 32.0 : 8.0;
    EXPECT_FLOAT_EQ(mod.scaling, float(alpha / double(r)));
  }
  c.use_rslora = true;
  c.rank_pattern.clear();
  c.alpha_pattern.clear();
  a = Adapter::create(m, c, 1);
  for (const auto& mod : a.modules) EXPECT_FLOAT_EQ(mod.scaling, 4.0f);  // 8 / sqrt(4)
  EXPECT_DOUBLE_EQ(lora_scaling(12, 6, true), 12 / std::sqrt(6.0));
  EXPECT_DOUBLE_EQ(lora_scaling(12, 6, false), 2.0);
  // rank_pattern round trip through a PEFT folder
  c.use_rslora = false;
  c.rank_pattern = {{"v_proj", 2}};
  a = Adapter::create(m, c, 3);
  const std::string d = fresh_dir("rank_pattern");
  a.save_peft(d, "x");
  Adapter b = Adapter::load_peft(d, m);
  ASSERT_EQ(b.modules.size(), a.modules.size());
  EXPECT_EQ(b.find(2, Proj::v_proj)->r, 2);
  EXPECT_EQ(b.find(2, Proj::q_proj)->r, 4);
  EXPECT_EQ(b.find(2, Proj::v_proj)->A, a.find(2, Proj::v_proj)->A);
}

TEST(LoraTargets, MaxTextPathsTranslated) {
  EXPECT_EQ(translate_maxtext_path("decoder/layers_3/self_attention/query"), "layers.3.self_attn.q_proj");
  EXPECT_EQ(translate_maxtext_path("decoder/layers/5/mlp/wo"), "layers.5.mlp.down_proj");
  EXPECT_EQ(translate_maxtext_path("params-decoder-layers_3-mlp-wi_0-kernel"), "layers.3.mlp.gate_proj");
  EXPECT_EQ(translate_maxtext_path("decoder/layers_0/self_attention/value/kernel_lora_a"), "layers.0.self_attn.v_proj");
  EXPECT_EQ(translate_maxtext_path("self_attention/out"), "self_attn.o_proj");
  EXPECT_EQ(translate_maxtext_path("self_attention/key"), "self_attn.k_proj");
  EXPECT_EQ(translate_maxtext_path("wi_1"), "up_proj");
  EXPECT_EQ(translate_maxtext_path("mlp/moe_block/shared_experts/wo"), "mlp.down_proj");
  EXPECT_EQ(translate_maxtext_path("decoder/layers_2/mlp/moe_block/MoeBlock_0/wi_1"), "layers.2.experts.gate_up_proj");
  EXPECT_EQ(translate_maxtext_path("decoder/layers_2/mlp/moe_block/MoeBlock_0/wo"), "layers.2.experts.down_proj");
  EXPECT_EQ(translate_maxtext_path("decoder/layers_2/mlp/moe_block/MoeBlock_0/gate"), "layers.2.router.proj");
  EXPECT_EQ(translate_maxtext_path("model.layers.0.self_attn.q_proj"), "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(translate_maxtext_path("q_proj"), "q_proj");
  EXPECT_TRUE(contains(error_of([] { translate_maxtext_path("decoder/layers/layers_2/self_attention/query"); }),
                       "scanned"));
  EXPECT_TRUE(contains(error_of([] { translate_maxtext_path("decoder/scanned_blocks/global_layer/self_attention/out"); }),
                       "scanned"));
  EXPECT_TRUE(contains(error_of([] { translate_maxtext_path("decoder/layers_1/foo/bar"); }), "foo"));
  // list entries in MaxText style match their HF modules
  EXPECT_TRUE(peft_module_matches(json::array({"decoder/layers_3/self_attention/query"}), "model.layers.3.self_attn.q_proj"));
  EXPECT_FALSE(peft_module_matches(json::array({"decoder/layers_3/self_attention/query"}), "model.layers.13.self_attn.q_proj"));
  EXPECT_TRUE(peft_module_matches(json::array({"mlp/wi_0"}), "model.language_model.layers.1.mlp.gate_proj"));
}

TEST(LoraTargets, MaxTextTargetsSelectModules) {
  {
    Model m = load_model("gemma3_causal");  // 7 layers: one scanned block of 6 + 1 remainder
    LoraConfig c;
    c.target_modules = json::array({"self_attention/query", "mlp/wo", "decoder/layers_6/self_attention/out"});
    Adapter a = Adapter::create(m, c, 1);
    EXPECT_EQ(count_proj(a, "q_proj"), 7u);
    EXPECT_EQ(count_proj(a, "down_proj"), 7u);
    EXPECT_EQ(count_proj(a, "o_proj"), 1u);
    EXPECT_NE(a.find(6, Proj::o_proj), nullptr);
    // MaxText's own default regex for gemma3 (lora_module_path.yml), matched against MaxText module paths
    c.target_modules = "decoder/(scanned_blocks|layers_remainder|layers)/.*(self_attention/(query|key|value|out)|mlp/(wi_0|wi_1|wo|gate|up|down))";
    a = Adapter::create(m, c, 1);
    EXPECT_EQ(a.modules.size(), 49u);
  }
  {
    Model m = load_model("gemma4_moe");
    LoraConfig c;
    // MaxText's gemma4 default: attention and the shared-expert MLP; routed experts / router never
    c.target_modules = "decoder/((scanned_blocks|layers_remainder)/)?layers.*/.*(self_attention/(query|key|value|out)|mlp/.*(wi_0|wi_1|wo))";
    Adapter a = Adapter::create(m, c, 1);
    EXPECT_EQ(a.modules.size(), 5u * 6 + 3u);
    EXPECT_EQ(count_proj(a, "experts.gate_up_proj"), 0u);
  }
  {
    Model m = load_model("gemma4_dense");  // 6 layers = one scanned block; full layers 2 and 5
    LoraConfig c;
    c.target_modules = "decoder/scanned_blocks/global_layer/self_attention/out";
    Adapter a = Adapter::create(m, c, 1);
    ASSERT_EQ(a.modules.size(), 2u);
    EXPECT_NE(a.find(2, Proj::o_proj), nullptr);
    EXPECT_NE(a.find(5, Proj::o_proj), nullptr);
  }
}

// ---------------------------------------------------------------------------------------------
// create(): PEFT initialisation, determinism, parameter count.

TEST(LoraCreate, PeftInitSeededAndCounted) {
  Model m = load_model("gemma4_moe");
  const LoraConfig def = default_lora_config(m);
  EXPECT_EQ(def.target_parameters, (std::vector<std::string>{"experts.gate_up_proj", "experts.down_proj"}));
  LoraConfig c;  // null target_modules: the model default (all projections + experts)
  c.r = 4;
  c.alpha = 8;
  Adapter a = Adapter::create(m, c, 42);
  EXPECT_EQ(a.modules.size(), adaptable_modules(m).size());
  EXPECT_EQ(a.config.target_modules, def.target_modules);
  const ModelConfig& mc = m.config();
  int64_t want = 0;
  for (const auto& s : m.specs()) {
    const int64_t H = mc.hidden_size, hd = s.head_dim, nq = s.num_heads * hd, nkv = s.num_kv_heads * hd;
    want += 4 * (H + nq) + 4 * (H + nq);          // q, o
    want += 4 * (H + nkv) * (s.k_eq_v ? 1 : 2);   // k (+ v)
    want += 3 * 4 * (H + s.intermediate);         // gate, up, down
    const int64_t E = mc.num_experts, I = mc.moe_intermediate_size;
    want += 4 * E * (H + 2 * I) + 4 * E * (I + H);  // experts gate_up [E,2I,H], down [E,H,I]
  }
  EXPECT_EQ(a.num_parameters(), want);
  for (const auto& mod : a.modules) {
    SCOPED_TRACE(mod.target);
    for (float b : mod.B) ASSERT_EQ(b, 0.0f);
    const float bound = float(1.0 / std::sqrt(double(mod.in)));
    float lo = 1, hi = -1;
    for (float x : mod.A) {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    EXPECT_GE(lo, -bound);
    EXPECT_LE(hi, bound);
    EXPECT_LT(lo, -0.8f * bound);  // spread over the whole interval
    EXPECT_GT(hi, 0.8f * bound);
    EXPECT_FLOAT_EQ(mod.scaling, 2.0f);
  }
  // seeded: same seed same values, other seed other values; a module's values depend only on its path
  Adapter b = Adapter::create(m, c, 42), d = Adapter::create(m, c, 43);
  for (size_t i = 0; i < a.modules.size(); ++i) {
    EXPECT_EQ(a.modules[i].A, b.modules[i].A);
    EXPECT_NE(a.modules[i].A, d.modules[i].A);
  }
  LoraConfig only_q = c;
  only_q.target_modules = json::array({"q_proj"});
  only_q.target_parameters.clear();
  Adapter q = Adapter::create(m, only_q, 42);
  EXPECT_EQ(q.find(3, Proj::q_proj)->A, a.find(3, Proj::q_proj)->A);
  // a created adapter saves and loads back as PEFT
  const std::string dir = fresh_dir("created");
  a.save_peft(dir, "base");
  Adapter l = Adapter::load_peft(dir, m);
  ASSERT_EQ(l.modules.size(), a.modules.size());
  EXPECT_EQ(l.find(4, Proj::experts_down_proj)->A, a.find(4, Proj::experts_down_proj)->A);
  EXPECT_EQ(json::parse(read_file(dir + "/adapter_config.json"))["target_parameters"],
            json::array({"experts.gate_up_proj", "experts.down_proj"}));
}

TEST(LoraCreate, GaussianInit) {
  Model m = load_model("gemma3_causal");
  LoraConfig c;
  c.r = 4;
  c.init = LoraInit::Gaussian;
  Adapter a = Adapter::create(m, c, 5);
  double s = 0, s2 = 0;
  size_t n = 0;
  for (const auto& mod : a.modules)
    for (float x : mod.A) {
      s += x;
      s2 += double(x) * x;
      ++n;
    }
  const double mean = s / double(n), sd = std::sqrt(s2 / double(n) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(sd, 0.25, 0.01);  // std 1/r
  c.init = LoraInit::Other;
  c.init_other = "pissa";
  EXPECT_TRUE(contains(error_of([&] { Adapter::create(m, c, 1); }), "init"));
  c.init = LoraInit::Kaiming;
  c.r = 0;
  EXPECT_TRUE(contains(error_of([&] { Adapter::create(m, c, 1); }), "r must be"));
}

// ---------------------------------------------------------------------------------------------
// Bad input: each a gt::Error naming the file / key.

TEST(LoraErrors, MissingAndMalformedConfig) {
  Model m = load_model("gemma3_causal");
  std::string d = edited_adapter("gemma3_causal", "no_config", [](auto&, auto&, auto&) {});
  fs::remove(d + "/adapter_config.json");
  std::string e = error_of([&] { Adapter::load_peft(d, m); });
  EXPECT_TRUE(contains(e, d + "/adapter_config.json")) << e;
  EXPECT_TRUE(contains(e, "not found")) << e;

  write_file_atomic(d + "/adapter_config.json", "{\"r\": 8, \"lora_alpha\": ");
  e = error_of([&] { Adapter::load_peft(d, m); });
  EXPECT_TRUE(contains(e, "adapter_config.json")) << e;
  EXPECT_TRUE(contains(e, "not valid JSON")) << e;

  e = error_of([&] { Adapter::load_peft(d + "/nope", m); });
  EXPECT_TRUE(contains(e, "does not exist")) << e;

  d = edited_adapter("gemma3_causal", "no_weights", [](auto&, auto&, auto&) {});
  fs::remove(d + "/adapter_model.safetensors");
  e = error_of([&] { Adapter::load_peft(d, m); });
  EXPECT_TRUE(contains(e, "adapter_model.safetensors")) << e;
}

TEST(LoraErrors, UnsupportedOptions) {
  Model m = load_model("gemma3_causal");
  const std::vector<std::pair<std::string, json>> cases = {
      {"use_dora", true},           {"fan_in_fan_out", true},     {"lora_bias", true},
      {"modules_to_save", json::array({"lm_head"})},            {"bias", "all"},
      {"peft_type", "IA3"},         {"r", "eight"},               {"init_lora_weights", "pissa"},
      {"trainable_token_indices", json::array({1, 2})},
  };
  for (const auto& [field, value] : cases) {
    SCOPED_TRACE(field);
    const std::string d = edited_adapter("gemma3_causal", "opt_" + field,
                                         [&, f = field, v = value](auto&, json& cfg, auto&) { cfg[f] = v; });
    const std::string e = error_of([&] { Adapter::load_peft(d, m); });
    EXPECT_TRUE(contains(e, d + "/adapter_config.json")) << e;
    EXPECT_TRUE(contains(e, field)) << e;
  }
  // an unknown option is a warning, not an error
  const std::string d = edited_adapter("gemma3_causal", "opt_unknown", [](auto&, json& cfg, auto&) { cfg["shiny_new_option"] = 3; });
  Adapter a = Adapter::load_peft(d, m);
  ASSERT_EQ(a.warnings.size(), 1u);
  EXPECT_TRUE(contains(a.warnings[0], "shiny_new_option"));
}

TEST(LoraErrors, BadTensors) {
  Model m = load_model("gemma3_causal");
  const std::string qa = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  const std::string qb = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
  auto expect_error = [&](const std::string& name, const std::function<void(std::vector<TensorOut>&, json&, std::vector<std::vector<float>>&)>& edit,
                          const std::vector<std::string>& parts) {
    SCOPED_TRACE(name);
    const std::string d = edited_adapter("gemma3_causal", name, edit);
    const std::string e = error_of([&] { Adapter::load_peft(d, m); });
    EXPECT_TRUE(contains(e, d + "/adapter_model.safetensors")) << e;
    for (const auto& p : parts) EXPECT_TRUE(contains(e, p)) << "missing '" << p << "' in: " << e;
  };
  // wrong shape: lora_A [r+1, in]
  expect_error("wrong_shape", [&](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
    for (auto& t : ts)
      if (t.name == qa) {
        keep.emplace_back(size_t(9 * 64), 0.5f);
        t = tensor_out_f32(qa, {9, 64}, keep.back());
      }
  }, {qa, "[9, 64]", "expected [8, 64]"});
  // unknown keys
  expect_error("unknown_key", [&](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
    keep.emplace_back(4, 0.0f);
    ts.push_back(tensor_out_f32("base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight", {2, 2}, keep.back()));
  }, {"lora_C", "unknown key"});
  expect_error("foreign_key", [&](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
    keep.emplace_back(4, 0.0f);
    ts.push_back(tensor_out_f32("something.else", {2, 2}, keep.back()));
  }, {"something.else"});
  // a module the model lacks
  expect_error("no_layer", [&](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
    keep.emplace_back(8 * 64, 0.0f);
    ts.push_back(tensor_out_f32("base_model.model.model.layers.99.self_attn.q_proj.lora_A.weight", {8, 64}, keep.back()));
    keep.emplace_back(96 * 8, 0.0f);
    ts.push_back(tensor_out_f32("base_model.model.model.layers.99.self_attn.q_proj.lora_B.weight", {96, 8}, keep.back()));
  }, {"layers.99", "7 layers"});
  expect_error("lm_head", [&](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
    keep.emplace_back(8 * 64, 0.0f);
    ts.push_back(tensor_out_f32("base_model.model.lm_head.lora_A.weight", {8, 64}, keep.back()));
    ts.push_back(tensor_out_f32("base_model.model.lm_head.lora_B.weight", {64, 8}, keep.back()));
  }, {"lm_head", "not a decoder-layer module"});
  // half a pair
  expect_error("no_partner", [&](std::vector<TensorOut>& ts, json&, auto&) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const TensorOut& t) { return t.name == qb; }), ts.end());
  }, {qa, "lora_B"});
  // a key the config does not select
  expect_error("not_selected", [&](std::vector<TensorOut>&, json& cfg, auto&) {
    cfg["target_modules"] = json::array({"k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
  }, {qa, "does not select"});
  // a non-float dtype
  expect_error("int_tensor", [&](std::vector<TensorOut>& ts, json&, auto&) {
    for (auto& t : ts)
      if (t.name == qa) t.dtype = DType::I32;
  }, {qa, "I32"});
}

TEST(LoraErrors, MoeAndSharedKvKeys) {
  {
    Model m = load_model("gemma4_moe");
    const std::string d = edited_adapter("gemma4_moe", "router", [](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
      keep.emplace_back(4 * 64, 0.0f);
      ts.push_back(tensor_out_f32("base_model.model.model.language_model.layers.0.router.proj.lora_A.weight", {4, 64}, keep.back()));
      keep.emplace_back(8 * 4, 0.0f);
      ts.push_back(tensor_out_f32("base_model.model.model.language_model.layers.0.router.proj.lora_B.weight", {8, 4}, keep.back()));
    });
    const std::string e = error_of([&] { Adapter::load_peft(d, m); });
    EXPECT_TRUE(contains(e, "router.proj.lora_A.weight")) << e;
    EXPECT_TRUE(contains(e, "never adapted")) << e;
    // expert tensors of the wrong shape
    const std::string k = "base_model.model.model.language_model.layers.1.experts.base_layer.lora_A.weight";
    const std::string d2 = edited_adapter("gemma4_moe", "experts_shape", [&](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
      for (auto& t : ts)
        if (t.name == k) {
          keep.emplace_back(size_t(4 * 8 * 63), 0.0f);
          t = tensor_out_f32(k, {32, 63}, keep.back());
        }
    });
    const std::string e2 = error_of([&] { Adapter::load_peft(d2, m); });
    EXPECT_TRUE(contains(e2, k)) << e2;
    EXPECT_TRUE(contains(e2, "[32, 63]")) << e2;
    // experts without target_parameters
    const std::string d3 = edited_adapter("gemma4_moe", "experts_untargeted", [](auto&, json& cfg, auto&) { cfg["target_parameters"] = nullptr; });
    const std::string e3 = error_of([&] { Adapter::load_peft(d3, m); });
    EXPECT_TRUE(contains(e3, "target_parameters")) << e3;
  }
  {
    Model m = load_model("gemma4_small");  // layer 5 is KV-shared
    const std::string d = edited_adapter("gemma4_small", "shared_kv", [](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
      keep.emplace_back(6 * 64, 0.0f);
      ts.push_back(tensor_out_f32("base_model.model.model.language_model.layers.5.self_attn.k_proj.lora_A.weight", {6, 64}, keep.back()));
      keep.emplace_back(32 * 6, 0.0f);
      ts.push_back(tensor_out_f32("base_model.model.model.language_model.layers.5.self_attn.k_proj.lora_B.weight", {32, 6}, keep.back()));
    });
    const std::string e = error_of([&] { Adapter::load_peft(d, m); });
    EXPECT_TRUE(contains(e, "layers.5.self_attn.k_proj")) << e;
    EXPECT_TRUE(contains(e, "KV-shared")) << e;
  }
}

TEST(LoraLoad, HalfPrecisionTensorsAndVisionKeys) {
  Model m = load_model("gemma3_conditional");
  Adapter ref = Adapter::load_peft(test::fixture("gemma3_conditional") + "/adapter", m);
  std::vector<std::vector<uint16_t>> halves;
  const std::string d = edited_adapter("gemma3_conditional", "bf16", [&](std::vector<TensorOut>& ts, json&, std::vector<std::vector<float>>& keep) {
    halves.reserve(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      auto& t = ts[i];
      const float* f = static_cast<const float*>(t.data);
      const size_t n = t.nbytes / 4;
      halves.emplace_back(n);
      const bool f16 = i % 2 == 1;
      for (size_t k = 0; k < n; ++k) halves.back()[k] = f16 ? f32_to_f16(f[k]) : f32_to_bf16(f[k]);
      t.dtype = f16 ? DType::F16 : DType::BF16;
      t.data = halves.back().data();
      t.nbytes = n * 2;
    }
    // a vision-tower key (PEFT lists like ["q_proj", ...] also adapt the tower): skipped with a warning
    keep.emplace_back(4 * 32, 0.0f);
    ts.push_back(tensor_out_f32("base_model.model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight", {4, 32}, keep.back()));
  });
  Adapter a = Adapter::load_peft(d, m);
  ASSERT_EQ(a.modules.size(), ref.modules.size());
  ASSERT_EQ(a.warnings.size(), 1u);
  EXPECT_TRUE(contains(a.warnings[0], "vision_tower"));
  for (size_t i = 0; i < a.modules.size(); ++i) {
    const auto &x = a.modules[i], &y = ref.modules[i];
    ASSERT_EQ(x.A.size(), y.A.size());
    for (size_t k = 0; k < x.A.size(); ++k) ASSERT_NEAR(x.A[k], y.A[k], std::fabs(y.A[k]) / 128 + 1e-7f);
    for (size_t k = 0; k < x.B.size(); ++k) ASSERT_NEAR(x.B[k], y.B[k], std::fabs(y.B[k]) / 128 + 1e-7f);
  }
}
