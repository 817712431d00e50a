// What this CPU offers (CPUID + the OS's XSAVE state) and what this build was compiled for, so
// that every report (`gemmatune version`, `bench`, a failure report) names the host.
#pragma once
#include <string>

namespace gt {

struct CpuInfo {
  std::string vendor, brand;  // "AuthenticAMD", "AMD EPYC 9R14 ..."
  int family = 0, model = 0, stepping = 0;
  // Instruction sets usable here: the CPU has them AND the OS saves their registers (XCR0).
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512dq = false, avx512bw = false, avx512vl = false, avx512vnni = false;
  bool avx512bf16 = false, avx512fp16 = false, avxvnni = false, amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool x86_64_v3() const { return avx2 && fma && f16c && bmi2; }
  bool avx512_core() const { return avx512f && avx512dq && avx512bw && avx512vl; }
};

// Detected once; cheap to call.
const CpuInfo& cpu_info();

// "AMD EPYC 9R14 (family 25 model 17): avx2 fma f16c avx512f ... avx512_bf16" — names as in /proc/cpuinfo.
std::string cpu_summary();
// The instruction sets the compiler was allowed to use for the code outside per-ISA kernels.
std::string build_isa_summary();

}  // namespace gt
