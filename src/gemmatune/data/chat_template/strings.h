// Python string operations used by filters and str methods: split, replace, find, splitlines,
// printf-style `%` formatting and str.format().
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "gemmatune/data/chat_template/value.h"

namespace gt::jinja {

class Interp;

std::vector<std::string> py_split(std::string_view s, const Value& sep, int64_t maxsplit);
std::vector<std::string> py_rsplit(std::string_view s, const Value& sep, int64_t maxsplit);
std::vector<std::string> py_splitlines(std::string_view s, bool keepends);
std::string py_replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);
// Code-point index of the first/last occurrence of sub in s[start:end], or -1.
int64_t py_find(std::string_view s, std::string_view sub, const Value& start, const Value& end, bool reverse);
int64_t py_count(std::string_view s, std::string_view sub, const Value& start, const Value& end);
std::string py_percent_format(const std::string& fmt, const Value& args);  // fmt % args
std::string py_str_format(Interp& in, const std::string& fmt, const std::vector<Value>& args,
                          const std::vector<std::pair<std::string, Value>>& kwargs);    // fmt.format(...)
std::string pad(std::string_view s, int64_t width, char align, std::string_view fill);  // '<' '>' '^'

// Python float(str) / int(str, base); false when the string is not a valid literal.
bool parse_py_float(std::string_view s, double* out);
bool parse_py_int(std::string_view s, int base, int64_t* out);

}  // namespace gt::jinja
