// GEMM kernels per instruction set, chosen once per process at run time.
//
//   C[m, nc] (+)= A[m, kr] · B[kr, nc],  A f32 activations (row stride lda), B a frozen weight W in
//   its stored dtype: forward B[p, j] = W[j, p] (nn.Linear, W is [nc, kr]), backward-input
//   B[p, j] = W[p, j] (W is [kr, nc]).
//
// One blocked driver (gemm.cc: threads, cache blocking, packing buffers) runs the kernel of one
// instruction set, described by a `GemmKernel` table (packing of A and B into panels, and the
// macro-kernel over a packed block). The tables live in kernels/x86/gemm_<isa>.cc, each compiled
// for its own ISA only (per-file flags in CMakeLists.txt); nothing outside them is compiled for
// more than x86-64-v3, and a table is only used after CPUID (and the OS's XSAVE state, XCR0)
// says the CPU runs it.
//
//   avx2        6x16 ymm micro-kernel, f32; bf16/f16 weights widened while packing.  Any x86-64-v3.
//   avx512      12x32 zmm micro-kernel, f32; bf16/f16 weights widened while packing. AVX-512 F/BW/VL/DQ.
//   avx512bf16  12x32 zmm micro-kernel on vdpbf16ps: BF16 weights stay bf16, the activations are
//               rounded to bf16 (round-to-nearest-even) while packing A, products accumulate in f32.
//               AVX512_BF16. Used for BF16 weights only; other dtypes take the avx512 f32 kernel.
//
// The f32 kernels accumulate every output in the same order (KC = 256 blocks of the reduction, one
// FMA chain per output within a block, then C += block), so avx2 and avx512 give bit-identical
// results. The bf16-input kernel changes the numerics (see docs/PERFORMANCE.md, "precision").
//
// Selection (once, on first use, or when forced): GEMMATUNE_KERNELS / `--kernels` = auto | avx2 |
// avx512 | avx512bf16 and GEMMATUNE_PRECISION / `--precision` = auto | f32. In auto mode every
// eligible kernel is timed on a short in-process probe (a Gemma-like GEMM with bf16 weights,
// interleaved rounds, best round); the fastest f32 kernel serves f32 math, and the bf16-input kernel
// serves BF16 weights only if it beats that f32 kernel by kBf16Margin and precision is auto.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "gemmatune/tensor/dtype.h"

namespace gt::gemm {

enum class Isa : int { Avx2 = 0, Avx512 = 1, Avx512Bf16 = 2 };
inline constexpr int kNumIsa = 3;
inline constexpr Isa kAllIsas[kNumIsa] = {Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16};
const char* isa_name(Isa isa);
// "avx2", "avx512", "avx512bf16" -> Isa; false for anything else.
bool parse_isa(const std::string& s, Isa* out);

enum class Precision { Auto, F32 };

// What the CPU and the OS support (CPUID leaves 1, 7.0, 7.1 and XCR0).
struct CpuFeatures {
  std::string brand;  // CPUID brand string
  bool avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512_bf16 = false,
       avx512_fp16 = false, amx_bf16 = false;
  bool os_ymm = false, os_zmm = false, os_amx = false;  // XCR0 enables the register state
  std::string flags() const;                             // "avx2 fma f16c avx512f ..." (those present)
};
// Env GEMMATUNE_CPU_DISABLE=avx512|avx512bf16 (comma list) hides those features (testing).
const CpuFeatures& cpu_features();
bool isa_supported(Isa isa);
// Why `isa` cannot run here ("" when it can).
std::string isa_missing(Isa isa);

// bf16-input kernel must be this much faster than the best f32 one to be chosen automatically.
inline constexpr double kBf16Margin = 1.15;

struct Selection {
  Isa f32 = Isa::Avx2;         // kernel for F32 / F16 weights (and BF16 ones unless `bf16`)
  Isa bf16 = Isa::Avx2;        // kernel for BF16 weights (Avx512Bf16: bf16 inputs, f32 accumulation)
  Precision precision = Precision::Auto;
  bool forced = false;         // GEMMATUNE_KERNELS / --kernels named an ISA (no probe)
  bool probed[kNumIsa] = {};   // probe ran for this ISA
  double probe_gflops[kNumIsa] = {};
  std::string why;             // one line: how the choice was made
  bool bf16_inputs() const { return bf16 == Isa::Avx512Bf16; }
};

// The process-wide choice: made on first call (reads GEMMATUNE_KERNELS and GEMMATUNE_PRECISION
// unless configure() was called before), then fixed.
const Selection& selection();
// Sets the choice before (or instead of) the automatic one: `kernels` = "" or "auto" (probe) or an
// ISA name; `precision` = "" (keep the environment's / auto) or "auto" or "f32". Fails with a
// message on an unknown name or an ISA this CPU lacks. May be called again (tests, bench); not
// while GEMMs run on other threads.
void configure(const std::string& kernels, const std::string& precision = "");
// The kernel `linear` uses for a weight of dtype `dt` under the current selection.
Isa kernel_for(DType dt);
// Whether the current selection rounds the activations to bf16 for weights of dtype `dt`.
bool bf16_inputs_for(DType dt);

// Times each eligible kernel on the probe shape (rounds interleaved, one thread), GFLOP/s (best
// round) into `gflops` (0 where not supported).
void probe(double gflops[kNumIsa], int rounds = 3);

// The GEMM with a given kernel; `isa` must be supported (checked: fails otherwise). `trans` = forward layout (W is [nc, kr]); ldw = W's row stride.
// BF16 weights with Avx512Bf16 round A to bf16; any other dtype with Avx512Bf16 runs Avx512.
void gemm(Isa isa, const float* a, int64_t lda, int64_t m, DType wdt, const void* w, int64_t ldw, bool trans,
          int64_t nc, int64_t kr, float* c, int64_t ldc, bool accumulate);

// A weight whose f32 values are made on demand from blocks of 32 along its rows (quantized
// weights, kernels/linear_quant.cc). fill(ctx, r0, nr, b0, b1, out, ldo) writes rows [r0, r0 + nr)
// and columns [32 b0, 32 b1) of the stored W (forward layout [nc, kr] when `trans`, else [kr, nc])
// into out, row stride ldo.
struct BlockSource {
  void (*fill)(const void* ctx, int64_t r0, int64_t nr, int64_t b0, int64_t b1, float* out, int64_t ldo);
  const void* ctx;
};
// The GEMM on such a weight with an f32 kernel (Avx512Bf16 runs Avx512): the blocks are turned
// into f32 strip by strip while packing (an L2-sized scratch per strip of 64 columns), inside the
// same blocking, threading and accumulation order as gemm() on the f32 weight, so the result is
// bit-identical to gemm() on the dequantized weight. W's reduction (kr when trans, nc otherwise)
// must be whole blocks: the columns of W are a multiple of 32.
void gemm_blocks(Isa isa, const float* a, int64_t lda, int64_t m, const BlockSource& w, bool trans, int64_t nc,
                 int64_t kr, float* c, int64_t ldc, bool accumulate);

// ---- For the ISA translation units (kernels/x86/gemm_*.cc) and the driver. ----
// Packed layouts are private to each kernel; the driver only sizes and hands out the buffers.
struct GemmKernel {
  const char* name;
  int mr, nr;           // micro-tile
  int kpack;            // reduction elements per packed entry (1 f32, 2 for bf16 pairs)
  int elem_bytes;       // bytes per packed element (4 f32, 2 bf16)
  int64_t kc, mc, nc;   // cache blocking (kc multiple of kpack, mc of mr, nc of nr)
  // Ap = packed A[i0 .. i0+mc, p0 .. p0+kc) for a block (a points at A[i0, p0]).
  void (*pack_a)(const float* a, int64_t lda, int64_t mc, int64_t kc, void* ap);
  // Bp = packed B[p0 .. p0+kc, j0 .. j0+nc) from W (stored dtype `dt`, row stride ldw).
  // f32 kernels (kpack 1) pack strips of nr columns one after another, kc x nr floats each, so
  // packing columns [j, j + q) with j a multiple of nr fills floats [j kc, (j + q) kc) of Bp
  // (gemm_blocks relies on this).
  void (*pack_b)(DType dt, bool trans, const void* w, int64_t ldw, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                 void* bp);
  // C[mc, nc] (+)= Ap · Bp (add: C += ..., else C = ...).
  void (*macro)(int64_t mc, int64_t nc, int64_t kc, const void* ap, const void* bp, float* c, int64_t ldc, bool add);
};

namespace x86 {
const GemmKernel* kernel_avx2();
const GemmKernel* kernel_avx512();
const GemmKernel* kernel_avx512bf16();
// Register-only loops for the peaks: `iters` iterations of 12 independent ops each, zmm FMA
// (32 FLOP per op; avx512 TU), zmm vdpbf16ps (64; avx512bf16 TU). The ymm FMA loop (16) is
// perf::fma_loop_ymm.
void peak_loop_zmm_fma(long iters);
void peak_loop_zmm_dpbf16(long iters);
}  // namespace x86

// Register-only peak of `isa` (f32 FMA on ymm / zmm, or vdpbf16ps on zmm) with `threads` threads,
// GFLOP/s, median of `reps`. 0 if the CPU lacks it.
double register_peak_gflops(Isa isa, int threads, int reps = 5);

}  // namespace gt::gemm
