// Machine peaks measured in-process, so that benchmarks (and `gemmatune bench`) can print achieved
// rates next to what this machine actually delivers *now*. The host is shared and noisy: every
// function returns a median over repetitions, and callers comparing kernels should interleave a
// probe with the kernel runs (see bench/bench_linear.cc) rather than trust a number taken earlier.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace gt::perf {

// Streaming read bandwidth in GB/s (1e9 bytes/s) with `threads` OpenMP threads: a 512 MiB
// 2 MiB-aligned, hugepage-advised buffer (larger than the last-level caches of the hosts measured so far) is summed with AVX2 loads, each
// thread reading one contiguous slice. Repeats until `seconds_budget` is spent (at least 3 reps)
// and returns the median.
double measure_read_bandwidth_gbs(int threads, double seconds_budget = 1.0);

// oneDNN f32 matmul rate in GFLOP/s (2·M·K·N per call) at M=512, K=N=2048 with weights reordered
// once into oneDNN's preferred layout: the best f32 GEMM rate a library gets on this machine.
// Median of the reps that fit in ~1 s (at least 5) after one warm-up call.
double measure_sgemm_gflops(int threads);
double measure_sgemm_gflops(int threads, int64_t m, int64_t k, int64_t n, double seconds_budget = 1.0);

// A 2 MiB-aligned buffer advised for transparent hugepages (effective where THP is in `madvise` or `always` mode).
// Contents are not initialised.
class HugeBuffer {
 public:
  HugeBuffer() = default;
  explicit HugeBuffer(size_t bytes);
  ~HugeBuffer();
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;
  HugeBuffer(HugeBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  HugeBuffer& operator=(HugeBuffer&& o) noexcept;
  void* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// One pass of the read-bandwidth probe over an existing buffer (for interleaving with other work).
// Returns GB/s of that single pass. `bytes` should be a multiple of 256.
double read_pass_gbs(const void* buf, size_t bytes, int threads);

// The register-only loop behind it: `iters` iterations of 12 independent ymm vfmadd231ps (16 FLOP
// each) on the calling thread. Also the AVX2 register peak of kernels/gemm.
void fma_loop_ymm(long iters);

// One timing of an FMA loop (each thread runs a register-only loop of 12 independent 256-bit
// vfmadd231ps chains, enough to cover the FMA latency on both pipes; `iters` iterations of 12 FMAs per thread), in GFLOP/s.
double fma_pass_gflops(int threads, long iters = 5'000'000);

// oneDNN matmul rate with bf16 inputs (src and weights bf16, f32 accumulation and output),
// weights reordered once: oneDNN's bf16 path (avx512_core_bf16 / AMX where the CPU has them).
// 0 when oneDNN has no bf16 matmul on this CPU.
double measure_onednn_bf16_gflops(int threads, int64_t m, int64_t k, int64_t n, double seconds_budget = 1.0);

// The SGEMM reference as a reusable object, for interleaving single calls with other work.
// Runs with omp_get_max_threads() threads at call time (set it with omp_set_num_threads).
// `bf16`: src and weights bf16 (f32 output); construction throws gt::Error if oneDNN has no such
// matmul here (use SgemmProbe::bf16_available()). impl() names oneDNN's implementation.
class SgemmProbe {
 public:
  SgemmProbe(int64_t m = 512, int64_t k = 2048, int64_t n = 2048, bool bf16 = false);
  static bool bf16_available();
  const char* impl() const;
  ~SgemmProbe();
  double run_gflops();  // one timed call (the constructor does the warm-up call)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Median of a vector of samples (copies; fine for benchmark-sized vectors).
double median(const double* v, size_t n);

// Seconds on a monotonic clock.
double now_seconds();

}  // namespace gt::perf
