// Inverted dropout with counter-based masks: element (t, i) of stream `stream` under `seed` is
// kept with probability 1 - p and then scaled by 1/(1 - p), as torch.nn.Dropout does in training.
// The mask is a pure function of (seed, stream, t, i): the backward pass, a recomputed layer
// (gradient checkpointing) and any thread count see the same mask without storing it.
#pragma once
#include <cstdint>

namespace gt {

// y[t, i] = x[t, i] * keep(seed, stream, t, i) / (1 - p) for rows t of width n (y may equal x).
// The backward of y = dropout(x) is the same call on dy (same seed, stream and shape).
void dropout_apply(const float* x, float* y, int64_t rows, int64_t n, double p, uint64_t seed, uint64_t stream);

}  // namespace gt
