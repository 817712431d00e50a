// model/plan: the memory planner's parts respond to what they depend on.
#include "gemmatune/model/plan.h"

#include <gtest/gtest.h>

#include "gemmatune/lora/adapter.h"
#include "gemmatune/lora/targets.h"
#include "gemmatune/model/kv_cache.h"
#include "gemmatune/util/error.h"
#include "test_util.h"

using namespace gt;

namespace {
const Model& model() {
  static const Model m = Model::load(test::fixture("gemma3_causal") + "/model");
  return m;
}
}  // namespace

TEST(Plan, InferenceParts) {
  PlanInput in;
  in.context = 64;
  in.chunk = 16;
  const MemoryPlan p = plan_memory(model(), in);
  EXPECT_EQ(p.weights_total, model().weight_bytes());
  EXPECT_LE(p.weights_resident, p.weights_total);
  EXPECT_EQ(p.kv_cache, KvCache::bytes_needed(model(), 64));
  EXPECT_GT(p.activations, 0u);
  EXPECT_EQ(p.lora, 0u);  // no training state
  EXPECT_EQ(p.total(), p.weights_resident + p.kv_cache + p.activations + p.lora + p.runtime);
  // The KV cache grows with the batch; the report names every part.
  in.batch = 3;
  EXPECT_EQ(plan_memory(model(), in).kv_cache, 3 * p.kv_cache);
  const std::string r = p.report();
  for (const char* part : {"weights", "KV cache", "activations", "runtime", "total"})
    EXPECT_NE(r.find(part), std::string::npos) << part;
  EXPECT_EQ(r.find("LoRA"), std::string::npos);
}

TEST(Plan, TrainingState) {
  PlanInput in;
  in.context = 32;
  in.chunk = 32;
  in.train = true;
  in.lora_rank = 4;
  const MemoryPlan p4 = plan_memory(model(), in);
  in.lora_rank = 8;
  const MemoryPlan p8 = plan_memory(model(), in);
  EXPECT_GT(p4.lora, 0u);
  EXPECT_EQ(p4.kv_cache, 0u);  // training keeps no KV cache
  EXPECT_EQ(p8.lora, 2 * p4.lora);  // linear in the rank
  // An exact parameter count (rank_pattern, chosen targets) replaces the per-projection estimate:
  // parameter, gradient and both Adam moments in f32.
  in.lora_params = 1000;
  EXPECT_EQ(plan_memory(model(), in).lora, 1000u * 4 * 4);
  EXPECT_NE(plan_memory(model(), in).report().find("LoRA"), std::string::npos);
  // Training adds saved activations.
  in.train = false;
  EXPECT_LT(plan_memory(model(), in).activations, p4.activations);
}

// Without an exact count, the planner's estimate of the LoRA state is the default adapter's size:
// every projection and, on MoE models, one A/B pair per routed-expert weight (never the router).
TEST(Plan, DefaultLoraEstimateIsTheDefaultAdapter) {
  for (const char* fx : {"gemma3_causal", "gemma4_dense", "gemma4_moe", "gemma4_small"}) {
    const Model m = Model::load(test::fixture(fx) + "/model");
    PlanInput in;
    in.context = 16;
    in.chunk = 16;
    in.train = true;
    in.lora_rank = 4;
    LoraConfig lc = default_lora_config(m);
    lc.r = 4;
    lc.alpha = 8;
    const Adapter a = Adapter::create(m, lc, 1);
    EXPECT_EQ(plan_memory(m, in).lora, size_t(a.num_parameters()) * 4 * 4) << fx;
    EXPECT_EQ(plan_memory(m, in).kv_cache, 0u) << fx;
  }
}

TEST(Plan, CheckFitsRefusesWhatCannotFit) {
  MemoryPlan p;
  p.weights_resident = size_t(1) << 62;  // 4 EiB
  EXPECT_THROW(check_fits(p, "test"), Error);
  MemoryPlan small;
  EXPECT_NO_THROW(check_fits(small, "test"));
}
