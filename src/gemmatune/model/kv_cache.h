// Per-sequence KV cache: one entry per layer that computes its own K/V. Full-attention layers keep
// every position; sliding layers keep a ring of `window` slots (memory O(window), not O(context)).
// KV-shared layers (Gemma 4) have no entry: they read their donor's K/V.
#pragma once
#include <cstdint>
#include <vector>

#include "gemmatune/model/model.h"

namespace gt {

struct LayerCache {
  bool present = false;
  bool ring = false;
  int64_t row = 0;       // floats per position (kv heads * head_dim)
  int64_t cap = 0;       // slots allocated
  int64_t max_cap = 0;   // the most slots this layer will ever hold
  std::vector<float> k, v;
};

class KvCache {
 public:
  // max_context: the longest sequence this cache will hold (prompt + generated); full layers
  // allocate up to it as the sequence grows, sliding layers min(window, max_context).
  KvCache(const Model& m, int64_t max_context);

  int64_t pos() const { return pos_; }  // tokens processed so far (absolute position of the next)
  int64_t max_context() const { return max_context_; }
  const LayerCache& layer(int64_t i) const { return layers_[size_t(i)]; }
  // Makes room for `n` more positions (throws if max_context would be exceeded).
  void reserve_more(int64_t n);
  // Stores K/V rows for positions pos()..pos()+C-1 of layer i (only the last `cap` if a ring).
  void write(int64_t layer, const float* k, const float* v, int64_t stride, int64_t C);
  void advance(int64_t n) { pos_ += n; }
  void reset() { pos_ = 0; }
  size_t bytes() const;  // allocated bytes
  static size_t bytes_needed(const Model& m, int64_t context);  // at full size

 private:
  int64_t pos_ = 0, max_context_ = 0;
  std::vector<LayerCache> layers_;
};

}  // namespace gt
