// Bounds on one render, so that a hostile or broken template fails with a RenderError (reported
// as gt::Error "<origin>:<line>: ...") instead of hanging, exhausting memory or overflowing the
// stack. The defaults are far above anything a real chat template reaches: its output grows with
// the conversation (a 128k-token conversation renders to about 1 MB), its loops run over the
// messages, their parts and the tool schemas.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gt::jinja {

struct Limits {
  size_t max_string = size_t(64) << 20;  // bytes of any string the template builds, the output included
  size_t max_items = size_t(1) << 20;    // items of a list the template builds (*, +, range, str iteration...)
  uint64_t max_steps = 50'000'000;       // loop iterations plus macro and function calls, per render
  int max_nesting = 512;  // nesting of lists/dicts/namespaces that str(), tojson, ==, <, from_json walk
};

// The limits of the render running on this thread (the defaults outside a render).
const Limits& limits();

// Installs `l` as this thread's limits while it lives (render() holds one), and starts a fresh
// step count.
class LimitsScope {
 public:
  explicit LimitsScope(const Limits& l);
  ~LimitsScope();
  LimitsScope(const LimitsScope&) = delete;
  LimitsScope& operator=(const LimitsScope&) = delete;

 private:
  const Limits* saved_;
  uint64_t saved_steps_;
};

// Counts n steps of work (a loop iteration, a call, an item visited by iteration, a comparison
// made by `in` or unique()); raises when the render has done more than Limits::max_steps.
void charge(uint64_t n);

// Raise RenderError when a string of n bytes, or a list of n items, would pass the limits.
// `what` names the operation ("string repetition", "center()", ...).
void check_string_size(size_t n, const char* what);
void check_items(size_t n, const char* what);
// The same for a width or count given as a (possibly negative or huge) integer.
void check_width(int64_t n, const char* what);

// Counts the nesting of a recursive walk over a value (Python's RecursionError).
class NestGuard {
 public:
  explicit NestGuard(const char* what);
  ~NestGuard() { --depth_; }
  NestGuard(const NestGuard&) = delete;
  NestGuard& operator=(const NestGuard&) = delete;

 private:
  static thread_local int depth_;
};

}  // namespace gt::jinja
