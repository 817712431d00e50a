#include "gemmatune/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <omp.h>
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

namespace gt {

void attention_backward(const AttnShape& s, const float* q, const float* k, const float* v, int64_t C, const float* dout,
                        float* dq, float* dk, float* dv) {
  const int64_t hd = s.head_dim, nH = s.num_heads, group = s.num_heads / s.num_kv_heads;
  const int64_t nq = nH * hd, nkv = s.num_kv_heads * hd;
  // Each thread accumulates dK/dV privately over a fixed (static) share of the work; the shares
  // are then added in thread order, so results are bit-identical for a given thread count.
  const int nt = omp_get_max_threads();
  std::vector<std::vector<float>> dk_parts(static_cast<size_t>(nt)), dv_parts(static_cast<size_t>(nt));
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> p(static_cast<size_t>(C)), dp(static_cast<size_t>(C));
    std::vector<float>& dk_local = dk_parts[size_t(omp_get_thread_num())];
    std::vector<float>& dv_local = dv_parts[size_t(omp_get_thread_num())];
    dk_local.assign(static_cast<size_t>(C * nkv), 0.0f);
    dv_local.assign(static_cast<size_t>(C * nkv), 0.0f);
#pragma omp for collapse(2) schedule(static)
    for (int64_t h = 0; h < nH; ++h) {
      for (int64_t i = 0; i < C; ++i) {
        const int64_t kvh = h / group;
        const int64_t lo = s.window > 0 ? std::max<int64_t>(0, i - s.window + 1) : 0;
        const float* qv = q + i * nq + h * hd;
        const float* go = dout + i * nq + h * hd;
        float mx = -INFINITY;
        for (int64_t j = lo; j <= i; ++j) {
          const float* kr = k + j * nkv + kvh * hd;
          float d = 0.0f;
#pragma omp simd reduction(+ : d)
          for (int64_t t = 0; t < hd; ++t) d += qv[t] * kr[t];
          p[size_t(j)] = d * s.scale;
          mx = std::max(mx, p[size_t(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = lo; j <= i; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
        const float inv = 1.0f / sum;
        float pdp = 0.0f;
        for (int64_t j = lo; j <= i; ++j) {
          p[size_t(j)] *= inv;
          const float* vr = v + j * nkv + kvh * hd;
          float d = 0.0f;
#pragma omp simd reduction(+ : d)
          for (int64_t t = 0; t < hd; ++t) d += go[t] * vr[t];
          dp[size_t(j)] = d;
          pdp += p[size_t(j)] * d;
        }
        float* dqv = dq + i * nq + h * hd;
        for (int64_t t = 0; t < hd; ++t) dqv[t] = 0.0f;
        for (int64_t j = lo; j <= i; ++j) {
          const float ds = p[size_t(j)] * (dp[size_t(j)] - pdp) * s.scale;
          const float* kr = k + j * nkv + kvh * hd;
          float* dkr = dk_local.data() + j * nkv + kvh * hd;
          float* dvr = dv_local.data() + j * nkv + kvh * hd;
          const float pj = p[size_t(j)];
#pragma omp simd
          for (int64_t t = 0; t < hd; ++t) {
            dqv[t] += ds * kr[t];
            dkr[t] += ds * qv[t];
            dvr[t] += pj * go[t];
          }
        }
      }
    }
  }
  for (int t = 0; t < nt; ++t) {
    if (dk_parts[size_t(t)].empty()) continue;
    for (int64_t x = 0; x < C * nkv; ++x) {
      dk[x] += dk_parts[size_t(t)][size_t(x)];
      dv[x] += dv_parts[size_t(t)][size_t(x)];
    }
  }
}

}  // namespace gt
