// Tokenizer: loading tokenizer.json, encoding (added tokens, normalizer, pre-tokenizer, BPE with
// byte fallback, post-processor) and decoding (decoder chain), with the semantics of Hugging
// Face `tokenizers` (tokenizer/added_vocabulary.rs, models/bpe/{model,word}.rs, decoders/*).
//
// Loading: the 33 MB Gemma file is mostly model.vocab and model.merges. A small JSON scanner
// walks the document once, checking its syntax; vocab and merges are read in place into flat
// tables (string arena + open-addressing index, pair -> (rank, id) table), and only the small
// sections (added_tokens, normalizer, ...) go through nlohmann::json.
//
// Encoding speed: BPE runs per word with a 4-ary heap of candidate merges (word.rs's algorithm,
// with its tie-breaking and stale-entry rule). Gemma has no pre-tokenizer, so a "word" is all
// the text between two added tokens; it is cut further before each '▁' across which no merge
// can reach (decided from the vocabulary at load, so the result is unchanged), and short words
// go through a per-thread cache.
//
// This file: encoding (added tokens, normalizer, pre-tokenizer, BPE, the word cache).
// (Moved from tokenizer.cc without changes to the code.)
#include "gemmatune/data/tokenizer_impl.h"

namespace gt {

using nlohmann::json;
using namespace ::gt::tokenizer_internal;
using detail::TokenizerImpl;

namespace detail {

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

std::string TokenizerImpl::normalize(std::string_view s) const {
  std::string cur(s), tmp;
  for (const NormStep& st : normalizer) {
    if (st.kind == NormStep::kReplace) {
      if (cur.find(st.a) == std::string::npos) continue;
      replace_all(cur, st.a, st.b, tmp);
      cur.swap(tmp);
    } else if (!cur.empty()) {
      cur.insert(0, st.a);
    }
  }
  return cur;
}

// AddedVocabulary::find_matches: cut the matches of trie out of s; emit(piece, -1) for text
// between matches and emit(match, id) for each added token.
template <class F>
void TokenizerImpl::split_added(const Trie& trie, std::string_view s, F&& emit) const {
  if (trie.empty()) {
    emit(s, -1);
    return;
  }
  size_t start_offset = 0, search = 0;
  size_t ms, me;
  int32_t tok;
  while (search < s.size() && trie.find(s, search, ms, me, tok)) {
    search = me;
    const AddedToken& a = added[size_t(tok)];
    size_t start = ms, stop = me;
    if (a.lstrip) {
      // Start of the whitespace run that ends at start (regex \s*$ on s[..start]).
      size_t ns = start;
      while (ns > 0) {
        size_t b = ns - 1;
        while (b > 0 && (uint8_t(s[b]) & 0xC0) == 0x80) --b;
        size_t len = utf8::char_len(s.data() + b, s.size() - b);
        if (b + len != ns || !utf8::is_whitespace(utf8::decode(s.data() + b, len)) ||
            (len == 1 && uint8_t(s[b]) >= 0x80))
          break;
        ns = b;
      }
      start = std::max(ns, start_offset);
    }
    if (a.rstrip) {
      while (stop < s.size()) {
        size_t len = utf8::char_len(s.data() + stop, s.size() - stop);
        if ((len == 1 && uint8_t(s[stop]) >= 0x80) || !utf8::is_whitespace(utf8::decode(s.data() + stop, len))) break;
        stop += len;
      }
      // The search goes on from the end of the match itself, as aho-corasick's find_iter does:
      // an added token inside the stripped whitespace (e.g. "\n") is still emitted, after
      // this one, exactly as `tokenizers` does.
    }
    if (start_offset < start) emit(s.substr(start_offset, start - start_offset), -1);
    emit(s.substr(start, stop - start), a.id);
    start_offset = stop;
  }
  if (start_offset < s.size()) emit(s.substr(start_offset), -1);
}

void TokenizerImpl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (normalizer.empty() && norm_trie.empty()) {
    pre_tokenize_and_bpe(piece, out);
    return;
  }
  std::string norm = normalize(piece);
  split_added(norm_trie, norm, [&](std::string_view p, int32_t id) {
    if (id >= 0) out.push_back(id);
    else pre_tokenize_and_bpe(p, out);
  });
}

namespace {

struct Seg {
  size_t start, end;
  bool match;
};

// Split with a literal pattern, as NormalizedString::split does (empty pieces dropped).
void split_pieces(std::string_view s, const PreTokStep& st, std::vector<std::string_view>& out) {
  if (s.empty()) return;
  std::vector<Seg> m;
  size_t prev = 0;
  for (size_t j = s.find(st.pattern); j != std::string_view::npos; j = s.find(st.pattern, prev)) {
    if (prev != j) m.push_back({prev, j, false});
    m.push_back({j, j + st.pattern.size(), true});
    prev = j + st.pattern.size();
  }
  if (prev != s.size()) m.push_back({prev, s.size(), false});
  if (st.invert)
    for (Seg& g : m) g.match = !g.match;
  std::vector<Seg> r;
  switch (st.behavior) {
    case SplitBehavior::kIsolated:
      r = m;
      break;
    case SplitBehavior::kRemoved:
      for (const Seg& g : m)
        if (!g.match) r.push_back(g);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Seg& g : m) {
        if (g.match && !prev_match && !r.empty()) r.back().end = g.end;
        else r.push_back(g);
        prev_match = g.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t k = m.size(); k-- > 0;) {
        const Seg& g = m[k];
        if (g.match && !prev_match && !r.empty()) r.back().start = g.start;
        else r.push_back(g);
        prev_match = g.match;
      }
      std::reverse(r.begin(), r.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool prev_match = false;
      for (const Seg& g : m) {
        if (g.match == prev_match && !r.empty()) r.back().end = g.end;
        else r.push_back(g);
        prev_match = g.match;
      }
      break;
    }
  }
  for (const Seg& g : r)
    if (g.end > g.start) out.push_back(s.substr(g.start, g.end - g.start));
}

}  // namespace

void TokenizerImpl::pre_tokenize_and_bpe(std::string_view s, std::vector<int32_t>& out) const {
  if (pre_tokenizer.empty()) {
    bpe(s, out);
    return;
  }
  std::vector<std::string_view> cur{s}, next;
  for (const PreTokStep& st : pre_tokenizer) {
    next.clear();
    for (std::string_view p : cur) split_pieces(p, st, next);
    cur.swap(next);
  }
  for (std::string_view p : cur) bpe(p, out);
}

namespace {

struct Symbol {
  int32_t id;
  int32_t prev, next;
  uint32_t len;  // bytes; 0 = merged away
};

struct HeapItem {
  uint32_t rank;
  uint32_t pos;
  int32_t id;
};

// 4-ary min-heap on (rank, pos): lowest rank first, leftmost on ties (word.rs Merge ordering).
class MergeHeap {
 public:
  void clear() { h_.clear(); }
  bool empty() const { return h_.empty(); }
  void add_unordered(const HeapItem& x) { h_.push_back(x); }
  void heapify() {
    if (h_.size() < 2) return;
    for (size_t i = (h_.size() - 2) / 4 + 1; i-- > 0;) sift_down(i, h_[i]);
  }
  void push(const HeapItem& x) {
    size_t i = h_.size();
    h_.push_back(x);
    uint64_t k = key(x);
    while (i > 0) {
      size_t parent = (i - 1) / 4;
      if (key(h_[parent]) <= k) break;
      h_[i] = h_[parent];
      i = parent;
    }
    h_[i] = x;
  }
  HeapItem pop() {
    HeapItem top = h_[0];
    HeapItem last = h_.back();
    h_.pop_back();
    if (!h_.empty()) sift_down(0, last);
    return top;
  }

 private:
  std::vector<HeapItem> h_;
  static uint64_t key(const HeapItem& x) { return (uint64_t(x.rank) << 32) | x.pos; }
  void sift_down(size_t i, HeapItem x) {
    const size_t n = h_.size();
    const uint64_t k = key(x);
    for (;;) {
      size_t c = 4 * i + 1;
      if (c >= n) break;
      size_t end = std::min(c + 4, n);
      size_t best = c;
      uint64_t bk = key(h_[c]);
      for (size_t j = c + 1; j < end; ++j) {
        uint64_t jk = key(h_[j]);
        if (jk < bk) {
          bk = jk;
          best = j;
        }
      }
      if (bk >= k) break;
      h_[i] = h_[best];
      i = best;
    }
    h_[i] = x;
  }
};

struct BpeScratch {
  std::vector<Symbol> syms;
  MergeHeap heap;
  std::string tmp;
};

}  // namespace

// BPE::merge_word + Word::merge_all.
// A word is split before a '▁' whose preceding character c is in the vocabulary, is not '▁'
// and is not in space_joiners. Every merge joins two adjacent symbols into a vocabulary token,
// so a merge across such a point would make a token containing "c▁", and there is none: the
// merges on each side are the same as on the whole word, and the result is identical. Chunks
// are about one word long, which keeps the merge heaps small.
void TokenizerImpl::bpe(std::string_view w, std::vector<int32_t>& out) const {
  if (!chunk_at_space) {
    bpe_cached(w, out);
    return;
  }
  size_t start = 0;
  bool prev_safe = false;
  const size_t n = w.size();
  for (size_t i = 0; i < n;) {
    uint8_t b = uint8_t(w[i]);
    if (b < 0x80) {
      prev_safe = cp_to_id[b] >= 0 && !std::binary_search(space_joiners.begin(), space_joiners.end(), uint32_t(b));
      ++i;
      continue;
    }
    size_t len = utf8::char_len(w.data() + i, n - i);
    if (len == 1) {  // invalid byte: falls back to bytes, never safe
      prev_safe = false;
      ++i;
      continue;
    }
    uint32_t cp = utf8::decode(w.data() + i, len);
    if (cp == kMetaspace) {
      if (prev_safe && i > start) {
        bpe_cached(w.substr(start, i - start), out);
        start = i;
      }
      prev_safe = false;
    } else {
      prev_safe = cp_to_id[cp] >= 0 && !std::binary_search(space_joiners.begin(), space_joiners.end(), cp);
    }
    i += len;
  }
  bpe_cached(w.substr(start), out);
}

namespace {

// Per-thread, direct-mapped cache of short words -> ids (BPE is a pure function of the word).
struct WordCache {
  static constexpr size_t kSlots = 16384;
  static constexpr size_t kMaxBytes = 38, kMaxIds = 6;
  struct Entry {
    uint64_t hash;
    uint8_t len = 0xFF;  // 0xFF: empty
    uint8_t n_ids = 0;
    char text[kMaxBytes];
    int32_t ids[kMaxIds];
  };
  uint64_t owner = 0;
  std::vector<Entry> entries;
};

}  // namespace

void TokenizerImpl::bpe_cached(std::string_view w, std::vector<int32_t>& out) const {
  if (w.size() > WordCache::kMaxBytes) {
    bpe_word(w, out);
    return;
  }
  thread_local WordCache cache;
  if (cache.owner != serial) {
    cache.entries.assign(WordCache::kSlots, WordCache::Entry());
    cache.owner = serial;
  }
  uint64_t h = hash_bytes(w.data(), w.size());
  WordCache::Entry& e = cache.entries[h & (WordCache::kSlots - 1)];
  if (e.hash == h && e.len == w.size() && std::memcmp(e.text, w.data(), w.size()) == 0) {
    out.insert(out.end(), e.ids, e.ids + e.n_ids);
    return;
  }
  size_t before = out.size();
  bpe_word(w, out);
  size_t n = out.size() - before;
  if (n <= WordCache::kMaxIds) {
    e.hash = h;
    e.len = uint8_t(w.size());
    e.n_ids = uint8_t(n);
    std::memcpy(e.text, w.data(), w.size());
    std::memcpy(e.ids, out.data() + before, n * sizeof(int32_t));
  }
}

void TokenizerImpl::bpe_word(std::string_view w, std::vector<int32_t>& out) const {
  if (w.empty()) return;
  if (ignore_merges) {
    int32_t id = vocab.find(w);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  thread_local BpeScratch scratch;
  std::vector<Symbol>& syms = scratch.syms;
  syms.clear();
  auto add = [&](int32_t id, uint32_t len) {
    int32_t n = int32_t(syms.size());
    if (n > 0) syms.back().next = n;
    syms.push_back(Symbol{id, n - 1, -1, len});
  };
  int32_t unk_pending = -1;
  uint32_t unk_len = 0;
  const bool simple = !has_prefix && !has_suffix;
  const size_t n = w.size();
  for (size_t i = 0; i < n;) {
    size_t len = utf8::char_len(w.data() + i, n - i);
    int32_t id = -1;
    std::string_view s;
    if (simple) {
      s = w.substr(i, len);
      if (!(len == 1 && uint8_t(w[i]) >= 0x80)) id = cp_to_id[utf8::decode(w.data() + i, len)];
    } else {
      std::string& t = scratch.tmp;
      t.clear();
      if (i > 0 && has_prefix) t += prefix;
      t.append(w.data() + i, len);
      if (i + len == n && has_suffix) t += suffix;
      s = t;
      id = vocab.find(s);
    }
    if (id >= 0) {
      if (unk_pending >= 0) {
        add(unk_pending, unk_len);
        unk_pending = -1;
      }
      add(id, uint32_t(len));
    } else {
      bool done = false;
      if (byte_fallback) {
        bool all = true;
        for (char c : s) all &= byte_ids[uint8_t(c)] >= 0;
        if (all) {
          for (char c : s) add(byte_ids[uint8_t(c)], 1);
          done = true;
        }
      }
      if (!done && has_unk) {
        if (unk_id < 0) fail(origin, ": the BPE unk_token '", unk_token, "' is not in model.vocab");
        if (unk_pending >= 0 && fuse_unk) {
          unk_len += uint32_t(len);
        } else {
          if (unk_pending >= 0) add(unk_pending, unk_len);
          unk_pending = unk_id;
          unk_len = uint32_t(len);
        }
      }
    }
    i += len;
  }
  if (unk_pending >= 0) add(unk_pending, unk_len);

  if (syms.size() > 1) {
    MergeHeap& heap = scratch.heap;
    heap.clear();
    constexpr size_t kAhead = 8;  // the pair lookups are cache misses: prefetch ahead
    for (size_t k = 0; k < kAhead && k + 1 < syms.size(); ++k)
      merges.prefetch(uint32_t(syms[k].id), uint32_t(syms[k + 1].id));
    for (size_t k = 0; k + 1 < syms.size(); ++k) {
      if (k + kAhead + 1 < syms.size())
        merges.prefetch(uint32_t(syms[k + kAhead].id), uint32_t(syms[k + kAhead + 1].id));
      if (const MergeTable::Slot* m = merges.find(uint32_t(syms[k].id), uint32_t(syms[k + 1].id)))
        heap.add_unordered(HeapItem{m->rank, uint32_t(k), m->id});
    }
    heap.heapify();
    while (!heap.empty()) {
      HeapItem top = heap.pop();
      Symbol& cur = syms[top.pos];
      if (cur.len == 0 || cur.next < 0) continue;
      Symbol right = syms[size_t(cur.next)];
      // Skip entries made stale by an earlier merge.
      const MergeTable::Slot* m = merges.find(uint32_t(cur.id), uint32_t(right.id));
      if (!m || m->id != top.id) continue;
      int32_t right_pos = cur.next;
      cur.id = top.id;
      cur.len += right.len;
      cur.next = right.next;
      syms[size_t(right_pos)].len = 0;
      if (right.next >= 0) syms[size_t(right.next)].prev = int32_t(top.pos);
      if (cur.prev >= 0) {
        const Symbol& p = syms[size_t(cur.prev)];
        if (const MergeTable::Slot* pm = merges.find(uint32_t(p.id), uint32_t(cur.id))) {
          heap.push(HeapItem{pm->rank, uint32_t(cur.prev), pm->id});
        }
      }
      if (cur.next >= 0) {
        const Symbol& nx = syms[size_t(cur.next)];
        if (const MergeTable::Slot* nm = merges.find(uint32_t(cur.id), uint32_t(nx.id))) {
          heap.push(HeapItem{nm->rank, top.pos, nm->id});
        }
      }
    }
  }
  for (const Symbol& s : syms)
    if (s.len != 0) out.push_back(s.id);
}

}  // namespace detail

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const TokenizerImpl& t = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  t.split_added(t.raw_trie, text, [&](std::string_view piece, int32_t id) {
    if (id >= 0) ids.push_back(id);
    else t.encode_piece(piece, ids);
  });
  if (add_special_tokens) {
    for (size_t k = 0; k < t.post_prefix.size(); ++k) {
      const auto& pre = t.post_prefix[k];
      const auto& post = t.post_suffix[k];
      if (!pre.empty()) ids.insert(ids.begin(), pre.begin(), pre.end());
      ids.insert(ids.end(), post.begin(), post.end());
    }
  }
  return ids;
}

}  // namespace gt
