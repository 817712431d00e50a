// Small UTF-8 helpers shared by the tokenizer and the text pipeline: code point decoding that
// never fails (an invalid byte stands alone), strict validation as Rust's String::from_utf8
// does it, an incremental validator for streaming, and the Unicode White_Space set.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gt::utf8 {

// Length of the well-formed UTF-8 sequence starting at s[0] (1..4), or 1 when s[0] does not
// start one (a stray continuation byte, an overlong form, a surrogate, a truncated sequence).
// n must be >= 1.
size_t char_len(const char* s, size_t n);

// Decodes the code point of a well-formed sequence of length len (as returned by char_len).
// For len == 1 this is the byte itself, even when it is >= 0x80 (an invalid stray byte).
uint32_t decode(const char* s, size_t len);

// Appends the UTF-8 encoding of cp (cp < 0x110000, not a surrogate).
void append(std::string& out, uint32_t cp);

// True when the whole string is well-formed UTF-8 (Rust's String::from_utf8 rules).
bool valid(std::string_view s);

// Rust's char::is_whitespace / regex \s: the Unicode White_Space property.
bool is_whitespace(uint32_t cp);

// Feeds bytes one at a time and tells whether they can still form valid UTF-8.
class Validator {
 public:
  void push(uint8_t b);
  bool failed() const { return failed_; }
  // Every byte so far forms complete, valid UTF-8.
  bool complete() const { return !failed_ && need_ == 0; }
  void reset() { *this = Validator(); }

 private:
  int need_ = 0;       // continuation bytes still expected
  uint8_t lo_ = 0x80;  // allowed range of the next continuation byte
  uint8_t hi_ = 0xBF;
  bool failed_ = false;
};

}  // namespace gt::utf8
