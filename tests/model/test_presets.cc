// model/presets: the named presets write the published shapes (config.json as transformers
// writes it), and parse back into the engine's config.
#include "gemmatune/model/presets.h"

#include <gtest/gtest.h>

#include "gemmatune/model/config.h"
#include "gemmatune/util/error.h"

using namespace gt;
using json = nlohmann::json;

TEST(Presets, NamesAndUnknown) {
  const auto names = preset_names();
  EXPECT_EQ(names, (std::vector<std::string>{"tiny", "gemma3-270m", "gemma3-1b", "gemma3-4b", "gemma4-tiny",
                                             "gemma4-tiny-moe", "gemma4-e2b", "gemma4-e4b", "gemma4-26b-a4b",
                                             "gemma4-31b"}));
  for (const auto& n : names) EXPECT_NO_THROW(parse_config(preset_config(n), n)) << n;
  try {
    preset_config("gemma5");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gemma4-31b"), std::string::npos) << e.what();
  }
}

TEST(Presets, Gemma3Values) {
  const json j = preset_config("gemma3-1b");
  EXPECT_EQ(j["architectures"][0], "Gemma3ForCausalLM");
  EXPECT_EQ(j["num_hidden_layers"], 26);
  EXPECT_EQ(j["hidden_size"], 1152);
  EXPECT_EQ(j["intermediate_size"], 6912);
  EXPECT_EQ(j["num_attention_heads"], 4);
  EXPECT_EQ(j["num_key_value_heads"], 1);
  EXPECT_EQ(j["head_dim"], 256);
  EXPECT_EQ(j["sliding_window"], 512);
  EXPECT_TRUE(j["query_pre_attn_scalar"].is_number_integer());  // an int in transformers
  EXPECT_EQ(j["query_pre_attn_scalar"], 256);
  EXPECT_EQ(j["layer_types"].size(), 26u);
  EXPECT_EQ(j["layer_types"][5], "full_attention");
  EXPECT_EQ(j["layer_types"][4], "sliding_attention");
  EXPECT_EQ(j["rope_parameters"]["full_attention"]["rope_type"], "default");
  const json j4 = preset_config("gemma3-4b");
  EXPECT_EQ(j4["vocab_size"], 262208);
  EXPECT_EQ(j4["rope_parameters"]["full_attention"]["rope_type"], "linear");
  EXPECT_EQ(j4["rope_parameters"]["full_attention"]["factor"], 8.0);
  const ModelConfig c = parse_config(preset_config("tiny"), "tiny");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_layers, 4);
}

TEST(Presets, Gemma4Values) {
  const json e2b = preset_config("gemma4-e2b");
  const json& t = e2b["text_config"];
  EXPECT_EQ(t["num_hidden_layers"], 35);
  EXPECT_EQ(t["num_kv_shared_layers"], 20);
  EXPECT_EQ(t["use_double_wide_mlp"], true);
  EXPECT_EQ(t["hidden_size_per_layer_input"], 256);
  EXPECT_EQ(t["layer_types"][4], "full_attention");  // every 5th layer
  EXPECT_EQ(t["layer_types"][5], "sliding_attention");
  EXPECT_EQ(t["layer_types"][34], "full_attention");  // and the last
  EXPECT_TRUE(t["num_experts"].is_null());
  const json moe = preset_config("gemma4-26b-a4b")["text_config"];
  EXPECT_EQ(moe["num_experts"], 128);
  EXPECT_EQ(moe["top_k_experts"], 8);
  EXPECT_EQ(moe["moe_intermediate_size"], 704);
  EXPECT_EQ(moe["num_global_key_value_heads"], 2);
  EXPECT_EQ(moe["attention_k_eq_v"], true);
  EXPECT_EQ(moe["enable_moe_block"], true);
  const json tiny = preset_config("gemma4-tiny")["text_config"];
  EXPECT_EQ(tiny["head_dim"], 32);
  EXPECT_EQ(tiny["global_head_dim"], 64);
  EXPECT_EQ(tiny["layer_types"][2], "full_attention");  // pattern 3
}

TEST(Presets, LayerAndVocabOverrides) {
  const json j = preset_config("gemma4-e2b", 10, 1000);
  const json& t = j["text_config"];
  EXPECT_EQ(t["num_hidden_layers"], 10);
  EXPECT_EQ(t["layer_types"].size(), 10u);
  EXPECT_EQ(t["layer_types"][4], "full_attention");  // the pattern is kept
  EXPECT_EQ(t["layer_types"][9], "full_attention");
  EXPECT_EQ(t["num_kv_shared_layers"], 20 * 10 / 35);  // the sharing proportion is kept
  EXPECT_EQ(t["vocab_size"], 1000);
  EXPECT_EQ(t["vocab_size_per_layer_input"], 1000);
}
