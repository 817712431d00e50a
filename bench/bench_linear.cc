// Linear-layer benchmark: decode GEMV GB/s against the read bandwidth measured in the same rounds,
// and prefill/backward GFLOP/s against the oneDNN SGEMM rate and the FMA peak measured in the same
// rounds, at 1 and 2 threads. Everything is interleaved round by round (the host is shared and
// noisy) and medians are printed. Weights are bf16 (the Gemma checkpoint dtype); decode cycles
// through >= 512 MiB of weight copies so every call streams from DRAM (L3 is 32 MiB).
//
// At 1 thread the decode and GEMM sections also print "[cpu]" tables: rates per CPU-second of the
// process, which exclude time the thread was descheduled by other tenants of the host.
//
// Usage: bench_linear [sections] ; sections is a comma list of decode,mid,prefill,backward,lmhead
// (default: all). Env: BENCH_THREADS=1,2  BENCH_ROUNDS=<n> (scales all round counts).
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gemmatune/kernels/linear.h"
#include "gemmatune/perf/machine.h"

using gt::DType;
using gt::Weight2D;
using gt::linear_detail::Path;
namespace perf = gt::perf;

namespace {

struct Stat {
  std::vector<double> v, ratio, ratio2;
};

struct Table {
  std::vector<std::string> order;
  std::map<std::string, Stat> rows;
  // `ref`, `ref2`: references measured in the same round (0 = none); ratios are per round.
  void add(const std::string& key, double v, double ref, double ref2 = 0.0) {
    if (!rows.count(key)) order.push_back(key);
    rows[key].v.push_back(v);
    rows[key].ratio.push_back(ref > 0 ? v / ref : 0.0);
    rows[key].ratio2.push_back(ref2 > 0 ? v / ref2 : 0.0);
  }
  double med(const std::string& key) const {
    const Stat& s = rows.at(key);
    return perf::median(s.v.data(), s.v.size());
  }
  void print(const char* unit, const char* ref_name = nullptr, const char* ref2_name = nullptr) const {
    for (const auto& k : order) {
      const Stat& s = rows.at(k);
      const double lo = *std::min_element(s.v.begin(), s.v.end());
      const double hi = *std::max_element(s.v.begin(), s.v.end());
      std::printf("  %-62s %7.1f %s (min %6.1f max %6.1f, n=%zu)", k.c_str(), perf::median(s.v.data(), s.v.size()),
                  unit, lo, hi, s.v.size());
      const bool has_ref = *std::max_element(s.ratio.begin(), s.ratio.end()) > 0.0;
      if (ref_name && has_ref) std::printf("  %5.1f%% of %s", 100.0 * perf::median(s.ratio.data(), s.ratio.size()), ref_name);
      if (ref2_name) std::printf(", %5.1f%% of %s", 100.0 * perf::median(s.ratio2.data(), s.ratio2.size()), ref2_name);
      std::printf("\n");
    }
  }
};

std::vector<int> thread_list() {
  std::vector<int> t;
  const char* e = std::getenv("BENCH_THREADS");
  std::string s = e ? e : "1,2";
  size_t pos = 0;
  while (pos < s.size()) {
    size_t c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    t.push_back(std::atoi(s.substr(pos, c - pos).c_str()));
    pos = c + 1;
  }
  return t;
}

int rounds(int dflt) {
  const char* e = std::getenv("BENCH_ROUNDS");
  return e ? std::max(1, std::atoi(e) * dflt / 9) : dflt;
}

// 600 MiB of random bf16 weights (|w| < 1), 2 MiB aligned and THP-advised like a loaded model.
struct Pool {
  perf::HugeBuffer buf;
  size_t bytes;
  explicit Pool(size_t b) : buf(b), bytes(b) {
    uint16_t* p = static_cast<uint16_t*>(buf.data());
    const size_t n = bytes / 2;
#pragma omp parallel
    {
      uint32_t s = 0x9e3779b9u * uint32_t(omp_get_thread_num() + 1);
#pragma omp for schedule(static)
      for (size_t i = 0; i < n; ++i) {
        s = s * 1664525u + 1013904223u;
        // sign, exponent 117..126 (|w| in [2^-10, 1)), 7 random mantissa bits
        p[i] = uint16_t(((s >> 16) & 0x8000u) | ((117u + ((s >> 8) % 10u)) << 7) | (s & 0x7fu));
      }
    }
  }
  // The copies of an n x k bf16 weight laid end to end in the pool (at least one).
  std::vector<Weight2D> copies(int64_t n, int64_t k, DType dt = DType::BF16) const {
    const size_t wb = size_t(n) * size_t(k) * gt::dtype_size(dt);
    const size_t stride = (wb + 4095) / 4096 * 4096;
    std::vector<Weight2D> out;
    for (size_t off = 0; off + wb <= bytes; off += stride) {
      Weight2D w;
      w.name = "bench";
      w.dtype = dt;
      w.data = static_cast<const uint8_t*>(buf.data()) + off;
      w.n = n;
      w.k = k;
      out.push_back(w);
    }
    return out;
  }
};

// Process CPU time. At 1 thread, rates per CPU-second exclude the time the thread was descheduled
// by other tenants of this shared host (they are printed as a second table, "[cpu]").
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

std::vector<float> rnd(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& e : v) e = u(g);
  return v;
}

struct Shape {
  const char* name;
  int64_t n, k;
};

// Calls cycling over the weight copies until `min_bytes` of weight were read; returns weight GB/s
// (wall clock) and stores the CPU-time rate in *cpu_gbs.
double decode_pass(Path path, const std::vector<Weight2D>& ws, const float* x, int64_t m, float* y,
                   size_t min_bytes = size_t(512) << 20, double* cpu_gbs = nullptr) {
  size_t done = 0;
  int calls = 0;
  const double c0 = cpu_seconds();
  const double t0 = perf::now_seconds();
  for (size_t i = 0; done < min_bytes || calls == 0; i = (i + 1) % ws.size()) {
    gt::linear_detail::linear_path(path, x, m, ws[i], y, false, 0, 0);
    done += ws[i].bytes();
    ++calls;
  }
  const double dt = perf::now_seconds() - t0;
  if (cpu_gbs) *cpu_gbs = double(done) / (cpu_seconds() - c0) / 1e9;
  return double(done) / dt / 1e9;
}

void section_decode(const Pool& pool, int t) {
  const Shape shapes[] = {{"1b.up 6912x1152", 6912, 1152}, {"1b.down 1152x6912", 1152, 6912},
                          {"lmhead 262144x1152", 262144, 1152}};
  std::vector<float> x = rnd(size_t(4) * 6912, 1), y(size_t(4) * 262144);
  Table bw, dec, cbw, cdec;
  const int R = rounds(9);
  std::printf("\n== decode (GEMV), %d thread(s), %d interleaved rounds; bf16 weights cycled over >= 512 MiB ==\n", t, R);
  std::printf("  GB/s = weight bytes / time. Each round: one read-stream pass, then every kernel.\n");
  for (int r = 0; r < R; ++r) {
    const double c0 = cpu_seconds();
    const double probe = perf::read_pass_gbs(pool.buf.data(), size_t(512) << 20, t);
    const double cprobe = double(size_t(512) << 20) / (cpu_seconds() - c0) / 1e9;
    bw.add("read stream 512 MiB (probe)", probe, 0.0);
    cbw.add("read stream 512 MiB (probe) [cpu]", cprobe, 0.0);
    for (const Shape& s : shapes) {
      auto ws = pool.copies(s.n, s.k);
      for (int64_t m : {1, 2, 4}) {
        double cg = 0.0;
        const double g = decode_pass(Path::Gemv, ws, x.data(), m, y.data(), size_t(512) << 20, &cg);
        dec.add(std::string(s.name) + " m=" + std::to_string(m), g, probe);
        cdec.add(std::string(s.name) + " m=" + std::to_string(m) + " [cpu]", cg, cprobe);
      }
    }
  }
  bw.print("GB/s");
  dec.print("GB/s", "probe");
  if (t == 1) {
    cbw.print("GB/s");
    cdec.print("GB/s", "probe [cpu]");
  }
}

// GEMV vs GEMM for small m (speculative/batched decode, short prompts): where `linear` switches.
void section_mid(const Pool& pool, int t) {
  std::vector<float> x = rnd(size_t(32) * 1152, 1), y(size_t(32) * 6912);
  Table gf;
  const int R = rounds(3);
  std::printf("\n== small m: GEMV vs GEMM, 1b.up 6912x1152 bf16 from DRAM, %d thread(s), %d rounds "
              "(linear() uses GEMV for m <= %lld) ==\n",
              t, R, (long long)gt::linear_detail::kGemvMaxM);
  auto ws = pool.copies(6912, 1152);
  for (int r = 0; r < R; ++r) {
    const double f = perf::fma_pass_gflops(t);
    for (int64_t m : {2, 4, 8, 16, 24, 32})
      for (Path p : {Path::Gemv, Path::Gemm}) {
        const size_t bytes = std::min<size_t>(size_t(512) << 20, size_t(3e9 / (2.0 * double(m))));
        const double g = decode_pass(p, ws, x.data(), m, y.data(), bytes);
        char key[64];
        std::snprintf(key, sizeof key, "m=%2lld %s", (long long)m, gt::linear_detail::path_name(p));
        gf.add(key, g * double(m), f);  // bf16: 2 FLOP per weight per row = m FLOP per byte
      }
  }
  gf.print("GFLOP/s", "FMA peak probe");
}

void section_gemm(const Pool& pool, int t, bool backward, bool lmhead) {
  const Shape fwd[] = {{"1b.up   1152->6912", 6912, 1152}, {"1b.down 6912->1152", 1152, 6912},
                       {"1b.q    1152->1024", 1024, 1152}, {"1b.kv   1152->256", 256, 1152}};
  const Shape lm[] = {{"lmhead  1152->262144", 262144, 1152}};
  const int64_t m = 512;
  const int R = rounds(lmhead ? 2 : 5);
  std::printf("\n== %s, m=%lld, %d thread(s), %d interleaved rounds ==\n",
              lmhead ? "prefill LM head" : backward ? "backward_input (dx = dy W)" : "prefill (y = x W^T)",
              (long long)m, t, R);
  perf::SgemmProbe sgemm;
  Table fma, sg, own, cown;
  std::vector<Shape> shapes = lmhead ? std::vector<Shape>(std::begin(lm), std::end(lm))
                                     : std::vector<Shape>(std::begin(fwd), std::end(fwd));
  // f32 copies of the small weights, for oneDNN without conversion (not for the 1.2 GB LM head).
  std::vector<std::vector<float>> f32w;
  std::vector<Weight2D> wb, wf;
  for (const Shape& s : shapes) {
    wb.push_back(pool.copies(s.n, s.k)[0]);
    Weight2D w = wb.back();
    if (!lmhead) {
      f32w.emplace_back(size_t(s.n * s.k));
      gt::to_f32(DType::BF16, w.data, f32w.back().data(), f32w.back().size());
      w.dtype = DType::F32;
      w.data = f32w.back().data();
    }
    wf.push_back(w);
  }
  std::vector<float> x = rnd(size_t(m) * 6912, 2), y(size_t(m) * (lmhead ? 262144 : 6912));
  for (int r = 0; r < R; ++r) {
    const double f = perf::fma_pass_gflops(t);
    const double cs0 = cpu_seconds();
    const double g = sgemm.run_gflops();
    const double cg = 2.0 * 512 * 2048 * 2048 / (cpu_seconds() - cs0) / 1e9;
    if (t == 1) cown.add("oneDNN sgemm 512x2048x2048 probe [cpu]", cg, 0.0);
    fma.add("FMA peak probe", f, 0.0);
    sg.add("oneDNN sgemm 512x2048x2048 probe", g, f);
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Shape& s = shapes[i];
      const double flops = 2.0 * double(m) * double(s.n) * double(s.k);
      struct V {
        const char* name;
        Path p;
        const Weight2D* w;
      } vars[] = {{"own gemm, bf16 W", Path::Gemm, &wb[i]},
                  {"oneDNN, bf16 W converted per call", Path::OneDnn, &wb[i]},
                  {"oneDNN, f32 W (no conversion)", Path::OneDnn, &wf[i]}};
      for (const V& v : vars) {
        if (lmhead && v.w == &wf[i]) continue;
        if (lmhead && v.p == Path::OneDnn && r > 0) continue;  // one oneDNN LM-head call per run is enough
        const double c0 = cpu_seconds();
        const double t0 = perf::now_seconds();
        if (backward)
          gt::linear_detail::linear_backward_input_path(v.p, x.data(), m, *v.w, y.data(), false);
        else
          gt::linear_detail::linear_path(v.p, x.data(), m, *v.w, y.data(), false, 0, 0);
        const double gfs = flops / (perf::now_seconds() - t0) / 1e9;
        own.add(std::string(s.name) + "  " + v.name, gfs, g, f);
        if (t == 1) cown.add(std::string(s.name) + "  " + v.name + " [cpu]", flops / (cpu_seconds() - c0) / 1e9, cg);
      }
    }
  }
  fma.print("GFLOP/s");
  sg.print("GFLOP/s", "FMA peak probe");
  own.print("GFLOP/s", "sgemm", "FMA peak");
  if (t == 1) cown.print("GFLOP/s", "sgemm [cpu]");
}

std::string loadavg() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return "?";
  char buf[128] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string s(buf, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string sections = argc > 1 ? argv[1] : "decode,mid,prefill,backward,lmhead";
  auto has = [&](const char* s) { return sections.find(s) != std::string::npos; };
  const double t_start = perf::now_seconds();
  std::printf("bench_linear: omp_get_max_threads()=%d, /proc/loadavg at start: %s\n", omp_get_max_threads(),
              loadavg().c_str());
  Pool pool(size_t(600) << 20);
  for (int t : thread_list()) {
    omp_set_num_threads(t);
    std::printf("\n######## %d thread(s) ########\n", t);
    if (has("decode")) section_decode(pool, t);
    if (has("mid")) section_mid(pool, t);
    if (has("prefill")) section_gemm(pool, t, false, false);
    if (has("backward")) section_gemm(pool, t, true, false);
    if (has("lmhead")) section_gemm(pool, t, false, true);
  }
  std::printf("\ntotal %.1f s, /proc/loadavg at end: %s\n", perf::now_seconds() - t_start, loadavg().c_str());
  return 0;
}
