// Every preset scaled to any layer count is a valid model: layer specs build (KV-shared layers
// find a donor of their type), and the KV-sharing proportion is kept where it can be.
#include <gtest/gtest.h>

#include "gemmatune/model/config.h"
#include "gemmatune/model/model.h"
#include "gemmatune/model/presets.h"

namespace gt {
namespace {

TEST(PresetsScaled, EveryLayerCountBuildsValidSpecs) {
  for (const std::string& name : preset_names())
    for (int64_t layers = 1; layers <= 14; ++layers) {
      const nlohmann::json j = preset_config(name, layers, 512);
      ModelConfig c;
      ASSERT_NO_THROW(c = parse_config(j, name)) << name << " --layers " << layers;
      EXPECT_EQ(c.num_layers, layers);
      std::vector<LayerSpec> specs;
      ASSERT_NO_THROW(specs = build_layer_specs(c)) << name << " --layers " << layers;
      for (const LayerSpec& s : specs) {
        if (s.kv_donor >= 0) {
          EXPECT_LT(s.kv_donor, s.index);
          EXPECT_EQ(specs[size_t(s.kv_donor)].type, s.type) << name << " layer " << s.index;
        }
      }
    }
}

TEST(PresetsScaled, KvSharingKeptWhenTheScaledModelAllowsIt) {
  // E2B: 20 of 35 layers share K/V; scaled to 10 layers (two 5-layer blocks) 5 still share.
  const nlohmann::json e2b = preset_config("gemma4-e2b", 10, 512);
  EXPECT_EQ(e2b["text_config"]["num_kv_shared_layers"].get<int64_t>(), 5);
  // At 5 layers the only full-attention layer is the last one: it cannot share, so none does.
  const nlohmann::json e2b5 = preset_config("gemma4-e2b", 5, 512);
  EXPECT_EQ(e2b5["text_config"]["num_kv_shared_layers"].get<int64_t>(), 0);
}

TEST(PresetsScaled, IntegerFieldsAreWrittenAsIntegers) {
  // transformers' typed configs refuse 32.0 where they declare int (query_pre_attn_scalar).
  for (const std::string& name : preset_names()) {
    const nlohmann::json j = preset_config(name);
    const nlohmann::json& t = j.contains("text_config") ? j["text_config"] : j;
    for (const char* k : {"query_pre_attn_scalar", "hidden_size", "intermediate_size", "num_hidden_layers", "head_dim",
                          "num_attention_heads", "num_key_value_heads", "sliding_window", "vocab_size",
                          "max_position_embeddings", "num_kv_shared_layers", "hidden_size_per_layer_input"})
      if (t.contains(k)) {
        EXPECT_TRUE(t[k].is_number_integer()) << name << " " << k << " = " << t[k].dump();
      }
    for (const char* k : {"rms_norm_eps"}) EXPECT_TRUE(t[k].is_number_float()) << name << " " << k;
  }
}

}  // namespace
}  // namespace gt
