// Workspace vectors that grow to the size a call needs and are then reused (no allocation in
// steady state).
#pragma once
#include <cstdint>
#include <vector>

namespace gt {

template <class T>
T* sized(std::vector<T>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace gt
