#include <cstdio>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/model/plan.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("plan", "Print the memory a configuration needs (weights, KV cache, activations, training state).", argc, argv);
  const std::string dir = a.required("model", "Hugging Face model folder or GGUF file");
  PlanInput in;
  in.context = a.integer("context", 4096, "tokens per sequence");
  in.batch = a.integer("batch", 1, "sequences");
  in.chunk = a.integer("chunk", 512, "tokens per forward pass (prefill chunk)");
  in.train = a.flag("train", "include LoRA training state");
  in.lora_rank = a.integer("rank", kDefaultLoraRank, "LoRA rank for --train");
  in.checkpointing = a.flag("grad-checkpointing", "--train: keep only each layer's input (recompute in backward)");
  if (a.finish()) return 0;
  // --quantize (global): plan the quantized model from the dense one without quantizing it.
  const std::string q = default_load_options().quantize;
  if (q == "q8_0") in.quantize = WFormat::Q8_0;
  if (q == "q4_0") in.quantize = WFormat::Q4_0;
  if (q == "q4_k") in.quantize = WFormat::Q4_K;
  Model m = Model::load(dir, LoadOptions{});
  MemoryPlan p = plan_memory(m, in);
  if (!q.empty()) std::printf("weights planned as %s where the quantization policy applies (docs/QUANTIZATION.md)\n", q.c_str());
  std::printf("%s (%lld layers), context %lld, batch %lld%s\n%s", dir.c_str(), (long long)m.config().num_layers,
              (long long)in.context, (long long)in.batch, in.train ? ", training" : "", p.report().c_str());
  const size_t avail = available_memory();
  if (avail) std::printf("available              %.2f GB: %s\n", double(avail) / 1e9, p.total() <= avail ? "fits" : "DOES NOT FIT");
  return 0;
}
Command reg("plan", "print the memory a model/context/batch needs, and whether it fits", run);
}  // namespace
}  // namespace gt::cli
