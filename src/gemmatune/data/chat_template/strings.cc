#include "gemmatune/data/chat_template/strings.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "gemmatune/data/chat_template/interp.h"
#include "gemmatune/data/chat_template/limits.h"
#include "gemmatune/data/chat_template/unicode.h"

namespace gt::jinja {
namespace {

struct Piece {
  size_t b, e;  // byte range
};

// Byte offset of code point index `idx` (clamped to the string).
size_t byte_offset(std::string_view s, int64_t idx) {
  size_t i = 0;
  for (int64_t k = 0; k < idx && i < s.size(); ++k) uni::decode(s, i);
  return i;
}

// Normalizes Python [start:end] indices (code points) to byte offsets; false when start > len.
bool range_bytes(std::string_view s, const Value& start, const Value& end, size_t* b, size_t* e) {
  const auto n = static_cast<int64_t>(uni::length(s));
  auto norm = [&](const Value& v, int64_t def) {
    if (v.is_none() || v.is_undefined()) return def;
    if (!v.is_integral()) raise("slice indices must be integers or None or have an __index__ method");
    int64_t x = v.as_int();
    if (x < 0) x = std::max<int64_t>(0, x + n);
    return std::min(x, n);
  };
  int64_t st = 0;
  if (!(start.is_none() || start.is_undefined())) {
    if (!start.is_integral()) raise("slice indices must be integers or None or have an __index__ method");
    st = start.as_int();
    if (st < 0) st = std::max<int64_t>(0, st + n);
    if (st > n) return false;
  }
  const int64_t en = norm(end, n);
  *b = byte_offset(s, st);
  *e = en <= st ? *b : byte_offset(s, en);
  return true;
}

int64_t cp_index(std::string_view s, size_t byte) { return static_cast<int64_t>(uni::length(s.substr(0, byte))); }

bool is_space_at(std::string_view s, size_t i, size_t* next) {
  const uint32_t c = uni::decode(s, i);
  *next = i;
  return uni::is_space(c);
}

}  // namespace

std::vector<std::string> py_split(std::string_view s, const Value& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (sep.is_none() || sep.is_undefined()) {
    size_t i = 0;
    const size_t n = s.size();
    while (true) {
      size_t nx;
      while (i < n && is_space_at(s, i, &nx)) i = nx;
      if (i >= n) break;
      if (maxsplit == 0) {
        out.emplace_back(s.substr(i));
        break;
      }
      size_t j = i;
      while (j < n && !is_space_at(s, j, &nx)) j = nx;
      out.emplace_back(s.substr(i, j - i));
      --maxsplit;
      i = j;
    }
    return out;
  }
  if (!sep.is_string()) raise("must be str or None, not " + type_name(sep));
  const std::string& d = sep.as_str();
  if (d.empty()) raise("empty separator");
  size_t i = 0;
  while (maxsplit > 0) {
    const size_t k = s.find(d, i);
    if (k == std::string_view::npos) break;
    out.emplace_back(s.substr(i, k - i));
    i = k + d.size();
    --maxsplit;
  }
  out.emplace_back(s.substr(i));
  return out;
}

std::vector<std::string> py_rsplit(std::string_view s, const Value& sep, int64_t maxsplit) {
  if (maxsplit < 0) return py_split(s, sep, maxsplit);
  std::vector<std::string> out;
  if (sep.is_none() || sep.is_undefined()) {
    const std::vector<uint32_t> cps = uni::code_points(s);
    int64_t e = static_cast<int64_t>(cps.size());
    while (true) {
      while (e > 0 && uni::is_space(cps[static_cast<size_t>(e - 1)])) --e;
      if (e <= 0) break;
      if (maxsplit == 0) {
        out.push_back(uni::encode(cps, 0, static_cast<size_t>(e)));
        break;
      }
      int64_t b = e;
      while (b > 0 && !uni::is_space(cps[static_cast<size_t>(b - 1)])) --b;
      out.push_back(uni::encode(cps, static_cast<size_t>(b), static_cast<size_t>(e)));
      --maxsplit;
      e = b;
    }
    std::reverse(out.begin(), out.end());
    return out;
  }
  if (!sep.is_string()) raise("must be str or None, not " + type_name(sep));
  const std::string& d = sep.as_str();
  if (d.empty()) raise("empty separator");
  size_t e = s.size();
  while (maxsplit > 0 && e >= d.size()) {
    const size_t k = s.rfind(d, e - d.size());
    if (k == std::string_view::npos) break;
    out.emplace_back(s.substr(k + d.size(), e - k - d.size()));
    e = k;
    --maxsplit;
  }
  out.emplace_back(s.substr(0, e));
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> py_splitlines(std::string_view s, bool keepends) {
  std::vector<std::string> out;
  size_t start = 0, i = 0;
  while (i < s.size()) {
    const size_t at = i;
    const uint32_t c = uni::decode(s, i);
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                     c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    size_t end_incl = i;
    if (c == '\r' && i < s.size() && s[i] == '\n') end_incl = ++i;
    out.emplace_back(s.substr(start, (keepends ? end_incl : at) - start));
    start = i;
  }
  if (start < s.size()) out.emplace_back(s.substr(start));
  return out;
}

std::string py_replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (old.empty()) {
    size_t i = 0;
    while (i < s.size()) {
      if (count > 0) {
        out += repl;
        --count;
        check_string_size(out.size(), "replace()");
      }
      const size_t b = i;
      uni::decode(s, i);
      out.append(s.substr(b, i - b));
    }
    if (count > 0) out += repl;
    return out;
  }
  size_t i = 0;
  while (count > 0) {
    const size_t k = s.find(old, i);
    if (k == std::string_view::npos) break;
    out.append(s.substr(i, k - i));
    out += repl;
    check_string_size(out.size(), "replace()");
    i = k + old.size();
    --count;
  }
  out.append(s.substr(i));
  return out;
}

int64_t py_find(std::string_view s, std::string_view sub, const Value& start, const Value& end, bool reverse) {
  size_t b, e;
  if (!range_bytes(s, start, end, &b, &e)) return -1;
  if (e < b || e - b < sub.size()) return -1;
  const std::string_view w = s.substr(b, e - b);
  const size_t k = reverse ? w.rfind(sub) : w.find(sub);
  if (k == std::string_view::npos) return -1;
  return cp_index(s, b + k);
}

int64_t py_count(std::string_view s, std::string_view sub, const Value& start, const Value& end) {
  size_t b, e;
  if (!range_bytes(s, start, end, &b, &e)) return 0;
  const std::string_view w = s.substr(b, e - b);
  if (sub.empty()) return static_cast<int64_t>(uni::length(w)) + 1;
  int64_t n = 0;
  for (size_t k = w.find(sub); k != std::string_view::npos; k = w.find(sub, k + sub.size())) ++n;
  return n;
}

std::string pad(std::string_view s, int64_t width, char align, std::string_view fill) {
  const auto len = static_cast<int64_t>(uni::length(s));
  if (width <= len) return std::string(s);
  check_width(width, "padding");
  check_string_size(static_cast<size_t>(width) * std::max<size_t>(fill.size(), 1), "padding");
  const int64_t total = width - len;
  int64_t left = 0;
  if (align == '>') {
    left = total;
  } else if (align == '^') {
    left = total / 2;
  }
  std::string out;
  for (int64_t k = 0; k < left; ++k) out += fill;
  out += s;
  for (int64_t k = 0; k < total - left; ++k) out += fill;
  return out;
}

bool parse_py_float(std::string_view s, double* out) {
  s = uni::strip(s, true, true);
  std::string t;
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) t.push_back(s[i++]);
  std::string rest = uni::lower(s.substr(i));
  if (rest == "inf" || rest == "infinity") {
    *out = t == "-" ? -INFINITY : INFINITY;
    return true;
  }
  if (rest == "nan") {
    *out = NAN;
    return true;
  }
  // digits with single '_' between digits
  auto digits = [&](size_t& p) {
    const size_t st = p;
    while (p < rest.size()) {
      if (rest[p] >= '0' && rest[p] <= '9') {
        t.push_back(rest[p++]);
      } else if (rest[p] == '_' && p > st && p + 1 < rest.size() && rest[p - 1] != '_' && rest[p + 1] >= '0' &&
                 rest[p + 1] <= '9') {
        ++p;
      } else {
        break;
      }
    }
    return p > st;
  };
  size_t p = 0;
  const bool a = digits(p);
  bool b = false;
  if (p < rest.size() && rest[p] == '.') {
    t.push_back('.');
    ++p;
    b = digits(p);
  }
  if (!a && !b) return false;
  if (p < rest.size() && rest[p] == 'e') {
    t.push_back('e');
    ++p;
    if (p < rest.size() && (rest[p] == '+' || rest[p] == '-')) t.push_back(rest[p++]);
    if (!digits(p)) return false;
  }
  if (p != rest.size()) return false;
  *out = std::strtod(t.c_str(), nullptr);
  return true;
}

bool parse_py_int(std::string_view s, int base, int64_t* out) {
  s = uni::strip(s, true, true);
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  auto prefix = [&](char c) { return i + 1 < s.size() && s[i] == '0' && (s[i + 1] | 0x20) == c; };
  if (base == 0) {
    if (prefix('x')) {
      base = 16;
    } else if (prefix('o')) {
      base = 8;
    } else if (prefix('b')) {
      base = 2;
    } else {
      base = 10;
    }
  }
  bool had_prefix = false;
  if ((base == 16 && prefix('x')) || (base == 8 && prefix('o')) || (base == 2 && prefix('b'))) {
    i += 2;
    had_prefix = true;
  }
  std::string digs;
  bool last_us = had_prefix;  // "0x_1" is allowed
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_') {
      if (last_us && !(had_prefix && digs.empty())) return false;
      if (digs.empty() && !had_prefix) return false;
      last_us = true;
      continue;
    }
    int d = -1;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') {
      d = (c | 0x20) - 'a' + 10;
    }
    if (d < 0 || d >= base) return false;
    digs.push_back(c);
    last_us = false;
  }
  if (digs.empty() || (last_us && !digs.empty())) return false;
  errno = 0;
  const long long v = std::strtoll(digs.c_str(), nullptr, base);
  if (errno == ERANGE) return false;
  *out = neg ? -v : v;
  return true;
}

// ------------------------------------------------------------------- printf-style formatting

namespace {

// snprintf into a string of the exact size (widths and precisions are bounded by the callers).
template <class T>
std::string cformat_any(const std::string& spec, T v) {
  char buf[512];
  const int n = std::snprintf(buf, sizeof(buf), spec.c_str(), v);
  if (n < 0) raise("cannot format with '" + spec + "'");
  if (static_cast<size_t>(n) < sizeof(buf)) return std::string(buf, static_cast<size_t>(n));
  check_string_size(static_cast<size_t>(n), "formatting");
  std::string out(static_cast<size_t>(n) + 1, '\0');
  std::snprintf(out.data(), out.size(), spec.c_str(), v);
  out.resize(static_cast<size_t>(n));
  return out;
}
std::string cformat(const std::string& spec, double d) { return cformat_any(spec, d); }
std::string cformat_int(const std::string& spec, long long v) { return cformat_any(spec, v); }

// A width or precision written as digits: saturates instead of overflowing; the caller checks it.
void add_digit(int64_t& n, char c) { n = n > INT64_MAX / 10 - 10 ? INT64_MAX / 10 : n * 10 + (c - '0'); }

// A '*' width or precision taken from the arguments.
int64_t star_arg(const Value& v) {
  if (!v.is_integral()) raise("* wants int");
  return v.as_int();
}

}  // namespace

std::string py_percent_format(const std::string& fmt, const Value& args) {
  std::vector<Value> vals;
  const DictObj* mapping = args.is_dict() ? &args.as_dict() : nullptr;
  if (args.is_tuple()) {
    vals = args.as_list().items;
  } else {
    vals.push_back(args);
  }
  size_t ai = 0;
  std::string out;
  auto next_val = [&]() -> Value {
    if (ai >= vals.size()) raise("not enough arguments for format string");
    return vals[ai++];
  };
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    if (++i >= fmt.size()) raise("incomplete format");
    if (fmt[i] == '%') {
      out.push_back('%');
      continue;
    }
    Value v;
    bool have_v = false;
    if (fmt[i] == '(') {
      if (!mapping) raise("format requires a mapping");
      const size_t close = fmt.find(')', i);
      if (close == std::string::npos) raise("incomplete format key");
      const std::string key = fmt.substr(i + 1, close - i - 1);
      const Value* found = mapping->find(std::string_view(key));
      if (!found) raise("'" + key + "'");
      v = *found;
      have_v = true;
      i = close + 1;
    }
    std::string flags;
    while (i < fmt.size() && std::string_view("-+ #0").find(fmt[i]) != std::string_view::npos)
      flags.push_back(fmt[i++]);
    int64_t width = -1, prec = -1;
    if (i < fmt.size() && fmt[i] == '*') {
      width = star_arg(next_val());
      if (width < 0) {  // Python: a negative * width left-aligns
        flags.push_back('-');
        width = width == INT64_MIN ? INT64_MAX : -width;
      }
      ++i;
    } else {
      while (i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9') {
        if (width < 0) width = 0;
        add_digit(width, fmt[i++]);
      }
    }
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      prec = 0;
      if (i < fmt.size() && fmt[i] == '*') {
        prec = std::max<int64_t>(-1, star_arg(next_val()));
        ++i;
      } else {
        while (i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9') add_digit(prec, fmt[i++]);
      }
    }
    check_width(width, "%-format width");
    check_width(prec, "%-format precision");
    while (i < fmt.size() && (fmt[i] == 'h' || fmt[i] == 'l' || fmt[i] == 'L')) ++i;
    if (i >= fmt.size()) raise("incomplete format");
    const char conv = fmt[i];
    if (!have_v) v = next_val();
    const bool left = flags.find('-') != std::string::npos;
    std::string piece;
    switch (conv) {
      case 's':
      case 'r':
      case 'a': {
        std::string s = conv == 's' ? to_str(v) : repr(v);
        if (prec >= 0) {
          const auto cps = uni::code_points(s);
          if (static_cast<int64_t>(cps.size()) > prec) s = uni::encode(cps, 0, static_cast<size_t>(prec));
        }
        piece = pad(s, width, left ? '<' : '>', " ");
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        if (!v.is_number()) {
          if (conv == 'd' || conv == 'i' || conv == 'u')
            raise(std::string("%") + conv + " format: a real number is required, not " + type_name(v));
          raise(std::string("%") + conv + " format: an integer is required, not " + type_name(v));
        }
        if (v.is_float() && conv != 'd' && conv != 'i' && conv != 'u')
          raise(std::string("%") + conv + " format: an integer is required, not float");
        if (v.is_float() && !(std::fabs(v.as_double()) < 9.2e18))
          raise("%" + std::string(1, conv) + " format: number too large (gemmatune's integers are 64-bit)");
        const long long x = v.is_float() ? static_cast<long long>(std::trunc(v.as_double())) : v.as_int();
        std::string f = "%";
        for (char c : flags)
          if (c != '#') f.push_back(c);
        if (width >= 0) f += std::to_string(width);
        if (prec >= 0) f += "." + std::to_string(prec);
        const char c = conv == 'i' || conv == 'u' ? 'd' : conv;
        f += "ll";
        f.push_back(c);
        if (c == 'x' || c == 'X' || c == 'o') {
          // Python prints the sign and the magnitude (printf would print a negative number's
          // two's complement), and 0x / 0X / 0o for '#'.
          std::string g = "%ll";
          g.push_back(c);
          // %llx/%llo print LLONG_MIN's bits as 2**63, its magnitude; -x would overflow.
          std::string digits = cformat_int(g, x < 0 && x != LLONG_MIN ? -x : x);
          if (prec > static_cast<int64_t>(digits.size()))
            digits = std::string(static_cast<size_t>(prec) - digits.size(), '0') + digits;
          std::string body = x < 0                                  ? "-"
                             : flags.find('+') != std::string::npos ? "+"
                             : flags.find(' ') != std::string::npos ? " "
                                                                    : "";
          if (flags.find('#') != std::string::npos) body += c == 'o' ? "0o" : c == 'x' ? "0x" : "0X";
          if (flags.find('0') != std::string::npos && !left && prec < 0 &&
              width > static_cast<int64_t>(body.size() + digits.size()))
            digits = std::string(static_cast<size_t>(width) - body.size() - digits.size(), '0') + digits;
          piece = pad(body + digits, width, left ? '<' : '>', " ");
        } else {
          piece = cformat_int(f, x);
        }
        break;
      }
      case 'e':
      case 'E':
      case 'f':
      case 'F':
      case 'g':
      case 'G': {
        if (!v.is_number()) raise("must be real number, not " + type_name(v));
        std::string f = "%" + flags;
        if (width >= 0) f += std::to_string(width);
        if (prec >= 0) f += "." + std::to_string(prec);
        f.push_back(conv);
        piece = cformat(f, v.as_double());
        break;
      }
      case 'c': {
        std::string s;
        if (v.is_integral()) {
          if (v.as_int() < 0 || v.as_int() > 0x10FFFF) raise("%c arg not in range(0x110000)");
          uni::append(s, static_cast<uint32_t>(v.as_int()));
        } else if (v.is_string() && uni::length(v.as_str()) == 1) {
          s = v.as_str();
        } else {
          raise("%c requires int or char");
        }
        piece = pad(s, width, left ? '<' : '>', " ");
        break;
      }
      default:
        raise(std::string("unsupported format character '") + conv + "'");
    }
    out += piece;
  }
  if (!mapping && ai < vals.size()) raise("not all arguments converted during string formatting");
  return out;
}

// ------------------------------------------------------------------- str.format

namespace {

struct Spec {
  std::string fill = " ";
  char align = 0;
  char sign = '-';
  bool alt = false;
  bool zero = false;
  int64_t width = -1;
  char grouping = 0;
  int64_t prec = -1;
  char type = 0;
};

Spec parse_spec(const std::string& s) {
  Spec sp;
  size_t i = 0;
  const auto cps = uni::code_points(s);
  auto is_align = [](uint32_t c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  size_t ci = 0;
  if (cps.size() >= 2 && is_align(cps[1])) {
    sp.fill = uni::encode(cps, 0, 1);
    sp.align = static_cast<char>(cps[1]);
    ci = 2;
  } else if (!cps.empty() && is_align(cps[0])) {
    sp.align = static_cast<char>(cps[0]);
    ci = 1;
  }
  const std::string rest = uni::encode(cps, ci, cps.size());
  i = 0;
  if (i < rest.size() && (rest[i] == '+' || rest[i] == '-' || rest[i] == ' ')) sp.sign = rest[i++];
  if (i < rest.size() && rest[i] == '#') {
    sp.alt = true;
    ++i;
  }
  if (i < rest.size() && rest[i] == '0') {
    sp.zero = true;
    ++i;
  }
  while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') {
    if (sp.width < 0) sp.width = 0;
    add_digit(sp.width, rest[i++]);
  }
  check_width(sp.width, "format width");
  if (i < rest.size() && (rest[i] == ',' || rest[i] == '_')) sp.grouping = rest[i++];
  if (i < rest.size() && rest[i] == '.') {
    ++i;
    sp.prec = 0;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') add_digit(sp.prec, rest[i++]);
    check_width(sp.prec, "format precision");
  }
  if (i < rest.size()) sp.type = rest[i++];
  if (i != rest.size()) raise("Invalid format specifier");
  return sp;
}

std::string group_digits(const std::string& digits, char sep, int every) {
  std::string out;
  const int n = static_cast<int>(digits.size());
  for (int k = 0; k < n; ++k) {
    if (k && (n - k) % every == 0) out.push_back(sep);
    out.push_back(digits[static_cast<size_t>(k)]);
  }
  return out;
}

std::string apply_numeric(const Spec& sp, bool negative, std::string prefix, std::string body) {
  std::string sign = negative ? "-" : sp.sign == '+' ? "+" : sp.sign == ' ' ? " " : "";
  char align = sp.align ? sp.align : '>';
  std::string fill = sp.fill;
  if (sp.zero && !sp.align) {
    align = '=';
    fill = "0";
  }
  const std::string head = sign + prefix;
  if (align == '=') {
    const int64_t len = static_cast<int64_t>(uni::length(head) + uni::length(body));
    std::string mid;
    check_string_size(static_cast<size_t>(std::max<int64_t>(sp.width, 0)) * fill.size(), "padding");
    for (int64_t k = len; k < sp.width; ++k) mid += fill;
    return head + mid + body;
  }
  return pad(head + body, sp.width, align, fill);
}

std::string format_value(const Value& v, const std::string& spec_str) {
  if (spec_str.empty()) return to_str(v);
  const Spec sp = parse_spec(spec_str);
  if (v.is_string() || v.is_undefined()) {
    if (sp.type && sp.type != 's') raise(std::string("Unknown format code '") + sp.type + "' for object of type 'str'");
    std::string s = to_str(v);
    if (sp.prec >= 0) {
      const auto cps = uni::code_points(s);
      if (static_cast<int64_t>(cps.size()) > sp.prec) s = uni::encode(cps, 0, static_cast<size_t>(sp.prec));
    }
    return pad(s, sp.width, sp.align ? sp.align : '<', sp.fill);
  }
  if (v.is_number()) {
    const bool as_int =
        v.is_integral() && (sp.type == 0 || std::string_view("dnbcoxX").find(sp.type) != std::string_view::npos);
    if (as_int) {
      if (v.is_bool() && sp.type == 0) return pad(to_str(v), sp.width, sp.align ? sp.align : '<', sp.fill);
      const long long x = v.as_int();
      const unsigned long long ax =
          x < 0 ? 0ULL - static_cast<unsigned long long>(x) : static_cast<unsigned long long>(x);
      std::string digits, prefix;
      char buf[80];
      switch (sp.type) {
        case 'x':
        case 'X':
          std::snprintf(buf, sizeof(buf), sp.type == 'x' ? "%llx" : "%llX", ax);
          digits = buf;
          if (sp.alt) prefix = sp.type == 'x' ? "0x" : "0X";
          break;
        case 'o':
          std::snprintf(buf, sizeof(buf), "%llo", ax);
          digits = buf;
          if (sp.alt) prefix = "0o";
          break;
        case 'b': {
          unsigned long long t = ax;
          do {
            digits.insert(digits.begin(), static_cast<char>('0' + (t & 1)));
            t >>= 1;
          } while (t);
          if (sp.alt) prefix = "0b";
          break;
        }
        case 'c': {
          std::string s;
          if (x < 0 || x > 0x10FFFF) raise("%c arg not in range(0x110000)");
          uni::append(s, static_cast<uint32_t>(x));
          return pad(s, sp.width, sp.align ? sp.align : '<', sp.fill);
        }
        default:
          digits = std::to_string(ax);
          if (sp.grouping) digits = group_digits(digits, sp.grouping, 3);
      }
      return apply_numeric(sp, x < 0, prefix, digits);
    }
    if (v.is_integral() || std::string_view("eEfFgG%n").find(sp.type) != std::string_view::npos || sp.type == 0) {
      const double d = v.as_double();
      std::string body;
      if (sp.type == 0 && sp.prec < 0) {
        body = float_repr(std::fabs(d));
      } else {
        char t = sp.type == 0 ? 'g' : sp.type == 'n' ? 'g' : sp.type;
        const int64_t prec = sp.prec < 0 ? 6 : sp.prec;
        double x = std::fabs(d);
        if (t == '%') {
          x *= 100;
          t = 'f';
        }
        char f[32];
        std::snprintf(f, sizeof(f), "%%%s.%lld%c", sp.alt ? "#" : "", static_cast<long long>(prec), t);
        body = cformat(f, x);
        if (sp.type == 0 && body.find_first_of(".einf") == std::string::npos) body += ".0";
        if (sp.type == '%') body += "%";
        if (sp.grouping) {
          const size_t dot = body.find_first_of(".e%");
          const std::string ip = body.substr(0, dot);
          body = group_digits(ip, sp.grouping, 3) + (dot == std::string::npos ? "" : body.substr(dot));
        }
      }
      return apply_numeric(sp, std::signbit(d), "", body);
    }
    raise(std::string("Unknown format code '") + sp.type + "' for object of type '" + type_name(v) + "'");
  }
  raise("unsupported format string passed to " + type_name(v) + ".__format__");
}

}  // namespace

std::string py_str_format(Interp& in, const std::string& fmt, const std::vector<Value>& args,
                          const std::vector<std::pair<std::string, Value>>& kwargs) {
  std::string out;
  int auto_idx = 0;
  bool manual = false, automatic = false;
  for (size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') {
        out.push_back('}');
        ++i;
        continue;
      }
      raise("Single '}' encountered in format string");
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    // Find the matching '}' (one level of nesting inside the spec).
    size_t j = i + 1;
    int depth = 1;
    for (; j < fmt.size(); ++j) {
      if (fmt[j] == '{') ++depth;
      if (fmt[j] == '}' && --depth == 0) break;
    }
    if (j >= fmt.size()) raise("expected '}' before end of string");
    std::string field = fmt.substr(i + 1, j - i - 1);
    i = j;
    std::string spec, conv;
    // field_name [!conv] [:spec] ; brackets may contain ':' or '!'
    size_t k = 0;
    int br = 0;
    for (; k < field.size(); ++k) {
      if (field[k] == '[') ++br;
      if (field[k] == ']') --br;
      if (br == 0 && (field[k] == '!' || field[k] == ':')) break;
    }
    std::string name = field.substr(0, k);
    if (k < field.size() && field[k] == '!') {
      const size_t colon = field.find(':', k);
      conv = field.substr(k + 1, colon == std::string::npos ? std::string::npos : colon - k - 1);
      k = colon == std::string::npos ? field.size() : colon;
    }
    if (k < field.size() && field[k] == ':') spec = field.substr(k + 1);
    if (spec.find('{') != std::string::npos) spec = py_str_format(in, spec, args, kwargs);
    // Resolve the argument.
    size_t p = 0;
    while (p < name.size() && name[p] != '.' && name[p] != '[') ++p;
    const std::string first = name.substr(0, p);
    Value v;
    if (first.empty()) {
      if (manual) raise("cannot switch from manual field specification to automatic field numbering");
      automatic = true;
      if (auto_idx >= static_cast<int>(args.size()))
        raise("Replacement index " + std::to_string(auto_idx) + " out of range for positional args tuple");
      v = args[static_cast<size_t>(auto_idx++)];
    } else if (first.find_first_not_of("0123456789") == std::string::npos) {
      if (automatic) raise("cannot switch from automatic field numbering to manual field specification");
      manual = true;
      const size_t idx = std::stoul(first);
      if (idx >= args.size()) raise("Replacement index " + first + " out of range for positional args tuple");
      v = args[idx];
    } else {
      bool found = false;
      for (const auto& kv : kwargs) {
        if (kv.first == first) {
          v = kv.second;
          found = true;
        }
      }
      if (!found) raise("'" + first + "'");
    }
    while (p < name.size()) {
      if (name[p] == '.') {
        size_t q = p + 1;
        while (q < name.size() && name[q] != '.' && name[q] != '[') ++q;
        v = in.getattr(v, name.substr(p + 1, q - p - 1));
        p = q;
      } else {
        const size_t q = name.find(']', p);
        if (q == std::string::npos) raise("Missing ']' in format string");
        const std::string key = name.substr(p + 1, q - p - 1);
        const bool num = !key.empty() && key.find_first_not_of("0123456789") == std::string::npos;
        v = in.getitem(v, num ? Value::integer(std::stoll(key)) : Value::str(key));
        p = q + 1;
      }
    }
    if (conv == "r" || conv == "a") {
      v = Value::str(repr(v));
    } else if (conv == "s") {
      v = Value::str(to_str(v));
    } else if (!conv.empty()) {
      raise("Unknown conversion specifier " + conv);
    }
    out += format_value(v, spec);
  }
  return out;
}

}  // namespace gt::jinja
