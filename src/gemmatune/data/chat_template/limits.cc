#include "gemmatune/data/chat_template/limits.h"

#include <string>

#include "gemmatune/data/chat_template/value.h"

namespace gt::jinja {

namespace {
const Limits kDefaults;
thread_local const Limits* t_limits = nullptr;
thread_local uint64_t t_steps = 0;
}  // namespace

thread_local int NestGuard::depth_ = 0;

const Limits& limits() { return t_limits ? *t_limits : kDefaults; }

LimitsScope::LimitsScope(const Limits& l) : saved_(t_limits), saved_steps_(t_steps) {
  t_limits = &l;
  t_steps = 0;
}
LimitsScope::~LimitsScope() {
  t_limits = saved_;
  t_steps = saved_steps_;
}

void charge(uint64_t n) {
  t_steps += n;
  if (t_steps > limits().max_steps)
    raise("the template ran more than " + std::to_string(limits().max_steps) +
          " steps (loop iterations, calls, items iterated); is it looping forever?");
}

void check_string_size(size_t n, const char* what) {
  const size_t max = limits().max_string;
  if (n > max)
    raise(std::string(what) + ": the result would be " + std::to_string(n) + " bytes, more than the limit of " +
          std::to_string(max) + " bytes for a string");
}

void check_items(size_t n, const char* what) {
  const size_t max = limits().max_items;
  if (n > max)
    raise(std::string(what) + ": the result would have " + std::to_string(n) + " items, more than the limit of " +
          std::to_string(max) + " items for a list");
}

void check_width(int64_t n, const char* what) {
  if (n > 0) check_string_size(static_cast<size_t>(n), what);
}

NestGuard::NestGuard(const char* what) {
  if (depth_ >= limits().max_nesting)
    raise(std::string("maximum recursion depth exceeded in ") + what + " (values nested more than " +
          std::to_string(limits().max_nesting) + " deep)");
  ++depth_;
}

}  // namespace gt::jinja
