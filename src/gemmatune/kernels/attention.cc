#include "gemmatune/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <omp.h>
#include <vector>

#include "gemmatune/kernels/vec_math.h"

namespace gt {

// Both passes are blocked over queries: the kQB queries of a block (one head) sweep the keys
// together. Each key/value row (and its gradient rows) is then read once per block, and the dot
// products of one key against the block's queries run as kQB independent FMA chains: a single
// dot product of 256 elements is one chain of 32 dependent FMAs, bound by FMA latency (one query
// at a time ran at a fifth of the GEMM rate). Scores are never formed for more than a block:
// memory stays O(kQB · keys), never T × T. Every output still sums its terms in a fixed order.

namespace {

constexpr int64_t kQB = 8;

inline const float* key_row(const KvSource& kv, int64_t p, int64_t start, bool value) {
  if (p >= start) return (value ? kv.new_v : kv.new_k) + (p - start) * kv.new_stride;
  const int64_t slot = kv.ring ? p % kv.cap : p;
  return (value ? kv.cache_v : kv.cache_k) + slot * kv.row;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// out[b] = r · x[b] (hd floats each) for NB rows x[b]: NB independent accumulator chains, kept in
// registers (constant trip counts).
template <int NB>
inline void dots_n(const float* r, const float* const* x, int64_t hd, float* out) {
  __m256 acc[NB];
  for (int b = 0; b < NB; ++b) acc[b] = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 8 <= hd; t += 8) {
    const __m256 rv = _mm256_loadu_ps(r + t);
    for (int b = 0; b < NB; ++b) acc[b] = _mm256_fmadd_ps(_mm256_loadu_ps(x[b] + t), rv, acc[b]);
  }
  if (t < hd) {
    const __m256i m = vec::tail_mask(hd - t);
    const __m256 rv = _mm256_maskload_ps(r + t, m);
    for (int b = 0; b < NB; ++b) acc[b] = _mm256_fmadd_ps(_mm256_maskload_ps(x[b] + t, m), rv, acc[b]);
  }
  for (int b = 0; b < NB; ++b) out[b] = hsum(acc[b]);
}

// The first nb (≤ kQB) rows: a full block unrolled, a partial one (decode: 1 query) row by row, so a
// lone query costs one dot product per key, not kQB. Each out[b] is the same either way.
inline void dots(const float* r, const float* const* x, int64_t nb, int64_t hd, float* out) {
  if (nb == kQB) return dots_n<kQB>(r, x, hd, out);
  for (int64_t b = 0; b < nb; ++b) dots_n<1>(r, x + b, hd, out + b);
}

// y[b] += w[b] · x for NB rows y[b] (w[b] = 0 leaves a row unchanged): x is read once.
template <int NB>
inline void axpy_rows_n(const float* w, const float* x, float* const* y, int64_t hd) {
  __m256 wv[NB];
  for (int b = 0; b < NB; ++b) wv[b] = _mm256_set1_ps(w[b]);
  int64_t t = 0;
  for (; t + 8 <= hd; t += 8) {
    const __m256 xv = _mm256_loadu_ps(x + t);
    for (int b = 0; b < NB; ++b) _mm256_storeu_ps(y[b] + t, _mm256_fmadd_ps(wv[b], xv, _mm256_loadu_ps(y[b] + t)));
  }
  if (t < hd) {
    const __m256i m = vec::tail_mask(hd - t);
    const __m256 xv = _mm256_maskload_ps(x + t, m);
    for (int b = 0; b < NB; ++b) _mm256_maskstore_ps(y[b] + t, m, _mm256_fmadd_ps(wv[b], xv, _mm256_maskload_ps(y[b] + t, m)));
  }
}

inline void axpy_rows(const float* w, const float* x, float* const* y, int64_t nb, int64_t hd) {
  if (nb == kQB) return axpy_rows_n<kQB>(w, x, y, hd);
  for (int64_t b = 0; b < nb; ++b)
    if (w[b] != 0.0f) axpy_rows_n<1>(w + b, x, y + b, hd);
}

// The backward's update for key j: dq[b] += ds[b]·k_j, dk_j += Σ_b ds[b]·q[b], dv_j += Σ_b p[b]·dout[b]
// (b ascending; ds = p = 0 for pairs outside the mask, which adds exact zeros). dk_j and dv_j stay
// in registers across the block.
template <int NB>
inline void backward_rows_n(const float* ds, const float* p, const float* kr, float* dkr, float* dvr,
                            const float* const* qs, const float* const* gos, float* const* dqs, int64_t hd) {
  int64_t t = 0;
  for (; t + 8 <= hd; t += 8) {
    const __m256 kv = _mm256_loadu_ps(kr + t);
    __m256 dk = _mm256_loadu_ps(dkr + t), dv = _mm256_loadu_ps(dvr + t);
    for (int b = 0; b < NB; ++b) {
      const __m256 dsb = _mm256_broadcast_ss(ds + b);
      dk = _mm256_fmadd_ps(dsb, _mm256_loadu_ps(qs[b] + t), dk);
      dv = _mm256_fmadd_ps(_mm256_broadcast_ss(p + b), _mm256_loadu_ps(gos[b] + t), dv);
      _mm256_storeu_ps(dqs[b] + t, _mm256_fmadd_ps(dsb, kv, _mm256_loadu_ps(dqs[b] + t)));
    }
    _mm256_storeu_ps(dkr + t, dk);
    _mm256_storeu_ps(dvr + t, dv);
  }
  if (t < hd) {
    const __m256i m = vec::tail_mask(hd - t);
    const __m256 kv = _mm256_maskload_ps(kr + t, m);
    __m256 dk = _mm256_maskload_ps(dkr + t, m), dv = _mm256_maskload_ps(dvr + t, m);
    for (int b = 0; b < NB; ++b) {
      const __m256 dsb = _mm256_broadcast_ss(ds + b);
      dk = _mm256_fmadd_ps(dsb, _mm256_maskload_ps(qs[b] + t, m), dk);
      dv = _mm256_fmadd_ps(_mm256_broadcast_ss(p + b), _mm256_maskload_ps(gos[b] + t, m), dv);
      _mm256_maskstore_ps(dqs[b] + t, m, _mm256_fmadd_ps(dsb, kv, _mm256_maskload_ps(dqs[b] + t, m)));
    }
    _mm256_maskstore_ps(dkr + t, m, dk);
    _mm256_maskstore_ps(dvr + t, m, dv);
  }
}

// The same for the first nb rows (a partial block row by row: the same sums in the same order).
inline void backward_rows(const float* ds, const float* p, const float* kr, float* dkr, float* dvr,
                          const float* const* qs, const float* const* gos, float* const* dqs, int64_t nb, int64_t hd) {
  if (nb == kQB) return backward_rows_n<kQB>(ds, p, kr, dkr, dvr, qs, gos, dqs, hd);
  for (int64_t b = 0; b < nb; ++b) backward_rows_n<1>(ds + b, p + b, kr, dkr, dvr, qs + b, gos + b, dqs + b, hd);
}

// Row-wise softmax of pr[lo..hi] in place (scores already scaled).
inline void softmax_range(float* pr, int64_t lo, int64_t hi) {
  float mx = -INFINITY;
  for (int64_t j = lo; j <= hi; ++j) mx = std::max(mx, pr[j]);
  float sum = 0.0f;
  for (int64_t j = lo; j <= hi; ++j) sum += (pr[j] = std::exp(pr[j] - mx));
  const float inv = 1.0f / sum;
  for (int64_t j = lo; j <= hi; ++j) pr[j] *= inv;
}

}  // namespace

void attention_forward(const AttnShape& s, const float* q, int64_t q_stride, int64_t C, int64_t start, const KvSource& kv,
                       float* out, int64_t out_stride, float* probs) {
  const int64_t hd = s.head_dim, nH = s.num_heads, group = s.num_heads / s.num_kv_heads;
  const int64_t total = start + C, nblk = (C + kQB - 1) / kQB;
#pragma omp parallel if (C * nH > 1 && C * total * hd > 8192)
  {
    std::vector<float> P(static_cast<size_t>(kQB * total));
    // The block's q and output rows, packed (see attention_backward).
    std::vector<float> qb(static_cast<size_t>(kQB * hd)), ob(static_cast<size_t>(kQB * hd));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t ib = 0; ib < nblk; ++ib) {
      for (int64_t h = 0; h < nH; ++h) {
        const int64_t kvh = h / group, i0 = ib * kQB, nb = std::min(kQB, C - i0);
        int64_t lo[kQB], hi[kQB];
        const float* qs[kQB];
        for (int64_t b = 0; b < kQB; ++b) {  // only the first nb are used when nb < kQB
          const int64_t i = i0 + std::min(b, nb - 1);
          hi[b] = start + i;
          lo[b] = s.window > 0 ? std::max<int64_t>(0, hi[b] - s.window + 1) : 0;
          qs[b] = qb.data() + std::min(b, nb - 1) * hd;
          if (b < nb) std::copy(q + i * q_stride + h * hd, q + i * q_stride + (h + 1) * hd, qb.data() + b * hd);
        }
        float d[kQB];
        for (int64_t p = lo[0]; p <= hi[nb - 1]; ++p) {
          dots(key_row(kv, p, start, false) + kvh * hd, qs, nb, hd, d);
          for (int64_t b = 0; b < nb; ++b) P[size_t(b * total + p)] = d[b] * s.scale;
        }
        float* os[kQB];
        for (int64_t b = 0; b < kQB; ++b) os[b] = ob.data() + b * hd;
        std::fill(ob.begin(), ob.end(), 0.0f);
        for (int64_t b = 0; b < nb; ++b) softmax_range(P.data() + b * total, lo[b], hi[b]);
        float w[kQB];
        for (int64_t p = lo[0]; p <= hi[nb - 1]; ++p) {
          for (int64_t b = 0; b < kQB; ++b) w[b] = (b < nb && p >= lo[b] && p <= hi[b]) ? P[size_t(b * total + p)] : 0.0f;
          axpy_rows(w, key_row(kv, p, start, true) + kvh * hd, os, nb, hd);
        }
        for (int64_t b = 0; b < nb; ++b) std::copy(ob.data() + b * hd, ob.data() + (b + 1) * hd, out + (i0 + b) * out_stride + h * hd);
        if (probs)
          for (int64_t b = 0; b < nb; ++b) {
            float* pr = probs + ((i0 + b) * nH + h) * total;
            for (int64_t p = 0; p < total; ++p) pr[p] = (p >= lo[b] && p <= hi[b]) ? P[size_t(b * total + p)] : 0.0f;
          }
      }
    }
  }
}

void attention_backward(const AttnShape& s, const float* q, const float* k, const float* v, int64_t C, const float* dout,
                        float* dq, float* dk, float* dv) {
  const int64_t hd = s.head_dim, nH = s.num_heads, group = s.num_heads / s.num_kv_heads;
  const int64_t nq = nH * hd, nkv = s.num_kv_heads * hd;
  const int64_t nblk = (C + kQB - 1) / kQB;
  // Each thread accumulates dK/dV privately over a fixed (static) share of the work; the shares
  // are then added in thread order, so results are bit-identical for a given thread count.
  const int nt = omp_get_max_threads();
  std::vector<std::vector<float>> dk_parts(static_cast<size_t>(nt)), dv_parts(static_cast<size_t>(nt));
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> P(static_cast<size_t>(kQB * C)), DP(static_cast<size_t>(kQB * C));
    // The block's q, dout and dq rows, packed: in the model they are nH·hd floats apart (4 KiB for
    // Gemma 3 1B), which maps all of them to the same L1 sets.
    std::vector<float> qb(static_cast<size_t>(kQB * hd)), gb(static_cast<size_t>(kQB * hd)), dqb(static_cast<size_t>(kQB * hd));
    std::vector<float>& dk_local = dk_parts[size_t(omp_get_thread_num())];
    std::vector<float>& dv_local = dv_parts[size_t(omp_get_thread_num())];
    dk_local.assign(static_cast<size_t>(C * nkv), 0.0f);
    dv_local.assign(static_cast<size_t>(C * nkv), 0.0f);
#pragma omp for collapse(2) schedule(static)
    for (int64_t h = 0; h < nH; ++h) {
      for (int64_t ib = 0; ib < nblk; ++ib) {
        const int64_t kvh = h / group, i0 = ib * kQB, nb = std::min(kQB, C - i0);
        int64_t lo[kQB];
        float pdp[kQB], d[kQB];
        const float *qs[kQB], *gos[kQB];
        for (int64_t b = 0; b < kQB; ++b) {  // only the first nb are used when nb < kQB
          const int64_t i = i0 + std::min(b, nb - 1);
          lo[b] = s.window > 0 ? std::max<int64_t>(0, i - s.window + 1) : 0;
          qs[b] = qb.data() + std::min(b, nb - 1) * hd;
          gos[b] = gb.data() + std::min(b, nb - 1) * hd;
          if (b < nb) {
            std::copy(q + i * nq + h * hd, q + i * nq + (h + 1) * hd, qb.data() + b * hd);
            std::copy(dout + i * nq + h * hd, dout + i * nq + (h + 1) * hd, gb.data() + b * hd);
          }
        }
        const int64_t jlo = lo[0], jhi = i0 + nb - 1;
        // Scores (recomputed) and dP = dout·vᵀ for the block's queries, by key.
        for (int64_t j = jlo; j <= jhi; ++j) {
          dots(k + j * nkv + kvh * hd, qs, nb, hd, d);
          for (int64_t b = 0; b < nb; ++b) P[size_t(b * C + j)] = d[b] * s.scale;
          dots(v + j * nkv + kvh * hd, gos, nb, hd, d);
          for (int64_t b = 0; b < nb; ++b) DP[size_t(b * C + j)] = d[b];
        }
        for (int64_t b = 0; b < nb; ++b) {
          const int64_t i = i0 + b;
          softmax_range(P.data() + b * C, lo[b], i);
          float acc = 0.0f;
          for (int64_t j = lo[b]; j <= i; ++j) acc += P[size_t(b * C + j)] * DP[size_t(b * C + j)];
          pdp[b] = acc;
        }
        std::fill(dqb.begin(), dqb.end(), 0.0f);
        // dS = P ∘ (dP − pdp)·scale; dq += dS·k (keys ascending), dk += dSᵀ·q and dv += Pᵀ·dout
        // (queries ascending).
        float* dqs[kQB];
        for (int64_t b = 0; b < kQB; ++b) dqs[b] = dqb.data() + b * hd;
        float ds[kQB], pj[kQB];
        for (int64_t j = jlo; j <= jhi; ++j) {
          for (int64_t b = 0; b < kQB; ++b) {
            const bool in = b < nb && j >= lo[b] && j <= i0 + b;
            pj[b] = in ? P[size_t(b * C + j)] : 0.0f;
            ds[b] = in ? pj[b] * (DP[size_t(b * C + j)] - pdp[b]) * s.scale : 0.0f;
          }
          backward_rows(ds, pj, k + j * nkv + kvh * hd, dk_local.data() + j * nkv + kvh * hd,
                        dv_local.data() + j * nkv + kvh * hd, qs, gos, dqs, nb, hd);
        }
        for (int64_t b = 0; b < nb; ++b) std::copy(dqb.data() + b * hd, dqb.data() + (b + 1) * hd, dq + (i0 + b) * nq + h * hd);
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
