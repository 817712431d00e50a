#include <chrono>
#include <cstdio>
#include <filesystem>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/lora/merge.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("merge",
         "Merge a PEFT LoRA adapter into a model: writes a new Hugging Face folder whose adapted weights are "
         "W + scale * delta (PEFT merge), in the checkpoint's own dtype and key names; every other tensor and the "
         "config/tokenizer/template/generation files are copied.",
         argc, argv);
  const std::string model_dir = a.required("model", "Hugging Face model folder (the adapter's base model)");
  const std::string adapter_dir = a.required("adapter", "PEFT adapter folder (adapter_config.json + adapter_model.safetensors)");
  const std::string out_dir = a.required("out", "folder to write the merged model to (must not be the model folder)");
  const double scale = a.real("scale", 1.0, "multiplier on the adapter's delta (1 = the adapter as trained)");
  const bool force = a.flag("force", "replace --out if it already exists and is not empty");
  const int threads = threads_option(a);
  if (a.finish()) return 0;
  apply_threads(threads);
  std::error_code ec;
  if (std::filesystem::exists(out_dir) && std::filesystem::exists(adapter_dir) &&
      std::filesystem::equivalent(out_dir, adapter_dir, ec))
    fail("merge: --out ", out_dir, " is the adapter folder; write the merged model to a new folder");

  const auto t0 = std::chrono::steady_clock::now();
  Model m = Model::load(model_dir);
  if (!m.quantization().empty())
    fail("merge: ", model_dir, ": the base is quantized (", m.quantization(),
         "); merge into the dense model (merging into blocks would re-quantize the adapter away)");
  Adapter ad = Adapter::load_peft(adapter_dir, m);
  for (const auto& w : ad.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::fprintf(stderr, "adapter %s: %zu modules, %lld parameters, r=%lld, alpha=%g%s, scale %g\n", adapter_dir.c_str(),
               ad.modules.size(), (long long)ad.num_parameters(), (long long)ad.config.r, ad.config.alpha,
               ad.config.use_rslora ? " (rsLoRA)" : "", scale);
  MergeSummary s = merge_adapter(m, ad, out_dir, scale, force, [](const std::string& msg) {
    std::fprintf(stderr, "%s\n", msg.c_str());
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("merged %lld modules into %s: %lld tensors merged, %lld copied, %lld other files copied, %.2f GB in %.1f s\n",
              (long long)s.modules, out_dir.c_str(), (long long)s.tensors_merged, (long long)s.tensors_copied,
              (long long)s.files_copied, double(s.bytes) / 1e9, secs);
  return 0;
}
Command reg("merge", "merge a LoRA adapter into a model, writing a new HF folder", run);
}  // namespace
}  // namespace gt::cli
