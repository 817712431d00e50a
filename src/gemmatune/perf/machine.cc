// Method notes
// ------------
// * Read bandwidth: a 512 MiB buffer (much larger than the 32 MiB L3, so every pass streams from
//   DRAM) is summed as 32-bit integers (vpaddd: content-independent) by each thread over its own
//   contiguous 32-byte-aligned slice with 8 independent AVX2 accumulators (2 loads/cycle are far above what DRAM delivers, so the
//   loop is purely memory-bound). Time = wall time of the parallel region, which starts with an
//   implicit barrier, so it includes the slowest thread. Bytes counted = bytes read.
// * FMA peak: Zen 3/4/5 have two FMA pipes with 4-cycle latency, so 8 independent chains suffice;
//   12 are used. The loop is inline asm, so the compiler cannot shorten it. FLOP = 2·8 per ymm FMA.
// * SGEMM: oneDNN 2.6 on an AVX2-only CPU dispatches f32 matmul to `gemm:jit` (its MKL-style
//   sgemm, which packs internally); with AVX-512 to `brg:avx512_core`. Weights use format `any`
//   (reordered once outside timing), which is the best case the library offers.
// * bf16 matmul (SgemmProbe(..., bf16 = true)): bf16 src and weights, f32 dst; oneDNN 2.6 has it
//   where the CPU has AVX512_BF16 (`brg:avx512_core_bf16`, Zen 4 included) or AMX; none on AVX2.
#include "gemmatune/perf/machine.h"

#include <immintrin.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "gemmatune/util/error.h"

namespace gt::perf {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(const double* v, size_t n) {
  if (n == 0) return 0.0;
  std::vector<double> s(v, v + n);
  std::sort(s.begin(), s.end());
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

HugeBuffer::HugeBuffer(size_t bytes) {
  constexpr size_t kAlign = size_t(2) << 20;
  n_ = (bytes + kAlign - 1) / kAlign * kAlign;
  if (n_ == 0) return;
  p_ = std::aligned_alloc(kAlign, n_);
  if (!p_) throw std::bad_alloc();
  madvise(p_, n_, MADV_HUGEPAGE);
}

HugeBuffer::~HugeBuffer() { std::free(p_); }

HugeBuffer& HugeBuffer::operator=(HugeBuffer&& o) noexcept {
  if (this != &o) {
    std::free(p_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

namespace {

volatile uint32_t g_sink;

// Sums 32-bit words with integer adds (content-independent: no denormal/NaN effects).
uint32_t sum_slice(const uint32_t* p, size_t n) {  // n multiple of 64, p 32-byte aligned
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  auto ld = [](const uint32_t* q) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(q)); };
  for (size_t i = 0; i < n; i += 64) {
    a0 = _mm256_add_epi32(a0, ld(p + i));
    a1 = _mm256_add_epi32(a1, ld(p + i + 8));
    a2 = _mm256_add_epi32(a2, ld(p + i + 16));
    a3 = _mm256_add_epi32(a3, ld(p + i + 24));
    a4 = _mm256_add_epi32(a4, ld(p + i + 32));
    a5 = _mm256_add_epi32(a5, ld(p + i + 40));
    a6 = _mm256_add_epi32(a6, ld(p + i + 48));
    a7 = _mm256_add_epi32(a7, ld(p + i + 56));
  }
  __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                               _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7)));
  alignas(32) uint32_t t[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), s);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}


// Runs `fn` with omp_get_max_threads() == threads, restoring the previous setting.
template <class F>
auto with_threads(int threads, F&& fn) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(std::max(1, threads));
  struct Restore {
    int n;
    ~Restore() { omp_set_num_threads(n); }
  } restore{saved};
  return fn();
}

}  // namespace

double read_pass_gbs(const void* buf, size_t bytes, int threads) {
  const uint32_t* p = static_cast<const uint32_t*>(buf);
  const size_t n = bytes / sizeof(uint32_t);
  threads = std::max(1, threads);
  uint32_t total = 0;
  const double t0 = now_seconds();
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const size_t per = (n / size_t(nt)) / 64 * 64;
    const size_t b = per * size_t(t);
    const size_t e = (t == nt - 1) ? n / 64 * 64 : b + per;
    total += sum_slice(p + b, e - b);
  }
  const double dt = now_seconds() - t0;
  g_sink = total;
  return double(bytes) / dt / 1e9;
}

double measure_read_bandwidth_gbs(int threads, double seconds_budget) {
  const size_t bytes = size_t(512) << 20;
  HugeBuffer buf(bytes);
  uint32_t* p = static_cast<uint32_t*>(buf.data());
  const size_t n = bytes / sizeof(uint32_t);
#pragma omp parallel for schedule(static) num_threads(std::max(1, threads))
  for (size_t i = 0; i < n; ++i) p[i] = uint32_t(i);
  read_pass_gbs(p, bytes, threads);  // warm-up (TLB, clocks)
  std::vector<double> v;
  const double t_end = now_seconds() + seconds_budget;
  while (v.size() < 3 || (now_seconds() < t_end && v.size() < 101)) v.push_back(read_pass_gbs(p, bytes, threads));
  return median(v.data(), v.size());
}

void fma_loop_ymm(long iters) {
  asm volatile(
      "vxorps %%ymm0,%%ymm0,%%ymm0\n\tvxorps %%ymm1,%%ymm1,%%ymm1\n\tvxorps %%ymm2,%%ymm2,%%ymm2\n\t"
      "vxorps %%ymm3,%%ymm3,%%ymm3\n\tvxorps %%ymm4,%%ymm4,%%ymm4\n\tvxorps %%ymm5,%%ymm5,%%ymm5\n\t"
      "vxorps %%ymm6,%%ymm6,%%ymm6\n\tvxorps %%ymm7,%%ymm7,%%ymm7\n\tvxorps %%ymm8,%%ymm8,%%ymm8\n\t"
      "vxorps %%ymm9,%%ymm9,%%ymm9\n\tvxorps %%ymm10,%%ymm10,%%ymm10\n\tvxorps %%ymm11,%%ymm11,%%ymm11\n\t"
      "vxorps %%ymm12,%%ymm12,%%ymm12\n\tvxorps %%ymm13,%%ymm13,%%ymm13\n\t"
      "1:\n\t"
      "vfmadd231ps %%ymm12,%%ymm13,%%ymm0\n\tvfmadd231ps %%ymm12,%%ymm13,%%ymm1\n\t"
      "vfmadd231ps %%ymm12,%%ymm13,%%ymm2\n\tvfmadd231ps %%ymm12,%%ymm13,%%ymm3\n\t"
      "vfmadd231ps %%ymm12,%%ymm13,%%ymm4\n\tvfmadd231ps %%ymm12,%%ymm13,%%ymm5\n\t"
      "vfmadd231ps %%ymm12,%%ymm13,%%ymm6\n\tvfmadd231ps %%ymm12,%%ymm13,%%ymm7\n\t"
      "vfmadd231ps %%ymm12,%%ymm13,%%ymm8\n\tvfmadd231ps %%ymm12,%%ymm13,%%ymm9\n\t"
      "vfmadd231ps %%ymm12,%%ymm13,%%ymm10\n\tvfmadd231ps %%ymm12,%%ymm13,%%ymm11\n\t"
      "dec %0\n\tjnz 1b\n\t"
      "vzeroupper\n\t"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "cc");
}

double fma_pass_gflops(int threads, long iters) {
  threads = std::max(1, threads);
  const double t0 = now_seconds();
#pragma omp parallel num_threads(threads)
  fma_loop_ymm(iters);
  const double dt = now_seconds() - t0;
  return double(threads) * double(iters) * 12.0 * 16.0 / dt / 1e9;
}

struct SgemmProbe::Impl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream s{eng};
  dnnl::matmul mm;
  dnnl::memory A, B, C;
  double flops = 0;
  std::string impl;
};

SgemmProbe::SgemmProbe(int64_t m, int64_t k, int64_t n, bool bf16) : impl_(std::make_unique<Impl>()) {
  using namespace dnnl;
  Impl& d = *impl_;
  const auto in = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  memory::desc a({m, k}, in, memory::format_tag::ab);
  memory::desc b({k, n}, in, memory::format_tag::any);
  memory::desc c({m, n}, memory::data_type::f32, memory::format_tag::ab);
  std::unique_ptr<matmul::primitive_desc> pd;
  try {
    pd = std::make_unique<matmul::primitive_desc>(matmul::desc(a, b, c), d.eng);
  } catch (const dnnl::error& e) {
    fail("oneDNN has no ", bf16 ? "bf16" : "f32", " matmul on this CPU (", e.what(), ")");
  }
  d.impl = pd->impl_info_str();
  d.A = memory(pd->src_desc(), d.eng);
  d.B = memory(pd->weights_desc(), d.eng);
  d.C = memory(pd->dst_desc(), d.eng);
  for (memory* mem : {&d.A, &d.B}) {
    if (bf16) {  // small values exactly representable in bf16: 0.25 * (i % 7 - 3)
      uint16_t* p = static_cast<uint16_t*>(mem->get_data_handle());
      const size_t cnt = mem->get_desc().get_size() / sizeof(uint16_t);
      static const uint16_t vals[7] = {0xbf40, 0xbf00, 0xbe80, 0x0000, 0x3e80, 0x3f00, 0x3f40};
      for (size_t i = 0; i < cnt; ++i) p[i] = vals[i % 7];
      continue;
    }
    float* p = static_cast<float*>(mem->get_data_handle());
    const size_t cnt = mem->get_desc().get_size() / sizeof(float);
    for (size_t i = 0; i < cnt; ++i) p[i] = 0.25f * float(int(i % 7) - 3);
  }
  d.mm = matmul(*pd);
  d.flops = 2.0 * double(m) * double(k) * double(n);
  run_gflops();
}

SgemmProbe::~SgemmProbe() = default;

const char* SgemmProbe::impl() const { return impl_->impl.c_str(); }

bool SgemmProbe::bf16_available() {
  static const bool ok = [] {
    using namespace dnnl;
    try {
      engine eng(engine::kind::cpu, 0);
      memory::desc a({64, 64}, memory::data_type::bf16, memory::format_tag::ab);
      memory::desc b({64, 64}, memory::data_type::bf16, memory::format_tag::any);
      memory::desc c({64, 64}, memory::data_type::f32, memory::format_tag::ab);
      matmul::primitive_desc pd(matmul::desc(a, b, c), eng);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

double SgemmProbe::run_gflops() {
  Impl& d = *impl_;
  const double t0 = now_seconds();
  d.mm.execute(d.s, {{DNNL_ARG_SRC, d.A}, {DNNL_ARG_WEIGHTS, d.B}, {DNNL_ARG_DST, d.C}});
  d.s.wait();
  return d.flops / (now_seconds() - t0) / 1e9;
}

double measure_sgemm_gflops(int threads, int64_t m, int64_t k, int64_t n, double seconds_budget) {
  return with_threads(threads, [&]() {
    SgemmProbe probe(m, k, n);  // includes the warm-up call
    std::vector<double> v;
    const double t_end = now_seconds() + seconds_budget;
    while (v.size() < 5 || (now_seconds() < t_end && v.size() < 51)) v.push_back(probe.run_gflops());
    return median(v.data(), v.size());
  });
}

double measure_sgemm_gflops(int threads) { return measure_sgemm_gflops(threads, 512, 2048, 2048); }

double measure_onednn_bf16_gflops(int threads, int64_t m, int64_t k, int64_t n, double seconds_budget) {
  if (!SgemmProbe::bf16_available()) return 0.0;
  return with_threads(threads, [&]() {
    SgemmProbe probe(m, k, n, true);
    std::vector<double> v;
    const double t_end = now_seconds() + seconds_budget;
    while (v.size() < 5 || (now_seconds() < t_end && v.size() < 51)) v.push_back(probe.run_gflops());
    return median(v.data(), v.size());
  });
}

}  // namespace gt::perf
