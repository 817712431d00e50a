// Decode GEMV over quantized blocks vs the bf16 GEMV, one thread, CPU time (so a busy shared host
// does not distort the per-core rate): a 27648 x 1152 weight (64 MB bf16, 36 MB Q8_0, 20 MB Q4_0;
// Q4_K on a 27648 x 1280 one, 20 MB, since 1152 is not a multiple of 256), 3 interleaved rounds of
// 5 calls per kernel. isa0 = AVX2, isa1 = AVX-512 (not for Q4_K) (exact f32 math), i8 = the
// int8-activation GEMV of --precision auto (kernels/linear_quant_i8.cc; Q8_0/Q4_0) (docs/PERFORMANCE.md).
#include <ctime>
#include <cstdio>
#include <vector>
#include <random>
#include <omp.h>
#include "gemmatune/kernels/linear.h"
#include "gemmatune/quant/blocks.h"
using namespace gt;
static double cpu() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main() {
  omp_set_num_threads(1);
  const int64_t n = 6912 * 4, k = 1152;  // ~32M weights
  std::vector<float> w(static_cast<size_t>(n * k)); std::mt19937 r(1); std::normal_distribution<float> nd(0, 0.05f);
  for (auto& v : w) v = nd(r);
  std::vector<uint16_t> wb(static_cast<size_t>(n * k)); for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
  std::vector<uint8_t> q8(size_t(quant::quantized_bytes(quant::BlockType::Q8_0, n * k))), q4(size_t(quant::quantized_bytes(quant::BlockType::Q4_0, n * k)));
  quant::quantize_q8_0(w.data(), n * k, q8.data()); quant::quantize_q4_0(w.data(), n * k, q4.data());
  const int64_t kk = 1280;
  std::vector<float> w2(static_cast<size_t>(n * kk)); for (auto& v : w2) v = nd(r);
  std::vector<uint8_t> q4k(size_t(quant::quantized_bytes(quant::BlockType::Q4_K, n * kk)));
  quant::quantize_q4_k(w2.data(), n * kk, q4k.data());
  Weight2D W[4] = {{"bf16", DType::BF16, wb.data(), n, k, WFormat::Dense}, {"q8", DType::U8, q8.data(), n, k, WFormat::Q8_0}, {"q4", DType::U8, q4.data(), n, k, WFormat::Q4_0}, {"q4k", DType::U8, q4k.data(), n, kk, WFormat::Q4_K}};
  std::vector<float> x(static_cast<size_t>(kk), 0.5f), y(static_cast<size_t>(n));
  for (int rep = 0; rep < 3; ++rep)
    for (auto& ww : W) {
      for (int isa : {0, 1, 2}) {
        if ((!ww.quantized() && isa >= 1) || (isa == 1 && !linear_detail::gemv_quant_avx512_supported())) continue;
        if (isa >= 1 && ww.format == WFormat::Q4_K) continue;
        double t0 = cpu();
        for (int it = 0; it < 5; ++it) {
          if (isa == 2) linear_detail::gemv_forward_quant_i8(x.data(), 1, ww, y.data(), false, 0, 0);
          else if (ww.quantized()) linear_detail::gemv_forward_quant(x.data(), 1, ww, y.data(), false, 0, 0, isa);
          else linear_detail::gemv_forward(x.data(), 1, ww, y.data(), false, 0, 0);
        }
        double t = (cpu() - t0) / 5;
        const char* kn = isa == 2 ? "i8  " : isa == 1 ? "isa1" : "isa0";
        printf("%s %s: %.2f ms CPU, %.2f GB/s per CPU-second, %.2f Gweights/s\n", ww.name.c_str(), kn, t * 1e3, double(ww.bytes()) / t / 1e9, double(n * ww.k) / t / 1e9);
      }
    }
}
