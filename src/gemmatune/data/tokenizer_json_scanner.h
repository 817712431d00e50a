// Tokenizer internals: the JSON scanner that reads tokenizer.json's big sections in place.
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

using nlohmann::json;

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

}  // namespace gt::tokenizer_internal
