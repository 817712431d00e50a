// Tokenizer internals: the flat hash tables for vocab and merges, and the added-token trie.
// (Moved from tokenizer.cc without changes to the code.)
#pragma once
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

#include "gemmatune/data/tokenizer.h"

namespace gt::tokenizer_internal {

// ---------------------------------------------------------------------------------------------
// Hashing and flat tables
// ---------------------------------------------------------------------------------------------

inline uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

inline uint64_t hash_bytes(const char* s, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t(n) * 0x100000001B3ull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, s, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    s += 8;
    n -= 8;
  }
  if (n) {
    uint64_t w = 0;
    std::memcpy(&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 31;
  }
  return mix64(h);
}

inline size_t table_size_for(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  return cap;
}

// (left id, right id) -> (rank, merged id), open addressing with linear probing.
class MergeTable {
 public:
  struct Slot {
    uint64_t key;
    uint32_t rank;
    int32_t id;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap * 3 < n * 5) cap <<= 1;  // load <= 0.6
    slots_.assign(cap, Slot{kEmpty, 0, -1});
    mask_ = slots_.size() - 1;
  }
  // A pair given twice keeps the later rank, as a HashMap built from the merges list does.
  void insert(uint32_t a, uint32_t b, uint32_t rank, int32_t id) {
    if ((count_ + 1) * 4 > slots_.size() * 3) grow();
    uint64_t key = (uint64_t(a) << 32) | b;
    size_t i = mix64(key) & mask_;
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    if (slots_[i].key == kEmpty) ++count_;
    slots_[i] = Slot{key, rank, id};
  }
  void prefetch(uint32_t a, uint32_t b) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[mix64((uint64_t(a) << 32) | b) & mask_]);
  }
  const Slot* find(uint32_t a, uint32_t b) const {
    if (count_ == 0) return nullptr;
    uint64_t key = (uint64_t(a) << 32) | b;
    size_t i = mix64(key) & mask_;
    for (;;) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s;
      if (s.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  std::vector<Slot> slots_;
  size_t mask_ = 0, count_ = 0;
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    reserve(std::max<size_t>(16, old.size()));  // doubles
    count_ = 0;
    for (const Slot& s : old)
      if (s.key != kEmpty) insert(uint32_t(s.key >> 32), uint32_t(s.key), s.rank, s.id);
  }
};

// model.vocab: the strings of all ids in one arena, and a string -> id hash index over it.
class Vocab {
 public:
  // Adds (token, id); returns false when id already has a token.
  bool add(std::string_view token, int32_t id) {
    if (size_t(id) >= off_.size()) {
      off_.resize(size_t(id) + 1, 0);
      len_.resize(size_t(id) + 1, kAbsent);
    }
    if (len_[size_t(id)] != kAbsent) return false;
    off_[size_t(id)] = uint32_t(arena_.size());
    len_[size_t(id)] = uint32_t(token.size());
    arena_.append(token);
    ++count_;
    return true;
  }
  // Builds the index; on_duplicate(first id, second id) for a token given twice.
  template <class F>
  void build(F&& on_duplicate) {
    slots_.assign(table_size_for(count_), Slot{0, -1, 0, 0});
    mask_ = slots_.size() - 1;
    std::vector<uint64_t> hashes(off_.size());
    for (size_t id = 0; id < off_.size(); ++id)
      if (len_[id] != kAbsent) hashes[id] = hash(at(int32_t(id)));
    constexpr size_t kAhead = 16;  // the inserts are cache misses: prefetch their slots
    for (size_t id = 0; id < off_.size(); ++id) {
      if (id + kAhead < off_.size()) prefetch(hashes[id + kAhead]);
      if (len_[id] == kAbsent) continue;
      std::string_view s = at(int32_t(id));
      uint64_t h = hashes[id];
      size_t i = h & mask_;
      uint32_t tag = uint32_t(h >> 32);
      while (slots_[i].id >= 0) {
        if (slots_[i].tag == tag && slot_view(slots_[i]) == s) on_duplicate(slots_[i].id, int32_t(id));
        i = (i + 1) & mask_;
      }
      slots_[i] = Slot{tag, int32_t(id), off_[id], len_[id]};
    }
  }
  static uint64_t hash(std::string_view s) { return hash_bytes(s.data(), s.size()); }
  int32_t find(std::string_view s) const { return find_hashed(s, hash(s)); }
  int32_t find_hashed(std::string_view s, uint64_t h) const {
    if (slots_.empty()) return -1;
    size_t i = h & mask_;
    uint32_t tag = uint32_t(h >> 32);
    for (;;) {
      const Slot& sl = slots_[i];
      if (sl.id < 0) return -1;
      if (sl.tag == tag && sl.len == s.size() && std::memcmp(arena_.data() + sl.off, s.data(), s.size()) == 0)
        return sl.id;
      i = (i + 1) & mask_;
    }
  }
  // Batched lookups: prefetch(h) the slot, later prefetch_text(h) the string it points to.
  void prefetch(uint64_t h) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[h & mask_]);
  }
  void prefetch_text(uint64_t h) const {
    if (slots_.empty()) return;
    const Slot& sl = slots_[h & mask_];
    if (sl.id >= 0 && sl.tag == uint32_t(h >> 32)) __builtin_prefetch(arena_.data() + sl.off);
  }
  bool has(int32_t id) const { return id >= 0 && size_t(id) < len_.size() && len_[size_t(id)] != kAbsent; }
  std::string_view at(int32_t id) const { return std::string_view(arena_.data() + off_[size_t(id)], len_[size_t(id)]); }
  size_t id_limit() const { return off_.size(); }  // max id + 1
  size_t count() const { return count_; }
  void reserve(size_t ids, size_t bytes) {
    off_.reserve(ids);
    len_.reserve(ids);
    arena_.reserve(bytes);
  }

 private:
  static constexpr uint32_t kAbsent = ~uint32_t(0);
  struct Slot {
    uint32_t tag;
    int32_t id;
    uint32_t off, len;
  };
  std::string arena_;
  std::vector<uint32_t> off_, len_;
  std::vector<Slot> slots_;
  size_t mask_ = 0, count_ = 0;
  std::string_view slot_view(const Slot& sl) const { return std::string_view(arena_.data() + sl.off, sl.len); }
};

// ---------------------------------------------------------------------------------------------
// Added-token matcher: leftmost-longest over a byte trie (aho-corasick LeftmostLongest semantics)
// ---------------------------------------------------------------------------------------------

class Trie {
 public:
  Trie() { nodes_.emplace_back(); }
  void add(std::string_view pattern, int32_t token_index) {
    if (pattern.empty()) return;
    int32_t n = 0;
    for (char ch : pattern) {
      uint8_t b = uint8_t(ch);
      int32_t next = child(n, b);
      if (next < 0) {
        next = int32_t(nodes_.size());
        nodes_.emplace_back();
        nodes_[size_t(n)].kids.push_back({b, next});
      }
      n = next;
    }
    nodes_[size_t(n)].token = token_index;
    first_[uint8_t(pattern[0])] = true;
    empty_ = false;
  }
  bool empty() const { return empty_; }

  // Finds the leftmost-longest match in s at or after from. Returns false when none.
  bool find(std::string_view s, size_t from, size_t& mstart, size_t& mend, int32_t& token) const {
    const size_t n = s.size();
    for (size_t i = from; i < n; ++i) {
      if (!first_[uint8_t(s[i])]) continue;
      int32_t node = 0;
      int32_t best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < n; ++j) {
        node = child(node, uint8_t(s[j]));
        if (node < 0) break;
        if (nodes_[size_t(node)].token >= 0) {
          best = nodes_[size_t(node)].token;
          best_end = j + 1;
        }
      }
      if (best >= 0) {
        mstart = i;
        mend = best_end;
        token = best;
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    int32_t token = -1;
    std::vector<std::pair<uint8_t, int32_t>> kids;
  };
  std::vector<Node> nodes_;
  bool first_[256] = {};
  bool empty_ = true;
  int32_t child(int32_t n, uint8_t b) const {
    for (const auto& [k, c] : nodes_[size_t(n)].kids)
      if (k == b) return c;
    return -1;
  }
};

}  // namespace gt::tokenizer_internal
