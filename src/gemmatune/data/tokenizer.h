// Hugging Face tokenizer.json of Gemma's kind (Gemma 3 / Gemma 4): a BPE model with byte
// fallback, its normalizer, pre-tokenizer, post-processor, decoder and added tokens. encode()
// and decode() agree exactly with the Rust `tokenizers` library (checked row by row against
// the goldens in tests/data/assets/golden).
//
// Encoding, as `tokenizers` does it:
//   1. added tokens (special or not) are cut out of the raw text by leftmost-longest match;
//   2. each remaining piece is normalized (Gemma: ' ' -> '▁'), then pre-tokenized (Gemma's
//      Split on ' ' never fires after that normalizer), then BPE-merged: start from single code
//      points, apply merges lowest rank first, leftmost on ties; a code point missing from the
//      vocabulary becomes its UTF-8 bytes <0xNN>;
//   3. with add_special_tokens, the post-processor's "single" template is applied. For Gemma
//      that prepends <bos> (id 2). The goldens are made with add_special_tokens=false: rendered
//      chat prompts already start with the literal "<bos>", which encodes to id 2, so callers
//      that encode a rendered template must pass false.
// Input that is not valid UTF-8 (which `tokenizers` cannot receive) is accepted: each invalid
// byte is treated as a character of its own and falls back to its <0xNN> token.
//
// Decoding: ids -> token strings (unknown ids are dropped, special tokens too when asked), then
// the tokenizer.json decoder chain (Gemma: Replace '▁'->' ', ByteFallback, Fuse).
//
// Supported components (anything else is rejected at load with an error naming the file):
//   model: BPE (byte_fallback, fuse_unk, ignore_merges, continuing_subword_prefix,
//          end_of_word_suffix; merges as "a b" strings or ["a","b"] pairs; no dropout)
//   normalizer: Replace (string pattern), Prepend, Sequence, null
//   pre_tokenizer: Split (string pattern, any behavior, invert), Sequence, null
//   post_processor: TemplateProcessing, ByteLevel (ids unchanged), Sequence, null
//   decoder: Replace (string pattern), ByteFallback, Fuse, Strip, Sequence, null
//   added tokens: lstrip, rstrip, normalized; single_word is rejected.
// truncation and padding settings are ignored: callers own sequence lengths.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gemmatune/data/unicode.h"

namespace gt {

namespace detail {
struct TokenizerImpl;
}

class Tokenizer {
 public:
  // Loads a tokenizer.json. Throws gt::Error naming the file (and line:column for malformed
  // JSON) on a missing file, bad JSON or an unsupported component.
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  // Same, from text already in memory; origin names it in error messages.
  static Tokenizer from_json_text(const std::string& text, const std::string& origin);

  // Token ids of text. add_special_tokens applies the post-processor template (Gemma:
  // prepends <bos>); pass false for text that already contains "<bos>", as rendered chat
  // templates do. Thread-safe; each calling thread keeps a 1.2 MB cache of short words.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // Text of ids. skip_special_tokens drops the tokens flagged "special" in added_tokens
  // (Gemma 3: <pad> <eos> <bos> <unk> <start_of_turn> <end_of_turn> <start_of_image>
  // <end_of_image> <image_soft_token>). Ids with no token are dropped, as `tokenizers` does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  // Id of a token string (added tokens first, then the BPE vocabulary); -1 if absent.
  int32_t token_id(std::string_view token) const;
  // The raw piece of an id (added token content, else the vocabulary string, e.g. "▁world",
  // "<0x41>"); an empty string for an id in range that has no token. Throws when out of range.
  const std::string& token_text(int32_t id) const;
  // True for ids of added tokens flagged special.
  bool is_special(int32_t id) const;
  // Ids of the special tokens <bos>, <eos>, <pad>; -1 when the file has no such special token.
  // Note: Gemma 3's chat end-of-turn is <end_of_turn> (106), Gemma 4's is <turn|> (106); look
  // those up with token_id().
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  // Number of ids: max id + 1 over the vocabulary and the added tokens.
  int32_t vocab_size() const;

  const std::string& origin() const;

 private:
  explicit Tokenizer(std::shared_ptr<const detail::TokenizerImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const detail::TokenizerImpl> impl_;
  friend class StreamDecoder;
};

// Streaming detokenizer: push ids one at a time and get back only text that is final. The
// concatenation of every push() and the final flush() equals decode() of the whole sequence.
//
// A run of byte-fallback tokens (<0xNN>) is held back until it ends (at the next token that is
// not a byte token, or at flush()): `tokenizers` decodes such a run as a whole and turns every
// byte of it into U+FFFD when any part is invalid, so an early character could still change.
// Once a run is known to be invalid its U+FFFDs are emitted at once. Tokens dropped by
// skip_special_tokens do not end a run, as in decode().
class StreamDecoder {
 public:
  // Keeps the tokenizer's tables alive (shared), so it may outlive `tok`.
  StreamDecoder(const Tokenizer& tok, bool skip_special_tokens);
  std::string push(int32_t id);
  // Ends the stream: returns what was held back; the next push() starts a new stream.
  std::string flush();

 private:
  std::shared_ptr<const detail::TokenizerImpl> impl_;
  bool skip_special_;
  // Per-token decoder chains: the pending byte run.
  std::string run_;
  size_t run_count_ = 0;
  utf8::Validator run_state_;
  // Other chains: everything so far, re-decoded on each push.
  std::vector<int32_t> ids_;
  std::string emitted_;

  std::string finish_run();
};

}  // namespace gt
