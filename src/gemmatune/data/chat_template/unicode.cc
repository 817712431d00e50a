#include "gemmatune/data/chat_template/unicode.h"

#include <algorithm>

namespace gt::jinja::uni {
namespace {

struct CaseRun {
  uint32_t lo, hi;
  int32_t delta;
  uint32_t stride;
};
struct CaseMulti {
  uint32_t cp;
  uint32_t out[3];
};
struct CpRange {
  uint32_t lo, hi;
};

#include "gemmatune/data/chat_template/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CpRange (&r)[N], uint32_t cp) {
  const CpRange* it = std::upper_bound(r, r + N, cp, [](uint32_t c, const CpRange& x) { return c < x.lo; });
  if (it == r) return false;
  --it;
  return cp <= it->hi;
}

// Appends the mapping of cp; returns false when cp maps to itself (nothing appended).
template <size_t NR, size_t NM>
bool map_case(std::string& out, uint32_t cp, const CaseRun (&runs)[NR], const CaseMulti (&multi)[NM]) {
  const CaseMulti* m = std::lower_bound(multi, multi + NM, cp, [](const CaseMulti& x, uint32_t c) { return x.cp < c; });
  if (m != multi + NM && m->cp == cp && cp != 0) {
    for (uint32_t o : m->out)
      if (o) append(out, o);
    return true;
  }
  const CaseRun* it = std::upper_bound(runs, runs + NR, cp, [](uint32_t c, const CaseRun& x) { return c < x.lo; });
  if (it == runs) return false;
  --it;
  if (cp > it->hi || (cp - it->lo) % it->stride != 0) return false;
  append(out, static_cast<uint32_t>(static_cast<int64_t>(cp) + it->delta));
  return true;
}

bool is_case_ignorable(uint32_t cp) {
  // Approximation of the Unicode Case_Ignorable property (used for the final-sigma rule).
  return cp == '\'' || cp == '.' || cp == ':' || cp == '^' || cp == '`' || cp == 0xAD || cp == 0xB7 || cp == 0x2019 ||
         (cp >= 0x300 && cp <= 0x36F);
}

}  // namespace

uint32_t decode(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int n = 0;
  uint32_t cp = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 1;
    cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 2;
    cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 3;
    cp = b0 & 0x07;
  } else {
    ++i;
    return 0xDC00 + b0;
  }
  if (i + static_cast<size_t>(n) >= s.size()) {
    ++i;
    return 0xDC00 + b0;
  }
  for (int k = 1; k <= n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      ++i;
      return 0xDC00 + b0;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  static const uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return 0xDC00 + b0;
  }
  i += n + 1;
  return cp;
}

void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp >= 0xDC80 && cp <= 0xDCFF) {
    out.push_back(static_cast<char>(cp - 0xDC00));  // an undecodable byte, restored
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) cps.push_back(decode(s, i));
  return cps;
}

std::string encode(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t k = begin; k < end; ++k) append(out, cps[k]);
  return out;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

size_t length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
    } else {
      decode(s, i);
    }
    ++n;
  }
  return n;
}

bool is_space(uint32_t cp) {
  if (cp < 0x80) return (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x20);
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool is_cased(uint32_t cp) { return in_ranges(kCased, cp); }
bool is_alpha(uint32_t cp) { return in_ranges(kAlpha, cp); }
bool is_decimal(uint32_t cp) { return cp >= '0' && cp <= '9'; }

bool is_lower_char(uint32_t cp) {
  if (!is_cased(cp)) return false;
  std::string tmp;
  return !map_case(tmp, cp, kLowerRuns, kLowerMulti) && map_case(tmp, cp, kUpperRuns, kUpperMulti);
}
bool is_upper_char(uint32_t cp) {
  if (!is_cased(cp)) return false;
  std::string tmp;
  return !map_case(tmp, cp, kUpperRuns, kUpperMulti) && map_case(tmp, cp, kLowerRuns, kLowerMulti);
}
bool is_title_char(uint32_t cp) {
  if (!is_cased(cp)) return false;
  std::string tmp;
  return !map_case(tmp, cp, kTitleRuns, kTitleMulti) && map_case(tmp, cp, kUpperRuns, kUpperMulti);
}

void append_upper(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp >= 'a' && cp <= 'z' ? cp - 32 : cp));
    return;
  }
  if (!map_case(out, cp, kUpperRuns, kUpperMulti)) append(out, cp);
}
void append_lower(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
    return;
  }
  if (!map_case(out, cp, kLowerRuns, kLowerMulti)) append(out, cp);
}
void append_title(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp >= 'a' && cp <= 'z' ? cp - 32 : cp));
    return;
  }
  if (!map_case(out, cp, kTitleRuns, kTitleMulti)) append(out, cp);
}

std::string upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) append_upper(out, decode(s, i));
  return out;
}

namespace {
// Python's lower() maps capital sigma to final sigma at the end of a word.
bool final_sigma(const std::vector<uint32_t>& cps, size_t k) {
  size_t j = k;
  bool before = false;
  while (j > 0) {
    --j;
    if (is_case_ignorable(cps[j])) continue;
    before = is_cased(cps[j]);
    break;
  }
  if (!before) return false;
  for (j = k + 1; j < cps.size(); ++j) {
    if (is_case_ignorable(cps[j])) continue;
    return !is_cased(cps[j]);
  }
  return true;
}
}  // namespace

std::string lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  if (is_ascii(s)) {
    for (char c : s) out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c);
    return out;
  }
  const std::vector<uint32_t> cps = code_points(s);
  for (size_t k = 0; k < cps.size(); ++k) {
    if (cps[k] == 0x3A3) {
      append(out, final_sigma(cps, k) ? 0x3C2 : 0x3C3);
    } else {
      append_lower(out, cps[k]);
    }
  }
  return out;
}

std::string title(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const std::vector<uint32_t> cps = code_points(s);
  bool prev_cased = false;
  for (size_t k = 0; k < cps.size(); ++k) {
    const uint32_t c = cps[k];
    if (prev_cased) {
      if (c == 0x3A3)
        append(out, final_sigma(cps, k) ? 0x3C2 : 0x3C3);
      else
        append_lower(out, c);
    } else {
      append_title(out, c);
    }
    prev_cased = is_cased(c);
  }
  return out;
}

std::string capitalize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const std::vector<uint32_t> cps = code_points(s);
  for (size_t k = 0; k < cps.size(); ++k) {
    if (k == 0) {
      append_title(out, cps[k]);
    } else if (cps[k] == 0x3A3) {
      append(out, final_sigma(cps, k) ? 0x3C2 : 0x3C3);
    } else {
      append_lower(out, cps[k]);
    }
  }
  return out;
}

std::string swapcase(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = decode(s, i);
    if (is_upper_char(c))
      append_lower(out, c);
    else if (is_lower_char(c))
      append_upper(out, c);
    else
      append(out, c);
  }
  return out;
}

std::string casefold(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = decode(s, i);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    } else if (!map_case(out, c, kFoldRuns, kFoldMulti)) {
      append(out, c);
    }
  }
  return out;
}

std::string_view strip(std::string_view s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t i = b;
      const uint32_t c = decode(s, i);
      if (!is_space(c)) break;
      b = i;
    }
  }
  if (right) {
    while (e > b) {
      // step back to the start of the previous code point
      size_t st = e - 1;
      while (st > b && (static_cast<unsigned char>(s[st]) & 0xC0) == 0x80 && e - st < 4) --st;
      size_t i = st;
      const uint32_t c = decode(s, i);
      if (i != e) {  // not a clean code point boundary: treat the last byte alone
        break;
      }
      if (!is_space(c)) break;
      e = st;
    }
  }
  return s.substr(b, e - b);
}

std::string strip_chars(std::string_view s, std::string_view chars, bool left, bool right) {
  const std::vector<uint32_t> set = code_points(chars);
  const std::vector<uint32_t> cps = code_points(s);
  auto in = [&](uint32_t c) { return std::find(set.begin(), set.end(), c) != set.end(); };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && in(cps[b])) ++b;
  if (right)
    while (e > b && in(cps[e - 1])) --e;
  return encode(cps, b, e);
}

}  // namespace gt::jinja::uni
