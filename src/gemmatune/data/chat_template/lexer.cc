#include "gemmatune/data/chat_template/lexer.h"

#include <cerrno>
#include <cstdlib>
#include <string_view>

#include "gemmatune/data/chat_template/unicode.h"
#include "gemmatune/util/error.h"

namespace gt::jinja {
namespace {

class Lexer {
 public:
  Lexer(const std::string& source, const std::string& origin) : origin_(origin) {
    // Newlines are normalized to "\n"; one trailing newline is dropped (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_.push_back('\n');
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_.push_back(source[i]);
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    const size_t n = src_.size();
    while (pos_ < n) {
      // Find the next tag opener.
      size_t k = pos_;
      while (true) {
        k = src_.find('{', k);
        if (k == std::string::npos) break;
        if (k + 1 < n && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) break;
        ++k;
      }
      if (k == std::string::npos) {
        emit_data(src_.substr(pos_));
        pos_ = n;
        break;
      }
      const char kind = src_[k + 1];
      size_t after = k + 2;
      char sign = 0;
      if (after < n && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];

      // A raw block opener: {% raw %} / {%- raw -%}.
      size_t raw_end = 0;
      const bool is_raw = kind == '%' && match_raw_begin(after, &raw_end);

      std::string text = src_.substr(pos_, k - pos_);
      const int text_lines = count_newlines(pos_, k);
      if (sign == '-') {
        text = std::string(uni::strip(text, false, true));
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: drop spaces/tabs between the start of the line and a block/comment tag.
        const size_t nl = text.rfind('\n');
        const size_t lp = nl == std::string::npos ? 0 : nl + 1;
        if ((lp > 0 || line_starting_) && lp < text.size() && all_space(text, lp)) text.resize(lp);
      }
      emit_data(std::move(text));
      line_ += text_lines;

      if (is_raw) {
        const int l0 = line_;
        line_ += count_newlines(k, raw_end);
        line_starting_ = src_[raw_end - 1] == '\n';
        lex_raw_body(raw_end, l0);
        continue;
      }
      if (kind == '#') {
        lex_comment(after);
        continue;
      }
      lex_tag(kind == '{', after);
    }
    Token eof;
    eof.type = Tok::Eof;
    eof.line = line_;
    toks_.push_back(std::move(eof));
    return std::move(toks_);
  }

 private:
  [[noreturn]] void fail(const std::string& msg, int line) { gt::fail(origin_, ":", line, ": ", msg); }

  int count_newlines(size_t b, size_t e) const {
    int c = 0;
    for (size_t i = b; i < e && i < src_.size(); ++i) c += src_[i] == '\n';
    return c;
  }

  static bool all_space(const std::string& s, size_t from) {
    std::string_view rest(s.data() + from, s.size() - from);
    return uni::strip(rest, true, false).empty();
  }

  // Skips Python-regex \s* at p; returns the new position.
  size_t skip_space(size_t p) const {
    while (p < src_.size()) {
      size_t i = p;
      const uint32_t c = uni::decode(src_, i);
      if (!uni::is_space(c)) break;
      p = i;
    }
    return p;
  }

  bool starts(size_t p, std::string_view s) const { return src_.compare(p, s.size(), s) == 0; }

  bool match_raw_begin(size_t p, size_t* end) const {
    p = skip_space(p);
    if (!starts(p, "raw")) return false;
    p = skip_space(p + 3);
    if (starts(p, "-%}")) {
      *end = skip_space(p + 3);
      return true;
    }
    if (starts(p, "%}")) {
      *end = p + 2;
      return true;
    }
    return false;
  }

  void emit_data(std::string text) {
    if (text.empty()) return;
    Token t;
    t.type = Tok::Data;
    t.line = line_;
    t.text = std::move(text);
    toks_.push_back(std::move(t));
  }

  void emit(Tok type, std::string text = {}) {
    Token t;
    t.type = type;
    t.line = line_;
    t.text = std::move(text);
    toks_.push_back(std::move(t));
  }

  void lex_raw_body(size_t start, int start_line) {
    const size_t n = src_.size();
    for (size_t k = src_.find("{%", start); k != std::string::npos; k = src_.find("{%", k + 1)) {
      size_t p = k + 2;
      char sign = 0;
      if (p < n && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      p = skip_space(p);
      if (!starts(p, "endraw")) continue;
      p = skip_space(p + 6);
      size_t end;
      if (starts(p, "+%}")) {
        end = p + 3;
      } else if (starts(p, "-%}")) {
        end = skip_space(p + 3);
      } else if (starts(p, "%}")) {
        end = p + 2;
        if (end < n && src_[end] == '\n') ++end;
      } else {
        continue;
      }
      std::string text = src_.substr(start, k - start);
      if (sign == '-') {
        text = std::string(uni::strip(text, false, true));
      } else if (sign != '+') {
        const size_t nl = text.rfind('\n');
        const size_t lp = nl == std::string::npos ? 0 : nl + 1;
        if ((lp > 0 || line_starting_) && lp < text.size() && all_space(text, lp)) text.resize(lp);
      }
      const int save = line_;
      line_ = start_line;
      emit_data(std::move(text));
      line_ = save + count_newlines(start, end);
      line_starting_ = src_[end - 1] == '\n';
      pos_ = end;
      return;
    }
    fail("Missing end of raw directive", start_line);
  }

  void lex_comment(size_t body) {
    const size_t n = src_.size();
    const size_t k = src_.find("#}", body);
    if (k == std::string::npos) fail("Missing end of comment tag", line_);
    size_t end = k + 2;
    if (k > body && src_[k - 1] == '-') {
      end = skip_space(end);
    } else if (k > body && src_[k - 1] == '+') {
      // no trimming
    } else if (end < n && src_[end] == '\n') {
      ++end;  // trim_blocks
    }
    line_ += count_newlines(body, end);
    line_starting_ = src_[end - 1] == '\n';
    pos_ = end;
  }

  void lex_tag(bool variable, size_t p) {
    emit(variable ? Tok::VarBegin : Tok::BlockBegin);
    const size_t n = src_.size();
    std::string balance;
    while (true) {
      if (p >= n) fail("unexpected end of template", line_);
      if (balance.empty()) {
        size_t end = 0;
        if (variable) {
          if (starts(p, "-}}")) {
            end = skip_space(p + 3);
          } else if (starts(p, "}}")) {
            end = p + 2;
          }
        } else {
          if (starts(p, "+%}")) {
            end = p + 3;
          } else if (starts(p, "-%}")) {
            end = skip_space(p + 3);
          } else if (starts(p, "%}")) {
            end = p + 2;
            if (end < n && src_[end] == '\n') ++end;  // trim_blocks
          }
        }
        if (end) {
          emit(variable ? Tok::VarEnd : Tok::BlockEnd);
          line_ += count_newlines(p, end);
          line_starting_ = src_[end - 1] == '\n';
          pos_ = end;
          return;
        }
      }
      const unsigned char c = static_cast<unsigned char>(src_[p]);
      // whitespace
      {
        const size_t q = skip_space(p);
        if (q != p) {
          line_ += count_newlines(p, q);
          p = q;
          continue;
        }
      }
      if (c >= '0' && c <= '9') {
        p = lex_number(p);
        continue;
      }
      if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) {
        size_t q = p;
        while (q < n) {
          const unsigned char d = static_cast<unsigned char>(src_[q]);
          if (d == '_' || (d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z') || (d >= '0' && d <= '9') || d >= 0x80) {
            ++q;
          } else {
            break;
          }
        }
        emit(Tok::Name, src_.substr(p, q - p));
        p = q;
        continue;
      }
      if (c == '\'' || c == '"') {
        p = lex_string(p);
        continue;
      }
      static const char* const kOps2[] = {"//", "**", "==", "!=", ">=", "<="};
      bool two = false;
      for (const char* op : kOps2) {
        if (starts(p, op)) {
          emit(Tok::Op, op);
          p += 2;
          two = true;
          break;
        }
      }
      if (two) continue;
      if (std::string_view("+-/*%~[](){}><=.:|,;").find(static_cast<char>(c)) != std::string_view::npos) {
        if (c == '{' || c == '(' || c == '[') {
          balance.push_back(c == '{' ? '}' : c == '(' ? ')' : ']');
        } else if (c == '}' || c == ')' || c == ']') {
          if (balance.empty()) fail(std::string("unexpected '") + static_cast<char>(c) + "'", line_);
          if (balance.back() != static_cast<char>(c))
            fail(std::string("unexpected '") + static_cast<char>(c) + "', expected '" + balance.back() + "'", line_);
          balance.pop_back();
        }
        emit(Tok::Op, std::string(1, static_cast<char>(c)));
        ++p;
        continue;
      }
      fail(std::string("unexpected char '") + static_cast<char>(c) + "' at " + std::to_string(p), line_);
    }
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  // Digits with single '_' separators: (\d+_)*\d+ ; returns end or start when none.
  size_t digits(size_t p) const {
    size_t q = p;
    if (q >= src_.size() || !is_digit(src_[q])) return p;
    while (true) {
      while (q < src_.size() && is_digit(src_[q])) ++q;
      if (q + 1 < src_.size() && src_[q] == '_' && is_digit(src_[q + 1])) {
        ++q;
        continue;
      }
      return q;
    }
  }

  size_t lex_number(size_t p) {
    const size_t n = src_.size();
    // float: (\d+_)*\d+ ( (\.(\d+_)*\d+)? e[+-]?(\d+_)*\d+ | \.(\d+_)*\d+ ), not right after a '.'
    if (!(p > 0 && src_[p - 1] == '.')) {
      const size_t a = digits(p);
      size_t q = a;
      bool frac = false;
      if (q < n && src_[q] == '.') {
        const size_t f = digits(q + 1);
        if (f != q + 1) {
          q = f;
          frac = true;
        }
      }
      bool expo = false;
      if (q < n && (src_[q] == 'e' || src_[q] == 'E')) {
        size_t e = q + 1;
        if (e < n && (src_[e] == '+' || src_[e] == '-')) ++e;
        const size_t ed = digits(e);
        if (ed != e) {
          q = ed;
          expo = true;
        }
      }
      if (frac || expo) {
        std::string s;
        for (size_t i = p; i < q; ++i)
          if (src_[i] != '_') s.push_back(src_[i]);
        Token t;
        t.type = Tok::Float;
        t.line = line_;
        t.text = src_.substr(p, q - p);
        t.fval = std::strtod(s.c_str(), nullptr);
        toks_.push_back(std::move(t));
        return q;
      }
    }
    // integer: 0b / 0o / 0x prefixes, decimal with '_' separators.
    int base = 10;
    size_t q = p;
    std::string digs;
    if (src_[p] == '0' && p + 1 < n && std::string_view("bBoOxX").find(src_[p + 1]) != std::string_view::npos) {
      const char b = static_cast<char>(src_[p + 1] | 0x20);
      base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
      q = p + 2;
      auto ok = [&](char c) {
        if (base == 2) return c == '0' || c == '1';
        if (base == 8) return c >= '0' && c <= '7';
        return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
      };
      while (q < n) {
        if (src_[q] == '_' && q + 1 < n && ok(src_[q + 1])) {
          ++q;
        } else if (ok(src_[q])) {
          digs.push_back(src_[q++]);
        } else {
          break;
        }
      }
      if (digs.empty()) {  // just "0"
        base = 10;
        q = p + 1;
        digs.assign(1, '0');
      }
    } else if (src_[p] == '0') {
      q = p + 1;
      while (q < n && (src_[q] == '0' || (src_[q] == '_' && q + 1 < n && src_[q + 1] == '0'))) ++q;
      digs.assign(1, '0');
    } else {
      q = digits(p);
      for (size_t i = p; i < q; ++i)
        if (src_[i] != '_') digs.push_back(src_[i]);
    }
    Token t;
    t.type = Tok::Int;
    t.line = line_;
    t.text = src_.substr(p, q - p);
    errno = 0;
    t.ival = std::strtoll(digs.c_str(), nullptr, base);
    if (errno == ERANGE) fail("integer literal too large: " + t.text, line_);
    toks_.push_back(std::move(t));
    return q;
  }

  static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = static_cast<char>(c | 0x20);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  }

  size_t lex_string(size_t p) {
    const size_t n = src_.size();
    const char q = src_[p];
    size_t i = p + 1;
    while (i < n && src_[i] != q) {
      if (src_[i] == '\\') ++i;
      ++i;
    }
    if (i >= n) fail("unexpected char '" + std::string(1, q) + "' at " + std::to_string(p), line_);
    const std::string raw = src_.substr(p + 1, i - p - 1);
    // Python "unicode-escape" decoding of the literal body.
    std::string out;
    for (size_t k = 0; k < raw.size(); ++k) {
      const char c = raw[k];
      if (c != '\\' || k + 1 >= raw.size()) {
        out.push_back(c);
        continue;
      }
      const char e = raw[++k];
      switch (e) {
        case '\n':
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (size_t d = 0; d < len; ++d) {
            const int h = k + 1 + d < raw.size() ? hexval(raw[k + 1 + d]) : -1;
            if (h < 0) fail("truncated \\" + std::string(1, e) + " escape in string literal", line_);
            cp = cp * 16 + static_cast<uint32_t>(h);
          }
          if (cp > 0x10FFFF) fail("illegal Unicode character in string literal", line_);
          k += len;
          uni::append(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int d = 0; d < 2 && k + 1 < raw.size() && raw[k + 1] >= '0' && raw[k + 1] <= '7'; ++d)
              cp = cp * 8 + static_cast<uint32_t>(raw[++k] - '0');
            uni::append(out, cp);
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    Token t;
    t.type = Tok::String;
    t.line = line_;
    t.text = std::move(out);
    toks_.push_back(std::move(t));
    line_ += count_newlines(p, i);
    return i + 1;
  }

  std::string src_;
  const std::string& origin_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> toks_;
};

}  // namespace

std::vector<Token> lex(const std::string& source, const std::string& origin) { return Lexer(source, origin).run(); }

}  // namespace gt::jinja
