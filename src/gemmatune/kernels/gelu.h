// Gated GELU (tanh approximation, PyTorch gelu(approximate="tanh")) used by every Gemma MLP.
#pragma once
#include <cstdint>

namespace gt {

float gelu_tanh(float x);
float gelu_tanh_grad(float x);
// out[r, i] = gelu_tanh(gate[r, i]) * up[r, i]; gate and up are rows of width n with strides ldg, ldu.
void gelu_gate_forward(const float* gate, int64_t ldg, const float* up, int64_t ldu, float* out, int64_t rows, int64_t n);
// Its backward, given dout [rows, n]: dgate = dout·up·gelu_tanh'(gate), dup = dout·gelu_tanh(gate);
// dgate and dup are rows of width n with strides lddg, lddu (they may be two halves of one row).
void gelu_gate_backward(const float* gate, int64_t ldg, const float* up, int64_t ldu, const float* dout, float* dgate,
                        int64_t lddg, float* dup, int64_t lddu, int64_t rows, int64_t n);

}  // namespace gt
