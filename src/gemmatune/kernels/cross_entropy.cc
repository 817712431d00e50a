#include "gemmatune/kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemmatune/kernels/rmsnorm.h"
#include "gemmatune/kernels/vec_math.h"
#include "gemmatune/util/error.h"

namespace gt {

void softcap_forward(float* x, int64_t n, float cap) {
  if (!(cap > 0)) return;
  const __m256 c = _mm256_set1_ps(cap), ic = _mm256_set1_ps(1.0f / cap);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = vec::tail_mask(n - i);
    _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(c, vec::tanh8(_mm256_mul_ps(_mm256_maskload_ps(x + i, m), ic))));
  }
}

namespace {
// The row's cross-entropy, its target already checked (no exception may leave the OpenMP region
// of cross_entropy_chunked). The max, the sum of exponentials (f32 exps summed in double lanes)
// and the gradient run on 8 lanes (kernels/vec_math.h); each element's value depends on that
// element, the row's max and its sum alone, so the result does not depend on the thread count.
double ce_row(float* l, int64_t V, int32_t target, float cap, double denom, bool grad) {
  const bool softcap = cap > 0;
  if (softcap) softcap_forward(l, V, cap);
  __m256 vmx = _mm256_set1_ps(-INFINITY);
  for (int64_t j = 0; j < V; j += 8) {
    const __m256i m = vec::tail_mask(V - j);
    const __m256 x = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(l + j, m), _mm256_castsi256_ps(m));
    vmx = _mm256_max_ps(vmx, x);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmx);
  float mx = lanes[0];
  for (int k = 1; k < 8; ++k) mx = std::max(mx, lanes[k]);
  const __m256 shift = _mm256_set1_ps(mx);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  for (int64_t j = 0; j < V; j += 8) {
    const __m256i m = vec::tail_mask(V - j);
    __m256 e = vec::exp8(_mm256_sub_ps(_mm256_maskload_ps(l + j, m), shift));
    e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double sums[4];
  _mm256_store_pd(sums, _mm256_add_pd(s0, s1));
  const double ls = std::log((sums[0] + sums[1]) + (sums[2] + sums[3]));
  const double ce = double(mx) + ls - double(l[target]);
  if (!grad) return ce;
  // d/dlogit of CE/denom = (softmax − onehot)/denom, then through the softcap: × (1 − tanh²),
  // softmax_j = exp((l_j − max) − log Σ).
  const float target_logit = l[target];
  const __m256 lsv = _mm256_set1_ps(float(ls)), inv = _mm256_set1_ps(float(1.0 / denom));
  const __m256 one = _mm256_set1_ps(1.0f), icap = _mm256_set1_ps(softcap ? 1.0f / cap : 0.0f);
  for (int64_t j = 0; j < V; j += 8) {
    const __m256i m = vec::tail_mask(V - j);
    const __m256 x = _mm256_maskload_ps(l + j, m);
    __m256 g = _mm256_mul_ps(vec::exp8(_mm256_sub_ps(_mm256_sub_ps(x, shift), lsv)), inv);
    if (softcap) {
      const __m256 th = _mm256_mul_ps(x, icap);
      g = _mm256_mul_ps(g, _mm256_fnmadd_ps(th, th, one));
    }
    _mm256_maskstore_ps(l + j, m, g);
  }
  // The target's one-hot term, from its softmax value computed the same way.
  {
    float p = vec::first_lane(vec::exp8(_mm256_set1_ps((target_logit - mx) - float(ls))));
    float g = float(double(p) - 1.0) * float(1.0 / denom);
    if (softcap) {
      const float th = target_logit / cap;
      g *= 1.0f - th * th;
    }
    l[target] = g;
  }
  return ce;
}
}  // namespace

double cross_entropy_row(float* l, int64_t V, int32_t target, float cap, double denom, bool grad) {
  if (target < 0 || target >= V) fail("loss: target token ", target, " is outside the vocabulary (", V, ")");
  return ce_row(l, V, target, cap, denom, grad);
}

double cross_entropy_chunked(const LmHeadLoss& lm, const float* h, int64_t H, const int64_t* rows,
                             const int32_t* targets, int64_t n, double denom, float* dh) {
  const int64_t V = lm.head->n;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i)
    if (targets[i] < 0 || targets[i] >= V) fail("loss: target token ", targets[i], " is outside the vocabulary (", V, ")");
  // Workspace kept across calls (one per calling thread): the 128 MiB logit chunk is not
  // allocated, page-faulted and zeroed again at every micro-batch.
  thread_local std::vector<float> x, hx, rs, logits, dx, dhr;
  thread_local std::vector<double> ce;
  for (int64_t r0 = 0; r0 < n; r0 += kLossChunkRows) {
    const int64_t R = std::min<int64_t>(kLossChunkRows, n - r0);
    hx.resize(size_t(R * H));
    x.resize(size_t(R * H));
    rs.resize(size_t(R));
    for (int64_t r = 0; r < R; ++r) std::memcpy(&hx[size_t(r * H)], h + rows[r0 + r] * H, size_t(H) * 4);
    rmsnorm_forward(hx.data(), lm.norm_weight, x.data(), R, H, lm.eps, rs.data());
    logits.resize(size_t(R * V));
    linear(x.data(), R, *lm.head, logits.data());
    // Rows in parallel, their losses added in row order (the same sum for any thread count).
    // (Plain pointers: inside the parallel region a thread_local name would be the worker's own.)
    ce.assign(size_t(R), 0.0);
    double* cep = ce.data();
    float* lg = logits.data();
    const int32_t* tg = targets + r0;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) cep[r] = ce_row(lg + r * V, V, tg[r], lm.softcap, denom, dh != nullptr);
    for (int64_t r = 0; r < R; ++r) sum += ce[size_t(r)];
    if (!dh) continue;
    dx.resize(size_t(R * H));
    linear_backward_input(logits.data(), R, *lm.head, dx.data());
    dhr.resize(size_t(R * H));
    rmsnorm_backward(hx.data(), lm.norm_weight, dx.data(), rs.data(), dhr.data(), R, H);
    for (int64_t r = 0; r < R; ++r) std::memcpy(dh + rows[r0 + r] * H, &dhr[size_t(r * H)], size_t(H) * 4);
  }
  return sum;
}

}  // namespace gt
