#include <cstdio>
#include <cstring>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/dist/comm.h"
#include "gemmatune/train/options.h"
#include "gemmatune/train/trainer.h"
#include "gemmatune/util/error.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("train", "LoRA fine-tuning on chat data. Options come from --config run.yaml, then key=value words.", argc, argv);
  a.positional_help("[key=value ...]");
  const std::string model = a.required("model", "Hugging Face model folder or GGUF file");
  const std::string out = a.required("out", "run folder: checkpoints, adapter, metrics.jsonl, loss.svg");
  const std::string data = a.str("data", "", "training data (JSONL file or folder; same as data=...)");
  const std::string config = a.str("config", "", "YAML run config (option: value)");
  const bool resume = a.flag("resume", "continue from the latest checkpoint in --out");
  const std::string threads = a.str("threads", "", "worker threads (same as threads=...; 0 = all cores)");
  if (a.finish()) {
    std::printf("\ntraining options (in the run config, or as key=value):\n");
    for (const auto& f : TrainOptions::fields())
      std::printf("  %-26s %s (default: %s)\n", f.name.c_str(), f.help.c_str(), f.def.empty() ? "none" : f.def.c_str());
    return 0;
  }
  TrainOptions o;
  if (!config.empty()) load_train_yaml(config, o);
  for (const auto& kv : a.positional()) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) fail("train: expected key=value, got '", kv, "'");
    o.set(kv.substr(0, eq), kv.substr(eq + 1), "command line");
  }
  if (!data.empty()) o.set("data", data, "--data");
  if (!threads.empty()) o.set("threads", threads, "--threads");
  if (resume) o.resume = true;
  dist::Comm& comm = dist::Comm::world();
  if (!comm.distributed()) {
    TrainSummary s = train(model, out, o);
    return s.steps > 0 ? 0 : 1;
  }
  // Under mpirun an error on one rank must end them all (the others would wait in the next
  // collective): report it, naming the rank, and abort the job.
  try {
    TrainSummary s = train(model, out, o);
    if (s.steps > 0) return 0;
    std::fprintf(stderr, "error: rank %d: no training step was run\n", comm.rank());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: rank %d of %d: %s\n", comm.rank(), comm.size(), e.what());
  }
  comm.abort(1);
}
Command reg("train", "LoRA fine-tuning (SFT) with checkpoints, resume and PEFT adapters", run);
}  // namespace
}  // namespace gt::cli
