// Rotary position embedding, rotate_half layout (pairs j and j + D/2), as transformers applies it:
// angle = float(pos) * inv_freq[j] in fp32; y[j] = x[j]cos − x[j+D/2]sin, y[j+D/2] = x[j+D/2]cos + x[j]sin.
#pragma once
#include <cstdint>

namespace gt {

// x: [tokens, heads, dim] in place; positions[t] is token t's absolute position.
void rope_forward(float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t dim, const float* inv_freq,
                  int64_t row_stride = 0);
// Backward (rotation by −angle), in place on the gradient.
void rope_backward(float* dx, const int64_t* positions, int64_t tokens, int64_t heads, int64_t dim, const float* inv_freq,
                   int64_t row_stride = 0);

}  // namespace gt
