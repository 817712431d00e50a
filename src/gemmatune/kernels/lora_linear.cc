#include "gemmatune/kernels/lora_linear.h"

#include <algorithm>

#include "gemmatune/kernels/dropout.h"
#include "gemmatune/kernels/linear.h"
#include "gemmatune/kernels/matmul_tn.h"
#include "gemmatune/util/buffer.h"

namespace gt {

namespace {

Weight2D f32_matrix(const char* name, const float* data, int64_t n, int64_t k) {
  Weight2D w;
  w.name = name;
  w.dtype = DType::F32;
  w.data = data;
  w.n = n;
  w.k = k;
  return w;
}

// Expert e's B slice, gathered into ws.bcol as [out, r].
const float* expert_b(const LoraView& v, int64_t e, LoraScratch& ws) {
  const int64_t r = v.r, E = v.experts;
  float* bcol = sized(ws.bcol, v.out * r);
  for (int64_t o = 0; o < v.out; ++o)
    for (int64_t k = 0; k < r; ++k) bcol[o * r + k] = v.B[o * r * E + k * E + e];
  return bcol;
}

// y += scale·t·Bᵀ over n rows (t unscaled, [n, r]).
void add_scaled_b(const LoraView& v, const Weight2D& B, const float* t, int64_t n, float* y, LoraScratch& ws) {
  float* ts = sized(ws.ts, n * v.r);
  for (int64_t i = 0; i < n * v.r; ++i) ts[i] = t[i] * v.scale;
  linear(ts, n, B, y, /*accumulate=*/true);
}

}  // namespace

void lora_linear_forward(const LoraView& v, const float* x, int64_t T, float* y, float* t_save,
                         const LoraDropout* drop, LoraScratch& ws) {
  const Weight2D A = f32_matrix("lora_A", v.A, v.r, v.in);
  const Weight2D B = f32_matrix("lora_B", v.B, v.out, v.r);
  float* t = t_save ? t_save : sized(ws.t, T * v.r);
  if (drop && drop->p > 0) {
    float* xd = sized(ws.xd, T * v.in);
    dropout_apply(x, xd, T, v.in, drop->p, drop->seed, uint64_t(v.slot));
    x = xd;
  }
  linear(x, T, A, t);
  add_scaled_b(v, B, t, T, y, ws);
}

void lora_linear_backward(const LoraView& v, const float* x, const float* t_save, const float* dy, int64_t T,
                          float* dx, float* gA, float* gB, const LoraDropout* drop, LoraScratch& ws) {
  const int64_t r = v.r;
  const float s = v.scale;
  const Weight2D A = f32_matrix("lora_A", v.A, r, v.in);
  const Weight2D B = f32_matrix("lora_B", v.B, v.out, r);
  float* u = sized(ws.u, T * r);
  linear_backward_input(dy, T, B, u);  // u = dy·B  [T, r]
  // dB[o, k] += s Σ_t dy[t, o] t_save[t, k]
  matmul_tn_acc(dy, v.out, t_save, r, T, v.out, r, gB, s);
  const bool dropped = drop && drop->p > 0;
  if (dropped) {  // the adapter saw xd = dropout(x): the same mask, regenerated from the seed
    float* xd = sized(ws.xd, T * v.in);
    dropout_apply(x, xd, T, v.in, drop->p, drop->seed, uint64_t(v.slot));
    x = xd;
  }
  // dA[k, i] += s Σ_t u[t, k] xd[t, i]
  matmul_tn_acc(u, r, x, v.in, T, r, v.in, gA, s);
  for (int64_t i = 0; i < T * r; ++i) u[i] *= s;
  if (!dropped) {
    linear_backward_input(u, T, A, dx, true);  // dx += s·u·A
    return;
  }
  float* d = sized(ws.dxd, T * v.in);  // dx += dropout(s·u·A)
  linear_backward_input(u, T, A, d);
  dropout_apply(d, d, T, v.in, drop->p, drop->seed, uint64_t(v.slot));
  for (int64_t i = 0; i < T * v.in; ++i) dx[i] += d[i];
}

void lora_expert_forward(const LoraView& v, int64_t e, const float* x, int64_t n, float* y, float* t_save,
                         LoraScratch& ws) {
  const Weight2D Ae = f32_matrix("lora_A", v.A + e * v.r * v.in, v.r, v.in);
  const Weight2D Be = f32_matrix("lora_B", expert_b(v, e, ws), v.out, v.r);
  float* t = t_save ? t_save : sized(ws.t, n * v.r);
  linear(x, n, Ae, t);
  add_scaled_b(v, Be, t, n, y, ws);
}

void lora_expert_backward(const LoraView& v, int64_t e, const float* x, const float* t_save, const float* dy,
                          int64_t n, float* dx, float* gA, float* gB, LoraScratch& ws) {
  const int64_t r = v.r, E = v.experts;
  const float s = v.scale;
  const Weight2D Ae = f32_matrix("lora_A", v.A + e * r * v.in, r, v.in);
  const Weight2D Be = f32_matrix("lora_B", expert_b(v, e, ws), v.out, r);
  float* u = sized(ws.u, n * r);
  linear_backward_input(dy, n, Be, u);
  // The slices' gradients are formed whole, then added into the strided places of gA / gB.
  float* dBe = sized(ws.dB, v.out * r);
  float* dAe = sized(ws.dA, r * v.in);
  std::fill(dBe, dBe + v.out * r, 0.0f);
  std::fill(dAe, dAe + r * v.in, 0.0f);
  matmul_tn_acc(dy, v.out, t_save, r, n, v.out, r, dBe, s);
  matmul_tn_acc(u, r, x, v.in, n, r, v.in, dAe, s);
  for (int64_t k = 0; k < r; ++k)
    for (int64_t i = 0; i < v.in; ++i) gA[(e * r + k) * v.in + i] += dAe[k * v.in + i];
  for (int64_t o = 0; o < v.out; ++o)
    for (int64_t k = 0; k < r; ++k) gB[o * r * E + k * E + e] += dBe[o * r + k];
  for (int64_t i = 0; i < n * r; ++i) u[i] *= s;
  linear_backward_input(u, n, Ae, dx, true);
}

}  // namespace gt
