#include "gemmatune/kernels/lora_grouped.h"

#include <omp.h>

#include <algorithm>

#include "gemmatune/util/error.h"

namespace gt {

void lora_linear_forward_grouped(const LoraGroup* groups, int64_t n_groups, const float* x, int64_t in, float* y,
                                 int64_t out, std::vector<float>& t) {
  // Work items of the first product: (group, rank row k), each computing t[i, k] for the group's
  // rows, so row k of A is read once from memory and reused from L1 for every row.
  std::vector<int64_t> item_group, item_k, toff(size_t(n_groups), 0);
  int64_t tsize = 0;
  for (int64_t g = 0; g < n_groups; ++g) {
    const LoraView* v = groups[g].view;
    toff[size_t(g)] = tsize;
    if (!v || !*v) continue;
    GT_CHECK(v->in == in && v->out == out && v->experts == 1, "lora_linear_forward_grouped: view shape ", v->in, "x",
             v->out, " (", v->experts, " experts), expected ", in, "x", out);
    tsize += (groups[g].t1 - groups[g].t0) * v->r;
    for (int64_t k = 0; k < v->r; ++k) {
      item_group.push_back(g);
      item_k.push_back(k);
    }
  }
  if (item_group.empty()) return;
  if (int64_t(t.size()) < tsize) t.resize(size_t(tsize));
  float* tp = t.data();
  const int64_t items = int64_t(item_group.size());
  constexpr int64_t kBlock = 64;  // output columns per work unit of the second product
  const int64_t oblocks = (out + kBlock - 1) / kBlock;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t g = item_group[size_t(it)], k = item_k[size_t(it)];
      const LoraView& v = *groups[g].view;
      const float* a = v.A + k * in;
      const int64_t rows = groups[g].t1 - groups[g].t0;
      for (int64_t i = 0; i < rows; ++i) {
        const float* xi = x + (groups[g].t0 + i) * in;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < in; ++j) acc += xi[j] * a[j];
        tp[toff[size_t(g)] + i * v.r + k] = acc;
      }
    }
    // (implicit barrier: every t is ready)
#pragma omp for schedule(static)
    for (int64_t ob = 0; ob < oblocks; ++ob) {
      const int64_t o0 = ob * kBlock, o1 = std::min(out, o0 + kBlock);
      for (int64_t g = 0; g < n_groups; ++g) {
        const LoraView* v = groups[g].view;
        if (!v || !*v) continue;
        const int64_t r = v->r;
        for (int64_t i = 0; i < groups[g].t1 - groups[g].t0; ++i) {
          const float* ti = tp + toff[size_t(g)] + i * r;
          float* yi = y + (groups[g].t0 + i) * out;
          for (int64_t o = o0; o < o1; ++o) {
            const float* b = v->B + o * r;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t k = 0; k < r; ++k) acc += ti[k] * b[k];
            yi[o] += v->scale * acc;
          }
        }
      }
    }
  }
}

}  // namespace gt
