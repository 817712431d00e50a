// Run-time kernel selection (CPUID, XCR0, probe, overrides) and the blocked GEMM driver shared by
// the per-ISA kernels (see gemm.h). Compiled for the x86-64-v3 baseline: it only calls into an ISA
// translation unit after checking that the CPU and the OS support it.
#include "gemmatune/kernels/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "gemmatune/perf/machine.h"
#include "gemmatune/util/cpu.h"
#include "gemmatune/util/error.h"

namespace gt::gemm {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

bool parse_isa(const std::string& s, Isa* out) {
  for (Isa i : kAllIsas)
    if (s == isa_name(i)) {
      *out = i;
      return true;
    }
  return false;
}

namespace {

// The one CPUID/XCR0 reading of the process is util/cpu; its flags already require the OS to save
// the registers, so the os_* fields follow from them.
CpuFeatures detect() {
  const CpuInfo& c = cpu_info();
  CpuFeatures f;
  f.brand = c.brand;
  f.avx2 = c.avx2;
  f.fma = c.fma;
  f.f16c = c.f16c;
  f.bmi2 = c.bmi2;
  f.avx512f = c.avx512f;
  f.avx512dq = c.avx512dq;
  f.avx512bw = c.avx512bw;
  f.avx512vl = c.avx512vl;
  f.avx512_bf16 = c.avx512bf16;
  f.avx512_fp16 = c.avx512fp16;
  f.amx_bf16 = c.amx_bf16;
  f.os_ymm = c.avx;
  f.os_zmm = c.avx512f;
  f.os_amx = c.amx_tile;
  return f;
}

}  // namespace

std::string CpuFeatures::flags() const {
  std::string s;
  auto add = [&](bool on, const char* n) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += n;
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(bmi2, "bmi2");
  add(avx512f, "avx512f");
  add(avx512dq, "avx512dq");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512_bf16, "avx512_bf16");
  add(avx512_fp16, "avx512_fp16");
  add(amx_bf16, "amx_bf16");
  add(os_zmm, "os:zmm");
  add(os_amx, "os:amx");
  return s;
}

// GEMMATUNE_CPU_DISABLE=avx512 (or avx512bf16; comma-separated) hides features from the
// selection, to exercise what an AVX2-only (or non-BF16) CPU does on this one: the hidden kernels
// are then unsupported (forcing them fails, ctest reports their runs as Not Run).
CpuFeatures apply_disable(CpuFeatures f) {
  const char* e = std::getenv("GEMMATUNE_CPU_DISABLE");
  if (!e || !*e) return f;
  const std::string list = std::string(",") + e + ",";
  if (list.find(",avx512,") != std::string::npos) f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = false;
  if (list.find(",avx512,") != std::string::npos || list.find(",avx512bf16,") != std::string::npos)
    f.avx512_bf16 = false;
  return f;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = apply_disable(detect());
  return f;
}

std::string isa_missing(Isa isa) {
  const CpuFeatures& f = cpu_features();
  std::string miss;
  auto need = [&](bool on, const char* n) {
    if (on) return;
    if (!miss.empty()) miss += ", ";
    miss += n;
  };
  need(f.avx2, "AVX2");
  need(f.fma, "FMA");
  need(f.f16c, "F16C");
  need(f.os_ymm, "OS support for ymm state (XCR0)");
  if (isa == Isa::Avx512 || isa == Isa::Avx512Bf16) {
    need(f.avx512f, "AVX512F");
    need(f.avx512bw, "AVX512BW");
    need(f.avx512vl, "AVX512VL");
    need(f.avx512dq, "AVX512DQ");
    need(f.os_zmm, "OS support for zmm state (XCR0)");
  }
  if (isa == Isa::Avx512Bf16) need(f.avx512_bf16, "AVX512_BF16");
  return miss;
}

bool isa_supported(Isa isa) { return isa_missing(isa).empty(); }

namespace {

const GemmKernel* kernel_table(Isa isa) {
  switch (isa) {
    case Isa::Avx2: return x86::kernel_avx2();
    case Isa::Avx512: return x86::kernel_avx512();
    case Isa::Avx512Bf16: return x86::kernel_avx512bf16();
  }
  return x86::kernel_avx2();
}

uint8_t* aligned_buf(std::vector<uint8_t>& v, size_t bytes) {
  if (v.size() < bytes + 128) v.resize(bytes + 128);  // 64-byte alignment + 64 bytes of slack
  auto p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t(63));
}

int64_t round_up(int64_t x, int64_t r) { return (x + r - 1) / r * r; }

// One thread's block: C[m, nc] (+)= A[m, kr] · B[kr, j0 : j0 + nc]; pack_b(j0, nc, p0, kc, bp) packs
// B[p0 .. p0 + kc, j0 .. j0 + nc) for the kernel.
template <class PackB>
void gemm_block(const GemmKernel& K, const float* a, int64_t lda, int64_t m, const PackB& pack_b, int64_t j0,
                int64_t nc, int64_t kr, float* c, int64_t ldc, bool accumulate) {
  thread_local std::vector<uint8_t> abuf, bbuf;
  // The reduction is cut into equal blocks of at most K.kc (multiples of 8): no short last block
  // whose C update would cost as much as a full one. Every f32 kernel uses the same rule and the
  // same K.kc, hence the same accumulation order.
  const int64_t nkb = (kr + K.kc - 1) / K.kc;
  const int64_t kcb = std::min(K.kc, round_up((kr + nkb - 1) / nkb, 8));
  const int64_t kcp = round_up(K.kc, K.kpack);
  uint8_t* ap = aligned_buf(abuf, size_t(round_up(K.mc, K.mr) * kcp * K.elem_bytes));
  uint8_t* bp = aligned_buf(bbuf, size_t(round_up(K.nc, K.nr) * kcp * K.elem_bytes));
  for (int64_t jc = 0; jc < nc; jc += K.nc) {
    const int64_t ncb = std::min(K.nc, nc - jc);
    for (int64_t pc = 0; pc < kr; pc += kcb) {
      const int64_t kc = std::min(kcb, kr - pc);
      pack_b(j0 + jc, ncb, pc, kc, bp);
      const bool add = accumulate || pc > 0;
      for (int64_t ic = 0; ic < m; ic += K.mc) {
        const int64_t mc = std::min(K.mc, m - ic);
        K.pack_a(a + ic * lda + pc, lda, mc, kc, ap);
        K.macro(mc, ncb, kc, ap, bp, c + ic * ldc + jc, ldc, add);
      }
    }
  }
}

// The threads over gemm_block (see gemm()).
template <class PackB>
void run_gemm(const GemmKernel& K, const float* a, int64_t lda, int64_t m, const PackB& pack_b, int64_t ncols,
              int64_t kr, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || ncols <= 0) return;
  if (kr == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + ncols, 0.0f);
    return;
  }
  const int maxt = omp_get_max_threads();
  // Work per thread must amortise the fork; tiny problems run on the calling thread.
  const double flops = 2.0 * double(m) * double(ncols) * double(kr);
  const int nt = flops < 2e6 ? 1 : maxt;
  // Split by columns (each thread packs its part of the weight and all of A) or by rows (its rows
  // of A and all of the weight), whichever packs less twice: columns when the weight side is the
  // larger one (up/down/LM head, m = 512), rows for narrow outputs (kv: 256 columns) and large m.
  // The split never changes a result: every output is computed the same way either way.
  const bool split_cols = (ncols >= m && ncols >= int64_t(nt) * K.nr * 2) || m < int64_t(nt) * K.mr * 2;
  if (nt == 1) return gemm_block(K, a, lda, m, pack_b, 0, ncols, kr, c, ldc, accumulate);
  // The parts are taken dynamically, up to 4 a thread: on a shared or loaded host a thread that is
  // descheduled for a while no longer holds up the others, which would spin at the join
  // (docs/PERFORMANCE.md, training-step profile). Each part repacks A (column parts) or the whole
  // weight (row parts), so a part is at least 512 columns or 256 rows: the repacking stays a few
  // percent of the part's product.
  const int64_t units = split_cols ? (ncols + K.nr - 1) / K.nr : (m + K.mr - 1) / K.mr;
  const int64_t min_units = split_cols ? (512 + K.nr - 1) / K.nr : (256 + K.mr - 1) / K.mr;
  const int64_t parts = std::max<int64_t>(nt, std::min<int64_t>(int64_t(nt) * 4, units / min_units));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t p = 0; p < parts; ++p) {
    const int64_t u0 = units * p / parts, u1 = units * (p + 1) / parts;
    if (split_cols) {
      const int64_t j0 = u0 * K.nr, j1 = std::min(ncols, u1 * K.nr);
      if (j1 > j0) gemm_block(K, a, lda, m, pack_b, j0, j1 - j0, kr, c + j0, ldc, accumulate);
    } else {
      const int64_t i0 = u0 * K.mr, i1 = std::min(m, u1 * K.mr);
      if (i1 > i0) gemm_block(K, a + i0 * lda, lda, i1 - i0, pack_b, 0, ncols, kr, c + i0 * ldc, ldc, accumulate);
    }
  }
}

}  // namespace

void gemm(Isa isa, const float* a, int64_t lda, int64_t m, DType dt, const void* w, int64_t ldw, bool trans,
          int64_t ncols, int64_t kr, float* c, int64_t ldc, bool accumulate) {
  GT_CHECK(isa_supported(isa), "gemm: kernel '", isa_name(isa), "' needs ", isa_missing(isa), ", which this CPU (",
           cpu_features().brand, ") lacks");
  GT_CHECK(dt == DType::F32 || dt == DType::BF16 || dt == DType::F16, "gemm: weight dtype ", dtype_name(dt),
           ", expected F32, BF16 or F16");
  if (isa == Isa::Avx512Bf16 && dt != DType::BF16) isa = Isa::Avx512;
  const GemmKernel& K = *kernel_table(isa);
  auto pack_b = [&](int64_t j0, int64_t nc, int64_t p0, int64_t kc, uint8_t* bp) {
    K.pack_b(dt, trans, w, ldw, j0, nc, p0, kc, bp);
  };
  run_gemm(K, a, lda, m, pack_b, ncols, kr, c, ldc, accumulate);
}

void gemm_blocks(Isa isa, const float* a, int64_t lda, int64_t m, const BlockSource& w, bool trans, int64_t ncols,
                 int64_t kr, float* c, int64_t ldc, bool accumulate) {
  GT_CHECK(isa_supported(isa), "gemm: kernel '", isa_name(isa), "' needs ", isa_missing(isa), ", which this CPU (",
           cpu_features().brand, ") lacks");
  if (isa == Isa::Avx512Bf16) isa = Isa::Avx512;
  const GemmKernel& K = *kernel_table(isa);
  // Columns per strip: a multiple of every f32 kernel's nr; 64 x (256 + 32) floats = 72 KiB.
  constexpr int64_t S = 64;
  GT_CHECK(K.kpack == 1 && S % K.nr == 0, "gemm_blocks: kernel '", K.name, "' does not pack f32 strips");
  auto pack_b = [&](int64_t j0, int64_t nc, int64_t p0, int64_t kc, uint8_t* bpv) {
    thread_local std::vector<float> scratch;
    float* bp = reinterpret_cast<float*>(bpv);
    for (int64_t js = 0; js < nc; js += S) {
      const int64_t q = std::min(S, nc - js);
      // The columns of W this strip needs, widened to whole blocks of 32.
      const int64_t c0 = trans ? p0 : j0 + js, c1 = trans ? p0 + kc : j0 + js + q;
      const int64_t b0 = c0 / 32, b1 = (c1 + 31) / 32, ld = (b1 - b0) * 32;
      const int64_t rows = trans ? q : kc;
      if (scratch.size() < size_t(rows * ld)) scratch.resize(size_t(rows * ld));
      if (trans) {
        w.fill(w.ctx, j0 + js, q, b0, b1, scratch.data(), ld);
        K.pack_b(DType::F32, true, scratch.data(), ld, 0, q, p0 - b0 * 32, kc, bp + js * kc);
      } else {
        w.fill(w.ctx, p0, kc, b0, b1, scratch.data(), ld);
        K.pack_b(DType::F32, false, scratch.data(), ld, c0 - b0 * 32, q, 0, kc, bp + js * kc);
      }
    }
  };
  run_gemm(K, a, lda, m, pack_b, ncols, kr, c, ldc, accumulate);
}

// ---------------------------------------------------------------------------------------------
// Selection.

namespace {

struct State {
  std::mutex mu;
  bool ready = false;
  Selection sel;
};

State& state() {
  static State s;
  return s;
}

std::string env_or(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : def;
}

// Builds the selection for `kernels` ("auto" or an ISA name) and `precision` ("auto" or "f32").
Selection choose(const std::string& kernels, const std::string& precision, const char* origin) {
  Selection s;
  if (precision == "f32") {
    s.precision = Precision::F32;
  } else if (precision != "auto") {
    fail(origin, ": precision '", precision, "': expected auto or f32");
  }
  if (kernels != "auto") {
    Isa isa;
    if (!parse_isa(kernels, &isa)) fail(origin, ": kernels '", kernels, "': expected auto, avx2, avx512 or avx512bf16");
    GT_CHECK(isa_supported(isa), origin, ": kernels '", kernels, "' need ", isa_missing(isa), ", which this CPU (",
             cpu_features().brand, ") lacks");
    s.forced = true;
    s.f32 = isa == Isa::Avx512Bf16 ? Isa::Avx512 : isa;
    s.bf16 = s.precision == Precision::F32 ? s.f32 : isa;
    s.why = std::string("forced by ") + origin;
    if (isa == Isa::Avx512Bf16 && s.precision == Precision::F32) s.why += "; precision f32: BF16 weights widened (avx512)";
    return s;
  }
  double g[kNumIsa];
  probe(g);
  for (Isa i : kAllIsas) {
    s.probed[int(i)] = isa_supported(i);
    s.probe_gflops[int(i)] = g[int(i)];
  }
  s.f32 = Isa::Avx2;
  if (isa_supported(Isa::Avx512) && g[int(Isa::Avx512)] > g[int(Isa::Avx2)]) s.f32 = Isa::Avx512;
  s.bf16 = s.f32;
  char buf[256];
  std::snprintf(buf, sizeof buf, "probe: avx2 %.0f, avx512 %.0f, avx512bf16 %.0f GFLOP/s", g[0], g[1], g[2]);
  s.why = buf;
  s.why += std::string("; f32 kernel ") + isa_name(s.f32) + " (fastest f32)";
  if (isa_supported(Isa::Avx512Bf16)) {
    if (s.precision == Precision::F32) {
      s.why += "; bf16-input kernel not used (precision f32)";
    } else if (g[int(Isa::Avx512Bf16)] > kBf16Margin * g[int(s.f32)]) {
      s.bf16 = Isa::Avx512Bf16;
      s.why += "; BF16 weights: avx512bf16 (faster than f32 by more than the margin)";
    } else {
      s.why += "; BF16 weights: f32 kernel (avx512bf16 not faster by the margin)";
    }
  }
  return s;
}

}  // namespace

void configure(const std::string& kernels, const std::string& precision) {
  const std::string k = kernels.empty() ? env_or("GEMMATUNE_KERNELS", "auto") : kernels;
  const std::string p = precision.empty() ? env_or("GEMMATUNE_PRECISION", "auto") : precision;
  const char* origin = kernels.empty() ? (precision.empty() ? "GEMMATUNE_KERNELS/GEMMATUNE_PRECISION" : "--precision")
                                       : "--kernels";
  Selection s = choose(k, p, origin);
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.sel = s;
  st.ready = true;
}

const Selection& selection() {
  State& st = state();
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (st.ready) return st.sel;
  }
  Selection s = choose(env_or("GEMMATUNE_KERNELS", "auto"), env_or("GEMMATUNE_PRECISION", "auto"),
                       "GEMMATUNE_KERNELS/GEMMATUNE_PRECISION");
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.ready) {
    st.sel = s;
    st.ready = true;
  }
  return st.sel;
}

Isa kernel_for(DType dt) {
  const Selection& s = selection();
  return dt == DType::BF16 ? s.bf16 : s.f32;
}

bool bf16_inputs_for(DType dt) { return kernel_for(dt) == Isa::Avx512Bf16; }

void probe(double gflops[kNumIsa], int rounds) {
  // A Gemma-like projection (1B hidden size 1152 -> 512 outputs) at a short prefill chunk, bf16
  // weights: 75 MFLOP per call, the whole probe ~1 GFLOP (~20 ms on one core).
  constexpr int64_t m = 64, k = 1152, n = 512;
  std::vector<float> x(size_t(m * k)), y(size_t(m * n));
  std::vector<uint16_t> w(size_t(n * k));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : x) v = u(rng);
  for (auto& v : w) v = uint16_t(0x3c00u + (rng() & 0x7fu));  // bf16 in [2^-7, 2^-6)
  std::vector<double> t[kNumIsa];
  // One thread: the choice is about a core's throughput, and a multi-threaded call on a shared
  // host mostly measures how late the other threads get scheduled.
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (int r = 0; r <= rounds; ++r)
    for (Isa i : kAllIsas) {
      if (!isa_supported(i)) continue;
      const double t0 = perf::now_seconds();
      gemm(i, x.data(), k, m, DType::BF16, w.data(), k, true, n, k, y.data(), n, false);
      const double dt = perf::now_seconds() - t0;
      if (r > 0) t[int(i)].push_back(dt);  // round 0 warms up (buffers, clocks)
    }
  omp_set_num_threads(saved_threads);
  // Best of the interleaved rounds: on a shared host a round can only be slowed down by others.
  for (Isa i : kAllIsas) {
    auto& v = t[int(i)];
    gflops[int(i)] = v.empty() ? 0.0 : 2.0 * double(m * n * k) / *std::min_element(v.begin(), v.end()) / 1e9;
  }
}

double register_peak_gflops(Isa isa, int threads, int reps) {
  if (!isa_supported(isa)) return 0.0;
  threads = std::max(1, threads);
  void (*loop)(long) = isa == Isa::Avx2 ? perf::fma_loop_ymm
                       : isa == Isa::Avx512 ? x86::peak_loop_zmm_fma
                                            : x86::peak_loop_zmm_dpbf16;
  const double flop_per_op = isa == Isa::Avx2 ? 16.0 : isa == Isa::Avx512 ? 32.0 : 64.0;
  const long iters = 4'000'000;
#pragma omp parallel num_threads(threads)
  loop(iters / 4);  // wake the cores up
  std::vector<double> v;
  for (int r = 0; r < std::max(1, reps); ++r) {
    const double t0 = perf::now_seconds();
#pragma omp parallel num_threads(threads)
    loop(iters);
    v.push_back(double(threads) * double(iters) * 12.0 * flop_per_op / (perf::now_seconds() - t0) / 1e9);
  }
  return perf::median(v.data(), v.size());
}

}  // namespace gt::gemm
