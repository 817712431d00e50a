// Tokenizer internals: the pipeline components and the implementation object that
// tokenizer_load.cc fills and tokenizer_encode.cc / tokenizer_decode.cc run.
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
#include "gemmatune/data/tokenizer_tables.h"

namespace gt {

namespace tokenizer_internal {

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

inline void replace_all(std::string_view s, std::string_view pattern, std::string_view content, std::string& out) {
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
inline bool byte_token(std::string_view t, uint8_t& byte) {
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

inline const char* kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
constexpr uint32_t kMetaspace = 0x2581;             // '▁'

}  // namespace tokenizer_internal

namespace detail {

using namespace ::gt::tokenizer_internal;

// ---------------------------------------------------------------------------------------------
// The implementation object
// ---------------------------------------------------------------------------------------------

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

}  // namespace gt
