#include "gemmatune/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace gt {

namespace {
inline const float* key_row(const KvSource& kv, int64_t p, int64_t start, bool value) {
  if (p >= start) return (value ? kv.new_v : kv.new_k) + (p - start) * kv.new_stride;
  const int64_t slot = kv.ring ? p % kv.cap : p;
  return (value ? kv.cache_v : kv.cache_k) + slot * kv.row;
}
}  // namespace

void attention_forward(const AttnShape& s, const float* q, int64_t q_stride, int64_t C, int64_t start, const KvSource& kv,
                       float* out, int64_t out_stride, float* probs) {
  const int64_t hd = s.head_dim, nH = s.num_heads, group = s.num_heads / s.num_kv_heads;
  const int64_t total = start + C;
#pragma omp parallel if (C * nH > 1 && C * total * hd > 8192)
  {
    std::vector<float> sc(static_cast<size_t>(total));
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t i = 0; i < C; ++i) {
      for (int64_t h = 0; h < nH; ++h) {
        const int64_t qp = start + i;
        const int64_t lo = s.window > 0 ? std::max<int64_t>(0, qp - s.window + 1) : 0;
        const int64_t kvh = h / group;
        const float* qv = q + i * q_stride + h * hd;
        float mx = -INFINITY;
        for (int64_t p = lo; p <= qp; ++p) {
          const float* kr = key_row(kv, p, start, false) + kvh * hd;
          float d = 0.0f;
#pragma omp simd reduction(+ : d)
          for (int64_t j = 0; j < hd; ++j) d += qv[j] * kr[j];
          d *= s.scale;
          sc[size_t(p)] = d;
          mx = std::max(mx, d);
        }
        float sum = 0.0f;
        for (int64_t p = lo; p <= qp; ++p) {
          const float e = std::exp(sc[size_t(p)] - mx);
          sc[size_t(p)] = e;
          sum += e;
        }
        const float inv = 1.0f / sum;
        float* o = out + i * out_stride + h * hd;
        for (int64_t j = 0; j < hd; ++j) o[j] = 0.0f;
        for (int64_t p = lo; p <= qp; ++p) {
          const float w = sc[size_t(p)] * inv;
          sc[size_t(p)] = w;
          const float* vr = key_row(kv, p, start, true) + kvh * hd;
#pragma omp simd
          for (int64_t j = 0; j < hd; ++j) o[j] += w * vr[j];
        }
        if (probs) {
          float* pr = probs + (i * nH + h) * total;
          for (int64_t p = 0; p < total; ++p) pr[p] = (p >= lo && p <= qp) ? sc[size_t(p)] : 0.0f;
        }
      }
    }
  }
}

}  // namespace gt
