// libFuzzer target: a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)
// loaded against a tiny model, as `chat --adapter`, `generate --adapter` and `merge` load one.
// The input is a selector byte, then adapter_config.json, gt_fuzz::kFileSeparator and the bytes of
// adapter_model.safetensors (the folder has no safetensors file when the separator is missing).
// The selector (byte % 3) picks one of three tiny random models written at start-up with the
// presets' code (`gemmatune init-model`, vocabulary 16): Gemma 3 (`tiny`, 2 layers), Gemma 4 with
// KV sharing and per-layer embeddings (`gemma4-tiny`) and Gemma 4 MoE with k_eq_v and routed
// experts (`gemma4-tiny-moe`, 2 layers), so the adapter's keys, targets, ranks and shapes are
// validated against real layouts. An adapter that loads is saved with save_peft and loaded again.
// gt::Error is the expected way to fail; anything else -- a crash, a sanitizer report, another
// exception (nlohmann::json's, std::stoll's, std::regex's), a hang, runaway memory -- is a bug.
//
// GT_FUZZ_WRITE_SEEDS=DIR fuzz_adapter: writes seed inputs (adapters made by Adapter::create for
// each model with several LoRA configs) into DIR and exits; scripts/fuzz.sh seeds the corpus so.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_files.h"
#include "gemmatune/io/safetensors.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/model.h"
#include "gemmatune/model/presets.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace {

struct Models {
  std::vector<std::unique_ptr<gt::Model>> models;
  Models() {
    try {
      int i = 0;
      for (auto [preset, layers] : {std::pair{"tiny", 2}, {"gemma4-tiny", 0}, {"gemma4-tiny-moe", 2}}) {
        gt::InitOptions o;
        o.preset = preset;
        o.layers = layers;
        o.vocab = 16;
        o.seed = uint64_t(i++);
        o.out_dir = gt_fuzz::fresh_dir(std::string("base-") + preset);
        gt::init_model(o);
        models.push_back(std::make_unique<gt::Model>(gt::Model::load(o.out_dir)));
      }
    } catch (const gt::Error& e) {
      std::fprintf(stderr, "fuzz_adapter: cannot create the tiny models: %s\n", e.what());
      std::abort();
    }
  }
};

const Models& models() {
  static const Models m;
  return m;
}

std::string seed_input(char selector, const std::string& adapter_dir) {
  return std::string(1, selector) + gt::read_file(adapter_dir + "/adapter_config.json") +
         std::string(gt_fuzz::kFileSeparator) + gt::read_file(adapter_dir + "/adapter_model.safetensors");
}

// Rewrites a safetensors file with its F32 tensors in BF16.
void to_bf16(const std::string& path) {
  std::vector<std::vector<uint16_t>> keep;
  std::vector<gt::TensorOut> ts;
  {
    gt::SafetensorsFile f(path);
    keep.reserve(f.tensors().size());
    for (const auto& [name, v] : f.tensors()) {
      std::vector<uint16_t> h;
      for (float x : v.to_floats()) h.push_back(gt::f32_to_bf16(x));
      keep.push_back(std::move(h));
      ts.push_back(gt::TensorOut{name, gt::DType::BF16, v.shape, keep.back().data(), keep.back().size() * 2});
    }
  }
  gt::write_safetensors(path, ts);
}

void write_seeds(const std::string& out) {
  const nlohmann::json configs[] = {
      {{"r", 1}, {"lora_alpha", 2}, {"target_modules", {"q_proj", "o_proj"}}, {"layers_to_transform", {0}}},
      {{"r", 2}, {"lora_alpha", 4}, {"use_rslora", true}, {"target_modules", ".*\\.layers\\.1\\.(self_attn|mlp)\\.(v|k|down)_proj"}},
      {{"r", 1}, {"lora_alpha", 16}, {"target_modules", "all-linear"}, {"rank_pattern", {{"q_proj", 2}}},
       {"alpha_pattern", {{"down_proj", 3}}}, {"exclude_modules", ".*layers\\.([1-9]|0\\.mlp).*"}},
      {{"r", 1}, {"lora_alpha", 1}, {"target_modules", {"decoder/layers_0/mlp/wo", "self_attention/query"}}},
      {{"r", 1}, {"lora_alpha", 8}, {"target_modules", {"o_proj"}},
       {"target_parameters", {"experts.gate_up_proj", "experts.down_proj"}}, {"layers_to_transform", {1}}},
  };
  int n = 0;
  for (size_t mi = 0; mi < models().models.size(); ++mi) {
    const gt::Model& m = *models().models[mi];
    for (const auto& cj : configs) {
      try {
        gt::LoraConfig c = gt::lora_config_from_peft_json(cj, "seed config");
        gt::Adapter a = gt::Adapter::create(m, c, uint64_t(n));
        const std::string dir = gt_fuzz::fresh_dir("seed-adapter");
        a.save_peft(dir, m.dir());
        if (&cj != &configs[0]) to_bf16(dir + "/adapter_model.safetensors");  // F32 and BF16 seeds; smaller
        gt_fuzz::write_bytes(out + "/adapter-" + std::to_string(n++), seed_input(char('0' + mi), dir));
      } catch (const gt::Error&) {
        // a config that does not apply to this model (e.g. experts on a dense one)
      }
    }
  }
  std::fprintf(stderr, "fuzz_adapter: wrote %d seeds into %s\n", n, out.c_str());
}

// Bitwise (NaN payloads included: the tensors are copied, never computed on).
bool same_bits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && (x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* out = std::getenv("GT_FUZZ_WRITE_SEEDS")) {
    write_seeds(out);
    std::exit(0);
  }
  (void)models();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const gt::Model& m = *models().models[data[0] % models().models.size()];
  const auto parts = gt_fuzz::split_files(data + 1, size - 1, 2);
  const std::string dir = gt_fuzz::fresh_dir("adapter");
  gt_fuzz::write_bytes(dir + "/adapter_config.json", parts[0]);
  if (parts.size() > 1) gt_fuzz::write_bytes(dir + "/adapter_model.safetensors", parts[1]);
  gt::Adapter a;
  try {
    a = gt::Adapter::load_peft(dir, m);
  } catch (const gt::Error&) {
    return 0;
  }
  (void)a.num_parameters();
  // What was accepted must be written and read back identically.
  const std::string again = gt_fuzz::fresh_dir("adapter-again");
  try {
    a.save_peft(again, m.dir());
    gt::Adapter b = gt::Adapter::load_peft(again, m);
    if (b.modules.size() != a.modules.size()) {
      std::fprintf(stderr, "fuzz_adapter: %zu modules loaded, %zu after save_peft + load_peft\n", a.modules.size(),
                   b.modules.size());
      std::abort();
    }
    for (size_t i = 0; i < a.modules.size(); ++i)
      if (!same_bits(a.modules[i].A, b.modules[i].A) || !same_bits(a.modules[i].B, b.modules[i].B) ||
          !same_bits({a.modules[i].scaling}, {b.modules[i].scaling}) || a.modules[i].target != b.modules[i].target) {
        std::fprintf(stderr, "fuzz_adapter: module %s differs after save_peft + load_peft\n", a.modules[i].target.c_str());
        std::abort();
      }
  } catch (const gt::Error& e) {
    std::fprintf(stderr, "fuzz_adapter: an accepted adapter does not survive save_peft + load_peft: %s\n", e.what());
    std::abort();
  }
  return 0;
}
