// gemmatune kernels: what this CPU supports, what each GEMM kernel runs at (the start-up probe)
// and which kernels this process uses; --check ISA for scripts and ctest (exit 77 = not supported).
#include <cstdio>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/kernels/gemm.h"

namespace gt::cli {
namespace {

int run(int argc, char** argv) {
  Args a("kernels", "Show the CPU's instruction sets, the GEMM kernel probe and the kernels chosen.", argc, argv);
  const std::string check = a.str("check", "", "exit 0 if this CPU runs kernel ISA (avx2, avx512, avx512bf16), else 77");
  int threads = threads_option(a);
  if (a.finish()) return 0;
  apply_threads(threads);
  if (!check.empty()) {
    gemm::Isa isa;
    if (!gemm::parse_isa(check, &isa)) {
      std::fprintf(stderr, "gemmatune kernels: unknown kernel '%s' (avx2, avx512, avx512bf16)\n", check.c_str());
      return 2;
    }
    if (gemm::isa_supported(isa)) {
      std::printf("%s: supported\n", check.c_str());
      return 0;
    }
    std::printf("%s: not supported here (missing %s)\n", check.c_str(), gemm::isa_missing(isa).c_str());
    return 77;
  }
  const gemm::CpuFeatures& f = gemm::cpu_features();
  std::printf("cpu        %s\n", f.brand.c_str());
  std::printf("features   %s\n", f.flags().c_str());
  for (gemm::Isa i : gemm::kAllIsas) {
    const std::string miss = gemm::isa_missing(i);
    std::printf("kernel     %-11s %s\n", gemm::isa_name(i), miss.empty() ? "supported" : ("missing " + miss).c_str());
  }
  const gemm::Selection& s = gemm::selection();
  std::printf("selected   f32 math: %s; BF16 weights: %s%s\n", gemm::isa_name(s.f32), gemm::isa_name(s.bf16),
              s.bf16_inputs() ? " (bf16 inputs, f32 accumulation)" : " (f32)");
  std::printf("why        %s\n", s.why.c_str());
  return 0;
}

Command reg("kernels", "show the CPU's instruction sets and the GEMM kernels chosen (--check ISA)", run);

}  // namespace
}  // namespace gt::cli
