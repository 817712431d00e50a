#include "gemmatune/model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "gemmatune/util/error.h"

namespace gt {

KvCache::KvCache(const Model& m, int64_t max_context) : max_context_(max_context) {
  GT_CHECK(max_context > 0, "KvCache: max_context must be positive");
  for (const LayerSpec& s : m.specs()) {
    LayerCache c;
    if (s.kv_donor < 0) {
      c.present = true;
      c.row = s.num_kv_heads * s.head_dim;
      c.ring = s.window > 0 && s.window < max_context;
      c.max_cap = c.ring ? s.window : max_context;
      if (c.ring) {  // a ring's slot mapping depends on its size: allocate it whole, once
        c.cap = c.max_cap;
        c.k.resize(size_t(c.cap * c.row));
        c.v.resize(size_t(c.cap * c.row));
      }
    }
    layers_.push_back(std::move(c));
  }
}

void KvCache::reserve_more(int64_t n) {
  const int64_t need = pos_ + n;
  if (need > max_context_)
    fail("KV cache: sequence of ", need, " tokens exceeds the cache's max context of ", max_context_);
  for (auto& c : layers_) {
    if (!c.present) continue;
    const int64_t want = std::min(c.max_cap, need);
    if (want <= c.cap) continue;
    // Grow geometrically but never past the layer's maximum.
    const int64_t cap = std::min(c.max_cap, std::max(want, c.cap * 2));
    c.k.resize(size_t(cap * c.row));
    c.v.resize(size_t(cap * c.row));
    c.cap = cap;
  }
}

void KvCache::write(int64_t layer, const float* k, const float* v, int64_t stride, int64_t C) {
  LayerCache& c = layers_[size_t(layer)];
  if (!c.present) return;
  const int64_t first = c.ring ? std::max<int64_t>(0, C - c.cap) : 0;
  for (int64_t i = first; i < C; ++i) {
    const int64_t p = pos_ + i;
    const int64_t slot = c.ring ? p % c.cap : p;
    GT_CHECK(slot < c.cap, "KV cache: position ", p, " outside capacity ", c.cap, " of layer ", layer);
    std::memcpy(&c.k[size_t(slot * c.row)], k + i * stride, size_t(c.row) * 4);
    std::memcpy(&c.v[size_t(slot * c.row)], v + i * stride, size_t(c.row) * 4);
  }
}

size_t KvCache::bytes() const {
  size_t b = 0;
  for (const auto& c : layers_) b += (c.k.capacity() + c.v.capacity()) * 4;
  return b;
}

size_t KvCache::bytes_needed(const Model& m, int64_t context) {
  size_t b = 0;
  for (const LayerSpec& s : m.specs()) {
    if (s.kv_donor >= 0) continue;
    const int64_t slots = (s.window > 0) ? std::min(s.window, context) : context;
    b += size_t(2 * slots * s.num_kv_heads * s.head_dim) * 4;
  }
  return b;
}

}  // namespace gt
