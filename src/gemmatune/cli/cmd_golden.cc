#include <cstdio>
#include <sstream>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/tools/golden.h"
#include "gemmatune/util/error.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("golden", "Compute a fixture's golden tensors with the real code paths and write them as safetensors.", argc, argv);
  a.positional_help("FIXTURE_DIR");
  const std::string out = a.required("out", "output .safetensors file");
  const std::string parts_s =
      a.str("parts", "forward,decode,greedy", "comma-separated: forward, decode, greedy, lora, train, merge");
  GoldenOptions go;
  go.adapter_dir = a.str("adapter", "", "LoRA adapter folder (PEFT format) for lora/train/merge (default: FIXTURE_DIR/adapter)");
  go.adapter_scale = a.real("adapter-scale", 1.0, "multiplier of the adapter's contribution");
  const int threads = threads_option(a);
  if (a.finish()) return 0;
  apply_threads(threads);
  if (a.positional().size() != 1) fail("golden: expected one FIXTURE_DIR argument, got ", a.positional().size());
  std::vector<std::string> parts;
  std::stringstream ss(parts_s);
  std::string p;
  while (std::getline(ss, p, ',')) if (!p.empty()) parts.push_back(p);
  GoldenResult r = compute_golden(a.positional()[0], parts, go);
  write_golden(out, r);
  std::fprintf(stderr, "[golden] wrote %zu tensors to %s\n", r.tensors.size(), out.c_str());
  return 0;
}
Command reg("golden", "compute a fixture's golden outputs (forward, decode, greedy, lora, train, merge)", run);
}  // namespace
}  // namespace gt::cli
