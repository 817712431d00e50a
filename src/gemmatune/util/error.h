// One exception type for every user-facing failure. The message names the file, tensor or line
// and says what was expected and what was found; the CLI prints it and exits non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace gt {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... R>
void append(std::ostringstream& os, T&& first, R&&... rest) {
  os << std::forward<T>(first);
  append(os, std::forward<R>(rest)...);
}
}  // namespace detail

// Builds a message from any streamable pieces: gt::fail("file ", path, ": expected ", a, ", found ", b).
template <class... A>
[[noreturn]] void fail(A&&... parts) {
  std::ostringstream os;
  detail::append(os, std::forward<A>(parts)...);
  throw Error(os.str());
}

template <class... A>
std::string str(A&&... parts) {
  std::ostringstream os;
  detail::append(os, std::forward<A>(parts)...);
  return os.str();
}

}  // namespace gt

#define GT_CHECK(cond, ...)              \
  do {                                   \
    if (!(cond)) ::gt::fail(__VA_ARGS__); \
  } while (0)
