#include "gemmatune/cli/commands.h"

#include <cstdio>
#include <cstring>
#include <map>

#include "gemmatune/kernels/gemm.h"
#include "gemmatune/model/model.h"
#include "gemmatune/util/error.h"

namespace gt::cli {

namespace {
struct Entry {
  std::string summary;
  CommandFn fn;
};
std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  return r;
}
void usage() {
  std::printf("gemmatune: fine-tune and run Gemma 3 / Gemma 4 models on the CPU\n\nusage: gemmatune COMMAND [options]\n\ncommands:\n");
  for (const auto& [name, e] : registry()) std::printf("  %-14s %s\n", name.c_str(), e.summary.c_str());
  std::printf("\nglobal options (anywhere on the command line):\n"
              "  --kernels auto|avx2|avx512|avx512bf16   GEMM kernels (default: auto = CPUID + a short probe;\n"
              "                                          env GEMMATUNE_KERNELS). 'gemmatune kernels' shows the choice.\n"
              "  --precision auto|f32                    f32 keeps every GEMM input in f32 (no bf16-input kernel;\n"
              "                                          env GEMMATUNE_PRECISION)\n"
              "  --quantize none|q8_0|q4_0|q4_k          quantize the dense model's weights while loading (generate,\n"
              "                                          chat, bench, plan, train, ...; docs/QUANTIZATION.md)\n");
  std::printf("\nRun 'gemmatune COMMAND --help' for a command's options.\n");
}

// Removes the global options (--kernels, --precision; "--opt value" or "--opt=value") from argv
// and applies them. Returns the new argc.
int take_global_options(int argc, char** argv) {
  std::string kernels, precision, quantize;
  int out = 0;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    std::string* dst = nullptr;
    std::string val;
    for (const char* name : {"--kernels", "--precision", "--quantize"}) {
      const std::string n = name;
      if (a == n) {
        GT_CHECK(i + 1 < argc, n, " needs a value");
        val = argv[++i];
      } else if (a.rfind(n + "=", 0) == 0) {
        val = a.substr(n.size() + 1);
      } else {
        continue;
      }
      dst = n == "--kernels" ? &kernels : n == "--precision" ? &precision : &quantize;
      break;
    }
    if (dst) {
      *dst = val;
      continue;
    }
    argv[out++] = argv[i];
  }
  if (!kernels.empty() || !precision.empty()) gemm::configure(kernels, precision);
  if (!quantize.empty()) {
    GT_CHECK(quantize == "none" || quantize == "q8_0" || quantize == "q4_0" || quantize == "q4_k",
             "--quantize: expected none, q8_0, q4_0 or q4_k, got '", quantize, "'");
    set_default_load_options(LoadOptions{quantize == "none" ? "" : quantize});
  }
  return out;
}
}  // namespace

Command::Command(const char* name, const char* summary, CommandFn fn) {
  registry()[name] = Entry{summary, std::move(fn)};
}

int dispatch(int argc, char** argv) {
  argc = take_global_options(argc, argv);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage();
    return argc < 2 ? 1 : 0;
  }
  auto it = registry().find(argv[1]);
  if (it == registry().end()) {
    std::fprintf(stderr, "gemmatune: unknown command '%s'\n\n", argv[1]);
    usage();
    return 1;
  }
  return it->second.fn(argc - 2, argv + 2);
}

}  // namespace gt::cli
