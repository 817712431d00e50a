#include <cstdio>
#include <string>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/kernels/gemm.h"
#include "gemmatune/util/cpu.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("version", "Print the gemmatune version, the instruction sets this build was compiled for, and this CPU's.", argc, argv);
  if (a.finish()) return 0;
  std::printf("gemmatune 0.1.0\n");
#if defined(__clang__)
  std::printf("compiler: clang %d.%d.%d\n", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  std::printf("compiler: g++ %d.%d.%d\n", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#endif
  std::printf("build: compiled for %s\n", build_isa_summary().c_str());
  std::printf("cpu: %s\n", cpu_summary().c_str());
  // The GEMM kernels are compiled each for its own ISA and chosen at run time (`gemmatune kernels`).
  std::string compiled, usable;
  for (gemm::Isa isa : gemm::kAllIsas) {
    compiled += std::string(compiled.empty() ? "" : " ") + gemm::isa_name(isa);
    if (gemm::isa_supported(isa)) usable += std::string(usable.empty() ? "" : " ") + gemm::isa_name(isa);
  }
  std::printf("gemm kernels: %s compiled; usable on this CPU: %s (the choice: gemmatune kernels)\n", compiled.c_str(),
              usable.empty() ? "none" : usable.c_str());
  return 0;
}
Command reg("version", "print the version, the build's instruction sets and this CPU's", run);
}  // namespace
}  // namespace gt::cli
