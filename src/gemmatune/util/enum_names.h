// String <-> enum for options and file fields, in one place: each enum lists its names once (a
// table next to the enum), and parsing an unknown name fails with the list of allowed values.
#pragma once
#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "gemmatune/util/error.h"

namespace gt {

template <class E>
struct EnumName {
  E value;
  std::string_view name;
};

// "a | b | c": the allowed values, for help texts and error messages.
template <class E, std::size_t N>
std::string enum_choices(const std::array<EnumName<E>, N>& names) {
  std::string s;
  for (const auto& n : names) {
    if (!s.empty()) s += " | ";
    s += n.name;
  }
  return s;
}

// The value named `text`; otherwise gt::Error "<what>: unknown value 'x' (allowed: a | b | c)".
template <class E, std::size_t N>
E parse_enum(const std::array<EnumName<E>, N>& names, std::string_view text, std::string_view what) {
  for (const auto& n : names)
    if (n.name == text) return n.value;
  fail(what, ": unknown value '", text, "' (allowed: ", enum_choices(names), ")");
}

template <class E, std::size_t N>
std::string_view enum_name(const std::array<EnumName<E>, N>& names, E value) {
  for (const auto& n : names)
    if (n.value == value) return n.name;
  return "?";
}

}  // namespace gt
