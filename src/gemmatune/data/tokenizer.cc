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
// The parts: tokenizer_tables.h (hash tables, trie), tokenizer_json_scanner.h,
// tokenizer_impl.h (components, the implementation object), tokenizer_load.cc, tokenizer_encode.cc,
// tokenizer_decode.cc. This file: the small accessors of the public API.
// (Moved from tokenizer.cc without changes to the code.)
#include "gemmatune/data/tokenizer_impl.h"

namespace gt {

using nlohmann::json;
using namespace ::gt::tokenizer_internal;
using detail::TokenizerImpl;

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

}  // namespace gt
