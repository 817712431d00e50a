#include "gemmatune/util/cpu.h"

#include <cpuid.h>

#include <cstdint>
#include <cstring>

namespace gt {
namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
  return r;
}

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

bool bit(unsigned v, int i) { return (v >> i) & 1u; }

CpuInfo detect() {
  CpuInfo c;
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  Regs v = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &v.b, 4);
  std::memcpy(vendor + 4, &v.d, 4);
  std::memcpy(vendor + 8, &v.c, 4);
  c.vendor = vendor;
  if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      Regs r = cpuid(0x80000002u + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    c.brand = brand;
    while (!c.brand.empty() && (c.brand.back() == ' ' || c.brand.back() == '\0')) c.brand.pop_back();
    while (!c.brand.empty() && c.brand.front() == ' ') c.brand.erase(c.brand.begin());
  }
  if (max_leaf < 1) return c;
  Regs l1 = cpuid(1);
  const unsigned base_family = (l1.a >> 8) & 0xf, ext_family = (l1.a >> 20) & 0xff;
  const unsigned base_model = (l1.a >> 4) & 0xf, ext_model = (l1.a >> 16) & 0xf;
  c.family = int(base_family == 0xf ? base_family + ext_family : base_family);
  c.model = int(base_family == 0xf || base_family == 0x6 ? (ext_model << 4) | base_model : base_model);
  c.stepping = int(l1.a & 0xf);
  c.sse42 = bit(l1.c, 20);
  const bool osxsave = bit(l1.c, 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM_Hi256 + Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;      // XTILECFG + XTILEDATA
  c.avx = os_ymm && bit(l1.c, 28);
  c.fma = c.avx && bit(l1.c, 12);
  c.f16c = c.avx && bit(l1.c, 29);
  if (max_leaf < 7) return c;
  Regs l7 = cpuid(7, 0), l71 = cpuid(7, 1);
  c.avx2 = c.avx && bit(l7.b, 5);
  c.bmi2 = bit(l7.b, 8);
  c.avx512f = os_zmm && bit(l7.b, 16);
  c.avx512dq = c.avx512f && bit(l7.b, 17);
  c.avx512bw = c.avx512f && bit(l7.b, 30);
  c.avx512vl = c.avx512f && bit(l7.b, 31);
  c.avx512vnni = c.avx512f && bit(l7.c, 11);
  c.avx512fp16 = c.avx512f && bit(l7.d, 23);
  c.avx512bf16 = c.avx512f && bit(l71.a, 5);
  c.avxvnni = c.avx && bit(l71.a, 4);
  c.amx_tile = os_amx && bit(l7.d, 24);
  c.amx_bf16 = c.amx_tile && bit(l7.d, 22);
  c.amx_int8 = c.amx_tile && bit(l7.d, 25);
  return c;
}

}  // namespace

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

std::string cpu_summary() {
  const CpuInfo& c = cpu_info();
  std::string s = (c.brand.empty() ? c.vendor : c.brand) + " (family " + std::to_string(c.family) + " model " +
                  std::to_string(c.model) + "):";
  const std::pair<bool, const char*> flags[] = {
      {c.avx2, "avx2"},         {c.fma, "fma"},               {c.f16c, "f16c"},
      {c.avx512f, "avx512f"},   {c.avx512dq, "avx512dq"},     {c.avx512bw, "avx512bw"},
      {c.avx512vl, "avx512vl"}, {c.avx512vnni, "avx512_vnni"}, {c.avx512bf16, "avx512_bf16"},
      {c.avx512fp16, "avx512_fp16"}, {c.avxvnni, "avx_vnni"}, {c.amx_tile, "amx_tile"},
      {c.amx_bf16, "amx_bf16"}, {c.amx_int8, "amx_int8"}};
  bool any = false;
  for (const auto& [on, name] : flags)
    if (on) {
      s += ' ';
      s += name;
      any = true;
    }
  if (!any) s += " (no AVX2)";
  return s;
}

std::string build_isa_summary() {
  std::string s;
  auto add = [&](const char* n) {
    if (!s.empty()) s += ' ';
    s += n;
  };
#ifdef __AVX2__
  add("avx2");
#endif
#ifdef __FMA__
  add("fma");
#endif
#ifdef __F16C__
  add("f16c");
#endif
#ifdef __AVX512F__
  add("avx512f");
#endif
#ifdef __AVX512BW__
  add("avx512bw");
#endif
#ifdef __AVX512VL__
  add("avx512vl");
#endif
#ifdef __AVX512VNNI__
  add("avx512_vnni");
#endif
#ifdef __AVX512BF16__
  add("avx512_bf16");
#endif
#ifdef __AVX512FP16__
  add("avx512_fp16");
#endif
  return s.empty() ? "x86-64 baseline (SSE2)" : s;
}

}  // namespace gt
