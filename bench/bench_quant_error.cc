// Per-tensor quality of the block formats (not speed): RMS relative error
// sqrt(Σ (x - deq(q(x)))² / Σ x²) of Q8_0, Q4_0 and Q4_K on Gemma 3 1B's linear shapes, for three
// synthetic weight distributions (no checkpoint is downloaded):
//   normal   N(0, 0.02²), what init-model writes;
//   t4       Student t with 4 degrees of freedom scaled to the same RMS: heavy tails, as trained
//            weights have (kurtosis >> 3);
//   outcols  N(0, 0.02²) with 1% of the input columns 8x larger (the outlier channels of trained
//            LLM projections).
// Q4_K is measured on the flat stream of each tensor's values (super-blocks of 256 across rows),
// since Gemma 3 1B's hidden size 1152 is not a multiple of 256: under our policy those tensors get
// the Q4_0 fallback (the "q4_k policy" column: the error the model actually gets). docs/QUANTIZATION.md.
//   usage: bench_quant_error [rows_cap]   (rows per tensor capped, default 2048, to keep it short)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gemmatune/quant/blocks.h"

using namespace gt;

namespace {

double rms_rel(quant::BlockType t, const std::vector<float>& x) {
  const int64_t n = int64_t(x.size());
  std::vector<uint8_t> q(size_t(quant::quantized_bytes(t, n)));
  std::vector<float> y(x.size());
  quant::quantize(t, x.data(), n, q.data());
  quant::dequantize(t, q.data(), n, y.data());
  double e = 0, r = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += double(x[i] - y[i]) * double(x[i] - y[i]);
    r += double(x[i]) * double(x[i]);
  }
  return std::sqrt(e / r);
}

std::vector<float> draw(const std::string& dist, int64_t rows, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::chi_squared_distribution<double> chi(4.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<float> x(size_t(rows * k));
  std::vector<double> col(size_t(k), 1.0);
  if (dist == "outcols")
    for (auto& c : col) c = u(rng) < 0.01 ? 8.0 : 1.0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < k; ++c) {
      double v = nd(rng);
      if (dist == "t4") v = v / std::sqrt(chi(rng) / 4.0) / std::sqrt(2.0);  // t4 has variance 2
      x[size_t(r * k + c)] = float(0.02 * v * col[size_t(c)]);
    }
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t cap = argc > 1 ? std::atoll(argv[1]) : 2048;
  struct Shape {
    const char* name;
    int64_t n, k;
  };
  const Shape shapes[] = {{"q_proj", 1024, 1152},  {"k_proj", 256, 1152},  {"v_proj", 256, 1152},
                          {"o_proj", 1152, 1024},  {"gate_proj", 6912, 1152}, {"up_proj", 6912, 1152},
                          {"down_proj", 1152, 6912}, {"embed_tokens", 262144, 1152}};
  std::printf("%-8s %-13s %12s %9s %9s %9s %14s\n", "dist", "tensor", "shape", "q8_0", "q4_0", "q4_k", "q4_k policy");
  uint32_t seed = 1;
  for (const char* dist : {"normal", "t4", "outcols"}) {
    double s8 = 0, s4 = 0, sk = 0;
    int cnt = 0;
    for (const Shape& s : shapes) {
      const int64_t rows = std::min(s.n, cap);
      const auto x = draw(dist, rows, s.k, seed++);
      const double e8 = rms_rel(quant::BlockType::Q8_0, x), e4 = rms_rel(quant::BlockType::Q4_0, x),
                   ek = rms_rel(quant::BlockType::Q4_K, x);
      const bool fallback = quant::block_type_for(quant::BlockType::Q4_K, s.k) != quant::BlockType::Q4_K;
      char shape[32];
      std::snprintf(shape, sizeof shape, "%lldx%lld", (long long)s.n, (long long)s.k);
      std::printf("%-8s %-13s %12s %9.4f %9.4f %9.4f %14s\n", dist, s.name, shape, e8, e4, ek,
                  fallback ? "q4_0 (k%256)" : "q4_k");
      s8 += e8, s4 += e4, sk += ek, ++cnt;
    }
    std::printf("%-8s %-13s %12s %9.4f %9.4f %9.4f\n", dist, "mean", "", s8 / cnt, s4 / cnt, sk / cnt);
  }
  return 0;
}
