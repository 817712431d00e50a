#include <cstdio>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/model/presets.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("init-model", "Write a Hugging Face model folder with random weights at a published size.", argc, argv);
  std::string names;
  for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  InitOptions o;
  o.preset = a.required("preset", "model size: " + names);
  o.out_dir = a.required("out", "output folder (created if missing)");
  o.seed = uint64_t(a.integer("seed", 0, "random seed"));
  o.dtype = a.str("dtype", "bf16", "weight dtype: bf16 or f32");
  o.tokenizer = a.str("tokenizer", "", "tokenizer.json to copy into the folder");
  o.chat_template = a.str("chat-template", "", "chat template to copy as chat_template.jinja");
  o.layers = a.integer("layers", 0, "override the number of layers (0 = the preset's)");
  o.vocab = a.integer("vocab", 0, "override the vocabulary size (0 = the preset's)");
  if (a.finish()) return 0;
  std::fprintf(stderr, "writing %s (%s, %s) to %s ...\n", o.preset.c_str(), o.dtype.c_str(),
               o.layers ? (std::to_string(o.layers) + " layers").c_str() : "all layers", o.out_dir.c_str());
  int64_t n = init_model(o);
  std::fprintf(stderr, "wrote %s: %.1f M parameters\n", o.out_dir.c_str(), double(n) / 1e6);
  return 0;
}
Command reg("init-model", "write a model folder with random weights (presets of the published sizes)", run);
}  // namespace
}  // namespace gt::cli
