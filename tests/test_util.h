// Shared helpers for tests: paths to the bundled data and golden comparisons.
#pragma once
#include <string>

namespace gt::test {

inline std::string data(const std::string& rel) { return std::string(GEMMATUNE_TEST_DATA) + "/" + rel; }
inline std::string unpacked(const std::string& rel) { return std::string(GEMMATUNE_TEST_DATA_UNPACKED) + "/" + rel; }
inline std::string fixture(const std::string& name) { return data("fixtures/" + name); }
inline std::string binary() { return GEMMATUNE_BINARY; }

}  // namespace gt::test
