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
// This file: decoding (the decoder chain) and streaming decode.
// (Moved from tokenizer.cc without changes to the code.)
// GCC 12 misreports `emitted_ = "x"` in StreamDecoder::push under -O3 as a memcpy beyond the
// maximum object size (known -Wstringop-overflow / -Wrestrict false positives that appear with this TU's inlining).
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wrestrict"
#include "gemmatune/data/tokenizer_impl.h"

namespace gt {

using nlohmann::json;
using namespace ::gt::tokenizer_internal;
using detail::TokenizerImpl;

namespace detail {

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

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

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
