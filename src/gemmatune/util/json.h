// Parsing JSON files that come from outside (model folders, adapters, safetensors headers) with a
// nesting limit. nlohmann::json parses iteratively, but prints (error messages quote values),
// copies and compares recursively: a file of a million '[' would overflow the stack the first time
// a value of it is quoted. Real model files nest at most a handful of levels.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "gemmatune/util/error.h"

namespace gt {

inline constexpr int kMaxJsonNesting = 64;

// Parses `text`; gt::Error "<origin>: not valid JSON: ..." on a syntax error, "<origin>: JSON nested
// more than 64 levels deep" past the limit.
template <class Json = nlohmann::json>
Json parse_json_file(std::string_view text, const std::string& origin, int max_nesting = kMaxJsonNesting) {
  struct TooDeep {};
  typename Json::parser_callback_t limit = [max_nesting](int depth, typename Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= max_nesting)
      throw TooDeep{};
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), limit);
  } catch (const TooDeep&) {
    fail(origin, ": JSON nested more than ", max_nesting, " levels deep");
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": not valid JSON: ", e.what());
  }
}

}  // namespace gt
