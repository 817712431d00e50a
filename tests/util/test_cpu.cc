// CPU feature detection agrees with the kernel's own report, and `gemmatune version` names the host.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gemmatune/util/cpu.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

namespace gt {
namespace {

// The "flags" line of the first processor in /proc/cpuinfo: what Linux says the CPU offers and the
// OS enables (Linux hides AVX-512 flags when it does not save the ZMM state).
std::set<std::string> proc_flags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::set<std::string> out;
      for (std::string w; words >> w;) out.insert(w);
      return out;
    }
  return {};
}

TEST(Cpu, FeaturesAgreeWithProcCpuinfo) {
  const auto flags = proc_flags();
  ASSERT_FALSE(flags.empty()) << "/proc/cpuinfo has no flags line";
  const CpuInfo& c = cpu_info();
  const std::pair<bool, const char*> ours[] = {
      {c.avx2, "avx2"},           {c.fma, "fma"},                 {c.f16c, "f16c"},       {c.bmi2, "bmi2"},
      {c.avx512f, "avx512f"},     {c.avx512dq, "avx512dq"},       {c.avx512bw, "avx512bw"},
      {c.avx512vl, "avx512vl"},   {c.avx512vnni, "avx512_vnni"},  {c.avx512bf16, "avx512_bf16"},
      {c.avx512fp16, "avx512_fp16"}, {c.avxvnni, "avx_vnni"},     {c.amx_tile, "amx_tile"},
      {c.amx_bf16, "amx_bf16"},   {c.amx_int8, "amx_int8"}};
  for (const auto& [on, name] : ours) EXPECT_EQ(on, flags.count(name) == 1) << name;
  // The project's minimum: an x86-64-v3 CPU.
  EXPECT_TRUE(c.x86_64_v3()) << cpu_summary();
  // Implications that hold on every CPU.
  EXPECT_TRUE(c.avx512f || !(c.avx512bf16 || c.avx512vnni || c.avx512fp16));
  EXPECT_TRUE(c.amx_tile || !c.amx_bf16);
}

TEST(Cpu, SummaryNamesTheModelAndTheSets) {
  const std::string s = cpu_summary();
  EXPECT_NE(s.find("family " + std::to_string(cpu_info().family)), std::string::npos) << s;
  EXPECT_NE(s.find(" avx2"), std::string::npos) << s;
  EXPECT_EQ(s.find(" avx512f") != std::string::npos, cpu_info().avx512f) << s;
  // This test binary is built with the project's flags: at least AVX2 + FMA.
  const std::string b = build_isa_summary();
  EXPECT_NE(b.find("avx2"), std::string::npos) << b;
  EXPECT_NE(b.find("fma"), std::string::npos) << b;
}

TEST(Cpu, VersionCommandReportsBuildAndHost) {
  const std::string out = test::scratch("version.txt");
  ASSERT_EQ(std::system((test::binary() + " version >" + out).c_str()), 0);
  const std::string text = read_file(out);
  EXPECT_NE(text.find("gemmatune "), std::string::npos) << text;
  EXPECT_NE(text.find("build: compiled for " + build_isa_summary()), std::string::npos) << text;
  EXPECT_NE(text.find("cpu: " + cpu_summary()), std::string::npos) << text;
}

}  // namespace
}  // namespace gt
