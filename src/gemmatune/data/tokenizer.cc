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
#include "gemmatune/data/tokenizer.h"

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

namespace gt {

using nlohmann::json;

namespace {

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

size_t table_size_for(size_t n) {
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
// JSON scanner for the big sections
// ---------------------------------------------------------------------------------------------

class Scanner {
 public:
  Scanner(std::string_view doc, std::string_view span, const std::string& origin)
      : doc_(doc), p_(span.data()), end_(span.data() + span.size()), origin_(origin) {}

  [[noreturn]] void fail_at(const char* at, const std::string& what) const {
    size_t line = 1, col = 1;
    for (const char* q = doc_.data(); q < at && q < doc_.data() + doc_.size(); ++q) {
      if (*q == '\n') {
        ++line;
        col = 1;
      } else if ((uint8_t(*q) & 0xC0) != 0x80) {
        ++col;
      }
    }
    fail(origin_, ":", line, ":", col, ": bad tokenizer JSON: ", what);
  }

  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  char peek() {
    ws();
    return p_ < end_ ? *p_ : '\0';
  }
  bool at_end() {
    ws();
    return p_ >= end_;
  }
  const char* pos() {
    ws();
    return p_;
  }
  std::string found() const {
    if (p_ >= end_) return "end of input";
    char c = *p_;
    if (uint8_t(c) < 0x20 || uint8_t(c) >= 0x80) return str("byte 0x", std::hex, int(uint8_t(c)));
    return str("'", c, "'");
  }
  void expect(char c, const char* ctx) {
    ws();
    if (p_ >= end_ || *p_ != c) fail_at(p_, str("expected '", c, "' ", ctx, ", found ", found()));
    ++p_;
  }

  // Reads a JSON string (p_ at the opening quote after ws) into out.
  void string(std::string& out, const char* ctx) {
    ws();
    if (p_ >= end_ || *p_ != '"') fail_at(p_, str("expected a string ", ctx, ", found ", found()));
    const char* start = p_;
    ++p_;
    out.clear();
    for (;;) {
      const char* q = p_;
      while (q < end_ && *q != '"' && *q != '\\' && uint8_t(*q) >= 0x20) ++q;
      out.append(p_, size_t(q - p_));
      p_ = q;
      if (p_ >= end_) fail_at(start, "unterminated string");
      char c = *p_;
      if (c == '"') {
        ++p_;
        return;
      }
      if (c != '\\') fail_at(p_, "raw control character inside a string");
      if (p_ + 1 >= end_) fail_at(start, "unterminated string");
      char e = p_[1];
      p_ += 2;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp = hex4(p_ - 2);
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p_ + 1 < end_ && p_[0] == '\\' && p_[1] == 'u') {
              p_ += 2;
              uint32_t lo = hex4(p_ - 2);
              if (lo < 0xDC00 || lo > 0xDFFF) fail_at(p_ - 6, "unpaired surrogate in \\u escape");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else {
              fail_at(p_ - 6, "unpaired surrogate in \\u escape");
            }
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail_at(p_ - 6, "unpaired surrogate in \\u escape");
          }
          utf8::append(out, cp);
          break;
        }
        default: fail_at(p_ - 2, str("invalid escape '\\", e, "'"));
      }
    }
  }

  int64_t integer(const char* ctx) {
    ws();
    const char* start = p_;
    bool neg = false;
    if (p_ < end_ && *p_ == '-') {
      neg = true;
      ++p_;
    }
    if (p_ >= end_ || *p_ < '0' || *p_ > '9') fail_at(start, str("expected an integer ", ctx, ", found ", found()));
    int64_t v = 0;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      if (v > (int64_t(1) << 40)) fail_at(start, str("integer out of range ", ctx));
      v = v * 10 + (*p_ - '0');
      ++p_;
    }
    if (p_ < end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E'))
      fail_at(start, str("expected an integer ", ctx, ", found a float"));
    return neg ? -v : v;
  }

  // Skips one value, checking its syntax, and returns its text.
  std::string_view value(int depth = 0) {
    ws();
    const char* start = p_;
    if (depth > 256) fail_at(p_, "nesting too deep");
    if (p_ >= end_) fail_at(p_, "expected a value, found end of input");
    char c = *p_;
    if (c == '{') {
      ++p_;
      if (peek() == '}') {
        ++p_;
      } else {
        for (;;) {
          skip_string("as an object key");
          expect(':', "after an object key");
          value(depth + 1);
          char d = peek();
          if (d == ',') {
            ++p_;
            continue;
          }
          if (d == '}') {
            ++p_;
            break;
          }
          fail_at(p_, str("expected ',' or '}' in an object, found ", found()));
        }
      }
    } else if (c == '[') {
      ++p_;
      if (peek() == ']') {
        ++p_;
      } else {
        for (;;) {
          value(depth + 1);
          char d = peek();
          if (d == ',') {
            ++p_;
            continue;
          }
          if (d == ']') {
            ++p_;
            break;
          }
          fail_at(p_, str("expected ',' or ']' in an array, found ", found()));
        }
      }
    } else if (c == '"') {
      skip_string("");
    } else if (c == 't' || c == 'f' || c == 'n') {
      const char* lit = c == 't' ? "true" : c == 'f' ? "false" : "null";
      size_t n = std::strlen(lit);
      if (size_t(end_ - p_) < n || std::memcmp(p_, lit, n) != 0) fail_at(p_, str("unexpected ", found()));
      p_ += n;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      number();
    } else {
      fail_at(p_, str("expected a value, found ", found()));
    }
    return std::string_view(start, size_t(p_ - start));
  }

  // Calls f(key) for each member; f must consume the value.
  template <class F>
  void object(const char* ctx, F&& f) {
    expect('{', ctx);
    if (peek() == '}') {
      ++p_;
      return;
    }
    std::string key;
    for (;;) {
      string(key, ctx);
      expect(':', ctx);
      f(key);
      char d = peek();
      if (d == ',') {
        ++p_;
        continue;
      }
      if (d == '}') {
        ++p_;
        return;
      }
      fail_at(p_, str("expected ',' or '}' ", ctx, ", found ", found()));
    }
  }

  // Calls f() for each element; f must consume it.
  template <class F>
  void array(const char* ctx, F&& f) {
    expect('[', ctx);
    if (peek() == ']') {
      ++p_;
      return;
    }
    for (;;) {
      f();
      char d = peek();
      if (d == ',') {
        ++p_;
        continue;
      }
      if (d == ']') {
        ++p_;
        return;
      }
      fail_at(p_, str("expected ',' or ']' ", ctx, ", found ", found()));
    }
  }

 private:
  std::string_view doc_;
  const char* p_;
  const char* end_;
  const std::string& origin_;

  uint32_t hex4(const char* esc) {
    if (end_ - p_ < 4) fail_at(esc, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = p_[i];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= uint32_t(h - '0');
      else if (h >= 'a' && h <= 'f') v |= uint32_t(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= uint32_t(h - 'A' + 10);
      else fail_at(esc, "bad \\u escape");
    }
    p_ += 4;
    return v;
  }

  void skip_string(const char* ctx) {
    ws();
    if (p_ >= end_ || *p_ != '"') fail_at(p_, str("expected a string ", ctx, ", found ", found()));
    const char* start = p_;
    ++p_;
    for (;;) {
      while (p_ < end_ && *p_ != '"' && *p_ != '\\' && uint8_t(*p_) >= 0x20) ++p_;
      if (p_ >= end_) fail_at(start, "unterminated string");
      if (*p_ == '"') {
        ++p_;
        return;
      }
      if (*p_ != '\\') fail_at(p_, "raw control character inside a string");
      if (p_ + 1 >= end_) fail_at(start, "unterminated string");
      char e = p_[1];
      if (e == 'u') {
        p_ += 2;
        hex4(p_ - 2);
      } else if (std::strchr("\"\\/bfnrt", e) && e != '\0') {
        p_ += 2;
      } else {
        fail_at(p_, str("invalid escape '\\", e, "'"));
      }
    }
  }

  void number() {
    const char* start = p_;
    if (*p_ == '-') ++p_;
    if (p_ >= end_ || *p_ < '0' || *p_ > '9') fail_at(start, "bad number");
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      if (p_ >= end_ || *p_ < '0' || *p_ > '9') fail_at(start, "bad number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || *p_ < '0' || *p_ > '9') fail_at(start, "bad number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
  }
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

// ---------------------------------------------------------------------------------------------
// Components
// ---------------------------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

struct NormStep {
  enum Kind { kReplace, kPrepend } kind;
  std::string a, b;  // Replace: pattern, content. Prepend: prefix.
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokStep {
  std::string pattern;
  SplitBehavior behavior;
  bool invert;
};

struct DecStep {
  enum Kind { kReplace, kByteFallback, kFuse, kStrip } kind;
  std::string pattern, content;  // Replace
  uint32_t strip_char = 0;       // Strip
  size_t start = 0, stop = 0;
};

void replace_all(std::string_view s, std::string_view pattern, std::string_view content, std::string& out) {
  out.clear();
  size_t i = 0;
  for (;;) {
    size_t j = s.find(pattern, i);
    if (j == std::string_view::npos) break;
    out.append(s.data() + i, j - i);
    out.append(content);
    i = j + pattern.size();
  }
  out.append(s.data() + i, s.size() - i);
}

// A token string of the form <0xNN>, read as Rust's u8::from_str_radix(&t[3..5], 16) would.
bool byte_token(std::string_view t, uint8_t& byte) {
  if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return false;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = hex(t[3]), lo = hex(t[4]);
  if (t[3] == '+' && lo >= 0) {
    byte = uint8_t(lo);
    return true;
  }
  if (hi < 0 || lo < 0) return false;
  byte = uint8_t(hi * 16 + lo);
  return true;
}

const char* kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
constexpr uint32_t kMetaspace = 0x2581;             // '▁'
std::atomic<uint64_t> g_tokenizer_serial{0};

}  // namespace

// ---------------------------------------------------------------------------------------------
// The implementation object
// ---------------------------------------------------------------------------------------------

namespace detail {

struct TokenizerImpl {
  std::string origin;

  // Ids.
  int32_t n_ids = 0;
  std::vector<std::string> pieces;     // token string by id (added content wins)
  std::vector<uint8_t> has_token;      // id has a token string
  std::vector<uint8_t> special;        // id's token string is a special added token
  Vocab vocab;                         // model.vocab
  std::unordered_map<std::string, int32_t> added_index;
  std::vector<AddedToken> added;  // one per distinct content, latest flags
  Trie raw_trie, norm_trie;       // non-normalized / normalized added tokens
  int32_t bos = -1, eos = -1, pad = -1;

  // BPE.
  MergeTable merges;
  std::vector<int32_t> cp_to_id;  // single code point -> id (only without prefix/suffix)
  int32_t byte_ids[256];
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  bool has_unk = false;
  std::string unk_token, prefix, suffix;
  bool has_prefix = false, has_suffix = false;
  int32_t unk_id = -1;
  // Cutting words before '▁' where no merge can cross (see Loader::plan_chunking).
  bool chunk_at_space = false;
  std::vector<uint32_t> space_joiners;  // X such that some token contains "X▁" (X != '▁')
  uint64_t serial = 0;                  // identifies this tokenizer in the per-thread word caches

  // Pipeline.
  std::vector<NormStep> normalizer;
  std::vector<PreTokStep> pre_tokenizer;
  std::vector<std::vector<int32_t>> post_prefix, post_suffix;  // applied in order
  bool has_decoder = false;
  std::vector<DecStep> decoder;
  // Streaming plan for per-token decoder chains.
  bool streamable = false;
  std::vector<DecStep> stream_pre, stream_post;
  bool stream_bytes = false;

  // ---- encoding ----
  std::string normalize(std::string_view s) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void pre_tokenize_and_bpe(std::string_view s, std::vector<int32_t>& out) const;
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  void bpe_word(std::string_view word, std::vector<int32_t>& out) const;
  void bpe_cached(std::string_view word, std::vector<int32_t>& out) const;
  template <class F>
  void split_added(const Trie& trie, std::string_view s, F&& emit) const;

  // ---- decoding ----
  void apply_steps(const std::vector<DecStep>& steps, std::vector<std::string>& tokens) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const;
  // Added tokens with normalized=true decode from their normalized form (tokenizers >= 0.20
  // hands the decoder the string the normalizer made, so that it can undo it).
  std::unordered_map<int32_t, std::string> decode_override;
  const std::string& decode_piece(int32_t id) const {
    if (!decode_override.empty()) {
      auto it = decode_override.find(id);
      if (it != decode_override.end()) return it->second;
    }
    return pieces[size_t(id)];
  }
  bool keep(int32_t id, bool skip_special) const {
    return id >= 0 && id < n_ids && has_token[size_t(id)] && !(skip_special && special[size_t(id)]);
  }
};

}  // namespace detail

namespace {

using detail::TokenizerImpl;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

class Loader {
 public:
  Loader(const std::string& text, const std::string& origin, TokenizerImpl& t)
      : doc_(text), origin_(origin), t_(t) {}

  void load() {
    Scanner top(doc_, doc_, origin_);
    std::string_view added, normalizer, pre, post, decoder, version;
    bool have_model = false, have_added = false, have_norm = false, have_pre = false, have_post = false,
         have_dec = false, have_version = false;
    if (top.peek() != '{') top.fail_at(top.pos(), str("expected a JSON object at the top level, found ", top.found()));
    top.object("in the top-level object", [&](const std::string& key) {
      if (key == "model") {
        if (have_model) top.fail_at(top.pos(), "a second \"model\" section");
        have_model = true;
        read_model(top);
        return;
      }
      std::string_view v = top.value();
      if (key == "added_tokens") added = v, have_added = true;
      else if (key == "normalizer") normalizer = v, have_norm = true;
      else if (key == "pre_tokenizer") pre = v, have_pre = true;
      else if (key == "post_processor") post = v, have_post = true;
      else if (key == "decoder") decoder = v, have_dec = true;
      else if (key == "version") version = v, have_version = true;
    });
    if (!top.at_end()) top.fail_at(top.pos(), "unexpected text after the top-level object");
    if (have_version) {
      json v = sub(version, "version");
      if (!v.is_string() || v.get<std::string>() != "1.0")
        fail(origin_, ": unsupported tokenizer.json version ", v.dump(), " (expected \"1.0\")");
    }
    if (!have_model) fail(origin_, ": no \"model\" section (expected a BPE model)");
    finish_model();
    if (have_norm) load_normalizer(sub(normalizer, "normalizer"), t_.normalizer);
    if (have_pre) load_pre_tokenizer(sub(pre, "pre_tokenizer"), t_.pre_tokenizer);
    if (have_added) load_added(sub(added, "added_tokens"));
    finish_ids();
    if (have_post) load_post(sub(post, "post_processor"));
    if (have_dec) {
      json d = sub(decoder, "decoder");
      if (!d.is_null()) {
        t_.has_decoder = true;
        load_decoder(d, t_.decoder);
      }
    }
    plan_streaming();
  }

 private:
  const std::string& doc_;
  const std::string& origin_;
  TokenizerImpl& t_;
  // The model section, gathered in one pass: vocab and merges are read in place when their
  // format is known by then (the usual key order), else their text is kept for later.
  json model_fields_ = json::object();
  bool vocab_done_ = false, merges_done_ = false, have_vocab_ = false, have_merges_ = false;
  std::string_view vocab_span_, merges_span_;
  std::vector<std::array<int32_t, 3>> merge_list_;  // (left, right, merged) in rank order

  json sub(std::string_view span, const char* what) {
    try {
      return json::parse(span.begin(), span.end());
    } catch (const json::exception& e) {
      Scanner s(doc_, span, origin_);
      s.fail_at(span.data(), str("in \"", what, "\": ", e.what()));
    }
  }

  [[noreturn]] void unsupported(const std::string& what, const json& j) {
    std::string d = j.dump();
    if (d.size() > 200) d = d.substr(0, 200) + "...";
    fail(origin_, ": unsupported ", what, ": ", d);
  }

  static std::string type_of(const json& j) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
    return j["type"].get<std::string>();
  }

  std::string get_string(const json& j, const char* key, const char* what) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_string())
      fail(origin_, ": ", what, ": expected a string field \"", key, "\", found ", j.dump());
    return j[key].get<std::string>();
  }

  bool get_bool(const json& j, const char* key, bool def, const char* what) {
    if (!j.is_object() || !j.contains(key) || j[key].is_null()) return def;
    if (!j[key].is_boolean()) fail(origin_, ": ", what, ": field \"", key, "\" must be true or false, found ", j[key].dump());
    return j[key].get<bool>();
  }

  // A Replace/Split pattern: {"String": "..."}; {"Regex": ...} is not supported.
  std::string string_pattern(const json& j, const char* what) {
    if (j.is_object() && j.contains("String") && j["String"].is_string()) {
      std::string p = j["String"].get<std::string>();
      if (p.empty()) unsupported(str(what, " with an empty pattern"), j);
      return p;
    }
    unsupported(str(what, " pattern (only {\"String\": ...} patterns are supported)"), j);
  }

  // ---- model ----
  void read_model(Scanner& s) {
    if (s.peek() != '{') s.fail_at(s.pos(), str("\"model\" must be an object, found ", s.found()));
    s.object("in \"model\"", [&](const std::string& key) {
      if (key == "vocab") {
        have_vocab_ = true;
        if (s.peek() == '{' && !vocab_done_) {
          load_vocab(s);
          vocab_done_ = true;
        } else {
          vocab_span_ = s.value();
        }
      } else if (key == "merges") {
        have_merges_ = true;
        // Merged tokens depend on continuing_subword_prefix: read in place once it is known.
        if (vocab_done_ && model_fields_.contains("continuing_subword_prefix") && !merges_done_) {
          read_model_options();
          load_merges(s);
          merges_done_ = true;
        } else {
          merges_span_ = s.value();
        }
      } else {
        model_fields_[key] = sub(s.value(), "model");
      }
    });
  }

  void read_model_options() {
    const json& m = model_fields_;
    auto opt_string = [&](const char* key, std::string& out) {
      if (!m.contains(key) || m[key].is_null()) return false;
      if (!m[key].is_string()) fail(origin_, ": model.", key, " must be a string or null, found ", m[key].dump());
      out = m[key].get<std::string>();
      return true;
    };
    t_.has_unk = opt_string("unk_token", t_.unk_token);
    t_.has_prefix = opt_string("continuing_subword_prefix", t_.prefix);
    t_.has_suffix = opt_string("end_of_word_suffix", t_.suffix);
    t_.fuse_unk = get_bool(m, "fuse_unk", false, "model");
    t_.byte_fallback = get_bool(m, "byte_fallback", false, "model");
    t_.ignore_merges = get_bool(m, "ignore_merges", false, "model");
  }

  void finish_model() {
    const json& m = model_fields_;
    std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "";
    if (!m.contains("type") && have_merges_) type = "BPE";
    if (type != "BPE")
      fail(origin_, ": unsupported model type '", type.empty() ? m.value("type", json()).dump() : type,
           "' (expected BPE)");
    if (!have_vocab_) fail(origin_, ": the BPE model has no \"vocab\"");
    if (m.contains("dropout") && !m["dropout"].is_null()) {
      const json& d = m["dropout"];
      if (!d.is_number() || d.get<double>() != 0.0) unsupported("BPE dropout (only null or 0 is supported)", d);
    }
    read_model_options();
    if (!vocab_done_) {
      Scanner s(doc_, vocab_span_, origin_);
      load_vocab(s);
    }
    if (have_merges_ && !merges_done_) {
      Scanner s(doc_, merges_span_, origin_);
      load_merges(s);
    }
    t_.merges.reserve(merge_list_.size());
    for (size_t r = 0; r < merge_list_.size(); ++r) {
      if (r + 16 < merge_list_.size()) t_.merges.prefetch(uint32_t(merge_list_[r + 16][0]), uint32_t(merge_list_[r + 16][1]));
      const auto& m3 = merge_list_[r];
      t_.merges.insert(uint32_t(m3[0]), uint32_t(m3[1]), uint32_t(r), m3[2]);
    }
    merge_list_ = {};
  }

  static constexpr size_t kMaxVocabHoles = size_t(1) << 16;

  void load_vocab(Scanner& s) {
    Vocab& v = t_.vocab;
    v.reserve(1 << 18, 1 << 22);
    if (s.peek() != '{') s.fail_at(s.pos(), str("model.vocab must be an object of token -> id, found ", s.found()));
    s.object("in model.vocab", [&](const std::string& key) {
      const char* at = s.pos();
      int64_t id = s.integer("as a model.vocab id");
      if (id < 0 || id >= (int64_t(1) << 24)) s.fail_at(at, str("model.vocab id ", id, " out of range [0, 2^24)"));
      if (!v.add(key, int32_t(id)))
        s.fail_at(at, str("model.vocab gives id ", id, " to both '", v.at(int32_t(id)), "' and '", key, "'"));
    });
    v.build([&](int32_t a, int32_t b) {
      fail(origin_, ": model.vocab has the token '", v.at(a), "' twice (ids ", a, " and ", b, ")");
    });
    // Per-id tables (about 40 bytes an id) are sized by the largest id: a few tokens with ids near
    // 2^24 would take 700 MB and seconds to load. Real vocabularies number their tokens densely.
    if (v.id_limit() > 2 * v.count() + kMaxVocabHoles)
      fail(origin_, ": model.vocab has ", v.count(), " tokens but ids up to ", v.id_limit() - 1,
           " (more than ", kMaxVocabHoles, " unused ids; expected ids numbered from 0 without large gaps)");
  }

  // Merges are read in batches: the three vocabulary lookups of each merge are cache misses,
  // so a batch's table slots, then the strings they point to, are prefetched before lookup.
  struct PendingMerge {
    const char* at;
    std::string a, b, joined;
    uint64_t h[3];
  };

  void load_merges(Scanner& s) {
    size_t prefix_len = t_.has_prefix ? t_.prefix.size() : 0;
    merge_list_.reserve(1 << 19);
    constexpr size_t kBatch = 32;
    std::vector<PendingMerge> batch(kBatch);
    size_t n = 0;
    const Vocab& v = t_.vocab;
    auto resolve = [&]() {
      for (size_t k = 0; k < n; ++k)
        for (uint64_t h : batch[k].h) v.prefetch_text(h);
      for (size_t k = 0; k < n; ++k) {
        const PendingMerge& m = batch[k];
        int32_t ia = v.find_hashed(m.a, m.h[0]), ib = v.find_hashed(m.b, m.h[1]);
        if (ia < 0) s.fail_at(m.at, str("merge token '", m.a, "' is not in model.vocab"));
        if (ib < 0) s.fail_at(m.at, str("merge token '", m.b, "' is not in model.vocab"));
        int32_t in = v.find_hashed(m.joined, m.h[2]);
        if (in < 0) s.fail_at(m.at, str("merged token '", m.joined, "' is not in model.vocab"));
        merge_list_.push_back({ia, ib, in});
      }
      n = 0;
    };
    char form = 0;  // '"' or '[': `tokenizers` takes one form for the whole list
    if (s.peek() != '[') s.fail_at(s.pos(), str("model.merges must be an array, found ", s.found()));
    s.array("in model.merges", [&]() {
      PendingMerge& m = batch[n];
      m.at = s.pos();
      char c = s.peek();
      if (form == 0) form = c;
      if (c != form) s.fail_at(m.at, "model.merges mixes \"a b\" strings and [\"a\", \"b\"] pairs");
      if (c == '"') {
        s.string(m.a, "in model.merges");
        size_t sp = m.a.find(' ');
        if (sp == std::string::npos || m.a.find(' ', sp + 1) != std::string::npos)
          s.fail_at(m.at, str("merge \"", m.a, "\" is not two tokens separated by one space"));
        m.b.assign(m.a, sp + 1);
        m.a.resize(sp);
      } else if (c == '[') {
        s.expect('[', "in model.merges");
        s.string(m.a, "in a model.merges pair");
        s.expect(',', "in a model.merges pair");
        s.string(m.b, "in a model.merges pair");
        s.expect(']', "after a model.merges pair (expected exactly two tokens)");
      } else {
        s.fail_at(m.at, str("expected a merge (\"a b\" or [\"a\", \"b\"]), found ", s.found()));
      }
      if (m.b.size() < prefix_len) s.fail_at(m.at, str("merge token '", m.b, "' is shorter than the subword prefix"));
      m.joined.assign(m.a);
      m.joined.append(m.b, prefix_len);
      m.h[0] = Vocab::hash(m.a);
      m.h[1] = Vocab::hash(m.b);
      m.h[2] = Vocab::hash(m.joined);
      for (uint64_t h : m.h) v.prefetch(h);
      if (++n == kBatch) resolve();
    });
    resolve();
  }

  // ---- added tokens (AddedVocabulary::add_tokens, one at a time, in file order) ----
  void load_added(const json& arr) {
    if (!arr.is_array()) fail(origin_, ": \"added_tokens\" must be an array, found ", arr.dump().substr(0, 100));
    std::unordered_set<std::string> special_set;
    int32_t max_added = -1;
    for (const json& j : arr) {
      if (!j.is_object()) fail(origin_, ": added_tokens: expected objects, found ", j.dump());
      AddedToken a;
      a.content = get_string(j, "content", "added_tokens");
      a.single_word = get_bool(j, "single_word", false, "added_tokens");
      a.lstrip = get_bool(j, "lstrip", false, "added_tokens");
      a.rstrip = get_bool(j, "rstrip", false, "added_tokens");
      a.normalized = get_bool(j, "normalized", true, "added_tokens");
      a.special = get_bool(j, "special", false, "added_tokens");
      if (!j.contains("id") || !j["id"].is_number_integer() || j["id"].get<int64_t>() < 0)
        fail(origin_, ": added_tokens: expected a non-negative integer \"id\" in ", j.dump());
      if (a.single_word) unsupported("added token option single_word=true", j);
      if (a.content.empty()) continue;  // ignored by `tokenizers`
      if (a.special) special_set.insert(a.content);
      // The id `tokenizers` gives it: the existing one (added, then model vocab), else the next
      // free one after the vocabulary. The "id" field is only checked there, with a warning.
      int32_t id;
      auto it = t_.added_index.find(a.content);
      if (it != t_.added_index.end()) {
        id = it->second;
      } else if (int32_t v = t_.vocab.find(a.content); v >= 0) {
        id = v;
      } else if (max_added < 0) {
        id = int32_t(t_.vocab.count());
      } else {
        int32_t vocab_len = int32_t(t_.vocab.count());  // entries, as Model::get_vocab_size()
        id = (max_added >= vocab_len || vocab_len == 0) ? max_added + 1 : vocab_len;
      }
      a.id = id;
      max_added = std::max(max_added, id);
      if (it != t_.added_index.end()) {
        for (AddedToken& e : t_.added)
          if (e.content == a.content) e = a;
      } else {
        t_.added_index.emplace(a.content, id);
        t_.added.push_back(a);
      }
    }
    for (AddedToken& a : t_.added) a.special = special_set.count(a.content) != 0;
  }

  void finish_ids() {
    int32_t n = int32_t(t_.vocab.id_limit());
    for (const AddedToken& a : t_.added) n = std::max(n, a.id + 1);
    t_.n_ids = n;
    t_.pieces.assign(size_t(n), std::string());
    t_.has_token.assign(size_t(n), 0);
    t_.special.assign(size_t(n), 0);
    for (size_t id = 0; id < t_.vocab.id_limit(); ++id)
      if (t_.vocab.has(int32_t(id))) {
        t_.pieces[id] = t_.vocab.at(int32_t(id));
        t_.has_token[id] = 1;
      }
    for (const AddedToken& a : t_.added) {
      t_.pieces[size_t(a.id)] = a.content;
      t_.has_token[size_t(a.id)] = 1;
    }
    // `tokenizers` decides "special" by the token string an id decodes to: the special added
    // token's own id, and a vocabulary id whose string is the same content.
    for (const AddedToken& a : t_.added) {
      if (!a.special) continue;
      t_.special[size_t(a.id)] = 1;
      int32_t v = t_.vocab.find(a.content);
      if (v >= 0 && t_.pieces[size_t(v)] == a.content) t_.special[size_t(v)] = 1;
    }
    // Tries: non-normalized tokens match the raw text, normalized ones the normalized pieces.
    for (size_t i = 0; i < t_.added.size(); ++i) {
      const AddedToken& a = t_.added[i];
      if (a.normalized) {
        std::string p = t_.normalize(a.content);
        if (p != a.content) t_.decode_override[a.id] = p;
        t_.norm_trie.add(p, int32_t(i));
      } else {
        t_.raw_trie.add(a.content, int32_t(i));
      }
    }
    for (const AddedToken& a : t_.added) {
      if (!a.special) continue;
      if (a.content == "<bos>") t_.bos = a.id;
      if (a.content == "<eos>") t_.eos = a.id;
      if (a.content == "<pad>") t_.pad = a.id;
    }
    // BPE lookups.
    for (int i = 0; i < 256; ++i) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", i);
      t_.byte_ids[i] = t_.vocab.find(name);
    }
    if (t_.has_unk) t_.unk_id = t_.vocab.find(t_.unk_token);
    if (!t_.has_prefix && !t_.has_suffix) {
      t_.cp_to_id.assign(0x110000, -1);
      for (size_t id = 0; id < t_.vocab.id_limit(); ++id) {
        if (!t_.vocab.has(int32_t(id))) continue;
        std::string_view s = t_.vocab.at(int32_t(id));
        if (s.empty() || s.size() > 4) continue;
        size_t len = utf8::char_len(s.data(), s.size());
        if (len != s.size() || (len == 1 && uint8_t(s[0]) >= 0x80)) continue;
        t_.cp_to_id[utf8::decode(s.data(), len)] = int32_t(id);
      }
      plan_chunking();
    }
  }

  // Whether words can be cut before '▁' (TokenizerImpl::bpe): needs plain code point symbols
  // (no subword prefix/suffix), no ignore_merges (it looks at whole words) and '▁' in the vocab.
  void plan_chunking() {
    if (t_.ignore_merges || t_.cp_to_id[kMetaspace] < 0) return;
    const std::string_view mark = "\xE2\x96\x81";
    std::vector<uint32_t>& j = t_.space_joiners;
    for (size_t id = 0; id < t_.vocab.id_limit(); ++id) {
      if (!t_.vocab.has(int32_t(id))) continue;
      std::string_view s = t_.vocab.at(int32_t(id));
      for (size_t p = s.find(mark, 1); p != std::string_view::npos; p = s.find(mark, p + 1)) {
        size_t q = p - 1;
        while (q > 0 && (uint8_t(s[q]) & 0xC0) == 0x80) --q;
        size_t len = utf8::char_len(s.data() + q, s.size() - q);
        uint32_t cp = utf8::decode(s.data() + q, len);
        if (q + len != p) cp = uint8_t(s[p - 1]);  // not valid UTF-8: be conservative
        if (cp != kMetaspace) j.push_back(cp);
      }
    }
    std::sort(j.begin(), j.end());
    j.erase(std::unique(j.begin(), j.end()), j.end());
    t_.chunk_at_space = true;
  }

  // ---- normalizer / pre-tokenizer ----
  void load_normalizer(const json& j, std::vector<NormStep>& out) {
    if (j.is_null()) return;
    std::string type = type_of(j);
    if (type == "Sequence") {
      if (!j.contains("normalizers") || !j["normalizers"].is_array()) unsupported("normalizer", j);
      for (const json& n : j["normalizers"]) load_normalizer(n, out);
    } else if (type == "Replace") {
      out.push_back({NormStep::kReplace, string_pattern(j.value("pattern", json()), "Replace normalizer"),
                     get_string(j, "content", "Replace normalizer")});
    } else if (type == "Prepend") {
      out.push_back({NormStep::kPrepend, get_string(j, "prepend", "Prepend normalizer"), ""});
    } else {
      unsupported("normalizer", j);
    }
  }

  void load_pre_tokenizer(const json& j, std::vector<PreTokStep>& out) {
    if (j.is_null()) return;
    std::string type = type_of(j);
    if (type == "Sequence") {
      if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) unsupported("pre_tokenizer", j);
      for (const json& p : j["pretokenizers"]) load_pre_tokenizer(p, out);
    } else if (type == "Split") {
      PreTokStep st;
      st.pattern = string_pattern(j.value("pattern", json()), "Split pre_tokenizer");
      std::string b = get_string(j, "behavior", "Split pre_tokenizer");
      if (b == "Removed") st.behavior = SplitBehavior::kRemoved;
      else if (b == "Isolated") st.behavior = SplitBehavior::kIsolated;
      else if (b == "MergedWithPrevious") st.behavior = SplitBehavior::kMergedWithPrevious;
      else if (b == "MergedWithNext") st.behavior = SplitBehavior::kMergedWithNext;
      else if (b == "Contiguous") st.behavior = SplitBehavior::kContiguous;
      else unsupported("Split behavior", j);
      st.invert = get_bool(j, "invert", false, "Split pre_tokenizer");
      out.push_back(st);
    } else {
      unsupported("pre_tokenizer", j);
    }
  }

  // ---- post-processor ----
  void load_post(const json& j) {
    if (j.is_null()) return;
    std::string type = type_of(j);
    if (type == "Sequence") {
      if (!j.contains("processors") || !j["processors"].is_array()) unsupported("post_processor", j);
      for (const json& p : j["processors"]) load_post(p);
    } else if (type == "ByteLevel") {
      // Only trims offsets; ids are unchanged.
    } else if (type == "TemplateProcessing") {
      if (!j.contains("single") || !j["single"].is_array()) unsupported("TemplateProcessing without \"single\"", j);
      std::vector<int32_t> pre, post;
      bool seen_seq = false;
      const json specials = j.value("special_tokens", json::object());
      for (const json& piece : j["single"]) {
        if (piece.contains("Sequence")) {
          std::string seq = piece["Sequence"].value("id", "A");
          if (seq != "A" || seen_seq) unsupported("TemplateProcessing single template", j["single"]);
          seen_seq = true;
        } else if (piece.contains("SpecialToken")) {
          std::string name = get_string(piece["SpecialToken"], "id", "TemplateProcessing");
          if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
            fail(origin_, ": post_processor: special token '", name, "' is used but not defined in special_tokens");
          for (const json& id : specials[name]["ids"]) {
            if (!id.is_number_integer()) fail(origin_, ": post_processor: bad id for '", name, "': ", id.dump());
            (seen_seq ? post : pre).push_back(id.get<int32_t>());
          }
        } else {
          unsupported("TemplateProcessing piece", piece);
        }
      }
      t_.post_prefix.push_back(pre);
      t_.post_suffix.push_back(post);
    } else {
      unsupported("post_processor", j);
    }
  }

  // ---- decoder ----
  void load_decoder(const json& j, std::vector<DecStep>& out) {
    std::string type = type_of(j);
    if (type == "Sequence") {
      if (!j.contains("decoders") || !j["decoders"].is_array()) unsupported("decoder", j);
      for (const json& d : j["decoders"]) load_decoder(d, out);
    } else if (type == "Replace") {
      DecStep s{DecStep::kReplace, string_pattern(j.value("pattern", json()), "Replace decoder"),
                get_string(j, "content", "Replace decoder")};
      out.push_back(s);
    } else if (type == "ByteFallback") {
      out.push_back(DecStep{DecStep::kByteFallback, "", ""});
    } else if (type == "Fuse") {
      out.push_back(DecStep{DecStep::kFuse, "", ""});
    } else if (type == "Strip") {
      DecStep s{DecStep::kStrip, "", ""};
      std::string c = get_string(j, "content", "Strip decoder");
      size_t len = c.empty() ? 0 : utf8::char_len(c.data(), c.size());
      if (c.empty() || len != c.size()) unsupported("Strip decoder content (expected one character)", j);
      s.strip_char = utf8::decode(c.data(), len);
      if (!j.contains("start") || !j["start"].is_number_unsigned() || !j.contains("stop") ||
          !j["stop"].is_number_unsigned())
        unsupported("Strip decoder (expected unsigned start and stop)", j);
      s.start = j["start"].get<size_t>();
      s.stop = j["stop"].get<size_t>();
      out.push_back(s);
    } else {
      unsupported("decoder", j);
    }
  }

  // Per-token steps, at most one ByteFallback, then only Fuse: push() can decode token by token.
  void plan_streaming() {
    t_.streamable = true;
    if (!t_.has_decoder) return;  // tokens joined with ' '
    bool fused = false;
    for (const DecStep& s : t_.decoder) {
      if (s.kind == DecStep::kFuse) {
        fused = true;
        continue;
      }
      if (fused) {
        t_.streamable = false;
        return;
      }
      if (s.kind == DecStep::kByteFallback) {
        if (t_.stream_bytes) {
          t_.streamable = false;  // a second ByteFallback could see fused runs
          return;
        }
        t_.stream_bytes = true;
      } else {
        (t_.stream_bytes ? t_.stream_post : t_.stream_pre).push_back(s);
      }
    }
  }
};

}  // namespace

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

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

void TokenizerImpl::apply_steps(const std::vector<DecStep>& steps, std::vector<std::string>& tokens) const {
  std::string tmp;
  for (const DecStep& st : steps) {
    switch (st.kind) {
      case DecStep::kReplace:
        for (std::string& t : tokens) {
          if (t.find(st.pattern) == std::string::npos) continue;
          replace_all(t, st.pattern, st.content, tmp);
          t.swap(tmp);
        }
        break;
      case DecStep::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecStep::kStrip:
        for (std::string& t : tokens) {
          std::vector<std::pair<size_t, size_t>> chars;  // byte offset, length
          for (size_t i = 0; i < t.size();) {
            size_t len = utf8::char_len(t.data() + i, t.size() - i);
            chars.push_back({i, len});
            i += len;
          }
          auto is_c = [&](size_t k) { return utf8::decode(t.data() + chars[k].first, chars[k].second) == st.strip_char; };
          size_t start_cut = 0;
          for (size_t k = 0; k < chars.size() && k < st.start; ++k) {
            if (!is_c(k)) break;
            start_cut = k + 1;
          }
          size_t stop_cut = chars.size();
          for (size_t k = 0; k < std::min(st.stop, chars.size() - start_cut); ++k) {
            size_t idx = chars.size() - k - 1;
            if (!is_c(idx)) break;
            stop_cut = idx;
          }
          size_t b0 = start_cut < chars.size() ? chars[start_cut].first : t.size();
          size_t b1 = stop_cut < chars.size() ? chars[stop_cut].first : t.size();
          t = t.substr(b0, b1 > b0 ? b1 - b0 : 0);
        }
        break;
      case DecStep::kByteFallback: {
        std::vector<std::string> res;
        res.reserve(tokens.size());
        std::string run;
        size_t run_n = 0;
        auto flush = [&]() {
          if (run_n == 0) return;
          if (utf8::valid(run)) {
            res.push_back(run);
          } else {
            for (size_t k = 0; k < run_n; ++k) res.emplace_back(kReplacementChar);
          }
          run.clear();
          run_n = 0;
        };
        for (std::string& t : tokens) {
          uint8_t b;
          if (byte_token(t, b)) {
            run.push_back(char(b));
            ++run_n;
          } else {
            flush();
            res.push_back(std::move(t));
          }
        }
        flush();
        tokens.swap(res);
        break;
      }
    }
  }
}

std::string TokenizerImpl::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids)
    if (keep(id, skip_special)) tokens.push_back(decode_piece(id));
  std::string out;
  if (!has_decoder) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  apply_steps(decoder, tokens);
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

Tokenizer Tokenizer::from_file(const std::string& path) {
  if (is_directory(path)) fail(path, ": is a directory (expected a tokenizer.json file)");
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error& e) {
    fail("cannot load tokenizer: ", e.what());
  }
  return from_json_text(text, path);
}

Tokenizer Tokenizer::from_json_text(const std::string& text, const std::string& origin) {
  auto impl = std::make_shared<TokenizerImpl>();
  impl->origin = origin;
  impl->serial = ++g_tokenizer_serial;
  Loader(text, origin, *impl).load();
  return Tokenizer(std::move(impl));
}

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

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

int32_t Tokenizer::token_id(std::string_view token) const {
  auto it = impl_->added_index.find(std::string(token));
  if (it != impl_->added_index.end()) return it->second;
  return impl_->vocab.find(token);
}

const std::string& Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= impl_->n_ids) fail(impl_->origin, ": token id ", id, " out of range [0, ", impl_->n_ids, ")");
  return impl_->pieces[size_t(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->n_ids && impl_->special[size_t(id)];
}

int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }
int32_t Tokenizer::vocab_size() const { return impl_->n_ids; }
const std::string& Tokenizer::origin() const { return impl_->origin; }

// ---------------------------------------------------------------------------------------------
// StreamDecoder
// ---------------------------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special_tokens)
    : impl_(tok.impl_), skip_special_(skip_special_tokens) {}

namespace {

void emit_token(const TokenizerImpl& t, std::string s, std::string& out) {
  if (t.stream_post.empty()) {
    out += s;
    return;
  }
  std::vector<std::string> one{std::move(s)};
  t.apply_steps(t.stream_post, one);
  out += one[0];
}

}  // namespace

std::string StreamDecoder::finish_run() {
  std::string out;
  const TokenizerImpl& t = *impl_;
  if (run_state_.complete()) {
    if (!run_.empty()) emit_token(t, run_, out);
  } else {
    for (size_t k = 0; k < run_count_; ++k) emit_token(t, kReplacementChar, out);
  }
  run_.clear();
  run_count_ = 0;
  run_state_.reset();
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  const TokenizerImpl& t = *impl_;
  if (!t.keep(id, skip_special_)) return "";
  if (!t.streamable) {
    ids_.push_back(id);
    uint8_t b;
    std::vector<std::string> last{t.decode_piece(id)};
    // Hold back while a byte run may still change.
    for (const DecStep& st : t.decoder) {
      if (st.kind == DecStep::kByteFallback) {
        if (byte_token(last[0], b)) return "";
        break;
      }
      std::vector<DecStep> one{st};
      t.apply_steps(one, last);
      if (last.size() != 1) break;
    }
    std::string full = t.decode(ids_, skip_special_);
    if (full.compare(0, emitted_.size(), emitted_) != 0) return "";
    std::string out = full.substr(emitted_.size());
    emitted_ = std::move(full);
    return out;
  }
  std::string out;
  if (!t.has_decoder) {
    if (!emitted_.empty()) out += ' ';
    emitted_ = "x";  // marks that a token was seen
    out += t.decode_piece(id);
    return out;
  }
  std::vector<std::string> tok{t.decode_piece(id)};
  if (!t.stream_pre.empty()) t.apply_steps(t.stream_pre, tok);
  uint8_t b;
  if (t.stream_bytes && byte_token(tok[0], b)) {
    run_state_.push(b);
    if (run_state_.failed()) {
      // The run can no longer be valid: each of its bytes is one U+FFFD.
      for (size_t k = 0; k < run_count_ + 1; ++k) emit_token(t, kReplacementChar, out);
      run_count_ = 0;
      run_.clear();
    } else {
      run_.push_back(char(b));
      ++run_count_;
    }
    return out;
  }
  out = finish_run();
  emit_token(t, std::move(tok[0]), out);
  return out;
}

std::string StreamDecoder::flush() {
  const TokenizerImpl& t = *impl_;
  if (!t.streamable) {
    std::string full = t.decode(ids_, skip_special_);
    std::string out = full.compare(0, emitted_.size(), emitted_) == 0 ? full.substr(emitted_.size()) : std::string();
    ids_.clear();
    emitted_.clear();
    return out;
  }
  emitted_.clear();
  return finish_run();
}

}  // namespace gt
