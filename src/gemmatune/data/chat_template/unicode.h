// UTF-8 helpers with Python str semantics: code-point length and indexing, str.isspace(),
// and the full case mappings of str.upper/lower/title/capitalize (tables generated from
// CPython's Unicode database by gen_unicode_tables.py).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gt::jinja::uni {

// Decodes the code point at s[i] and advances i. A byte that does not start a valid UTF-8
// sequence decodes as 0xDC00 + byte (like Python's surrogateescape) so that it re-encodes
// to the same byte.
uint32_t decode(std::string_view s, size_t& i);
void append(std::string& out, uint32_t cp);
std::vector<uint32_t> code_points(std::string_view s);
std::string encode(const std::vector<uint32_t>& cps, size_t begin, size_t end);

bool is_ascii(std::string_view s);
size_t length(std::string_view s);  // number of code points

bool is_space(uint32_t cp);  // Python str.isspace() for one character
bool is_cased(uint32_t cp);
bool is_alpha(uint32_t cp);
bool is_decimal(uint32_t cp);  // ASCII digits only (enough for templates)
bool is_lower_char(uint32_t cp);
bool is_upper_char(uint32_t cp);
bool is_title_char(uint32_t cp);

std::string upper(std::string_view s);       // str.upper()
std::string lower(std::string_view s);       // str.lower()
std::string title(std::string_view s);       // str.title()
std::string capitalize(std::string_view s);  // str.capitalize()
std::string swapcase(std::string_view s);    // str.swapcase()
std::string casefold(std::string_view s);    // str.casefold()
void append_upper(std::string& out, uint32_t cp);
void append_lower(std::string& out, uint32_t cp);
void append_title(std::string& out, uint32_t cp);

// Python str.strip()/lstrip()/rstrip() without arguments (whitespace), or with a set of chars.
std::string_view strip(std::string_view s, bool left, bool right);
std::string strip_chars(std::string_view s, std::string_view chars, bool left, bool right);

}  // namespace gt::jinja::uni
