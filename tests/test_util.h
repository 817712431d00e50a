// Shared helpers for tests: paths to the bundled data and golden comparisons.
#pragma once
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <string>

#include "gemmatune/util/error.h"

namespace gt::test {

// (built with append: GCC 12 misreports `literal + "/" + s` chains under -O3 as out of bounds)
inline std::string join(const char* root, const std::string& rel) {
  std::string p(root);
  p += '/';
  p += rel;
  return p;
}
inline std::string data(const std::string& rel) { return join(GEMMATUNE_TEST_DATA, rel); }
inline std::string unpacked(const std::string& rel) { return join(GEMMATUNE_TEST_DATA_UNPACKED, rel); }
inline std::string fixture(const std::string& name) { return data("fixtures/" + name); }
inline std::string binary() { return GEMMATUNE_BINARY; }

// The message of the gt::Error that `f` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
// A scratch path private to this test process (ctest runs test processes in parallel). The folder
// is removed when the process exits, unless GEMMATUNE_KEEP_TEST_FILES is set (for debugging).
inline std::string scratch(const std::string& name) {
  static const std::string root = [] {
    const char* t = std::getenv("TMPDIR");
    std::string r = t && *t ? t : "/tmp";
    r += "/gemmatune-test-";
    r += std::to_string(::getpid());
    std::system(("mkdir -p '" + r + "'").c_str());
    return r;
  }();
  static const bool cleanup_registered = [] {
    if (!std::getenv("GEMMATUNE_KEEP_TEST_FILES"))
      std::atexit([] {
        // Only the process that made the folder removes it (a forked child exits through _exit).
        std::system(("rm -rf '" + root + "'").c_str());
      });
    return true;
  }();
  (void)cleanup_registered;
  return join(root.c_str(), name);
}

}  // namespace gt::test
