// Internal helpers shared by the builtin operators, methods, filters and tests.
#pragma once
#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "gemmatune/data/chat_template/ast.h"
#include "gemmatune/data/chat_template/value.h"

namespace gt::jinja {

// Binds call arguments to a builtin's named parameters.
class Params {
 public:
  Params(const Args& a, const char* fn, std::initializer_list<const char*> names) : a_(a), names_(names) {
    if (a.pos.size() > names_.size())
      raise(std::string(fn) + "() takes at most " + std::to_string(names_.size()) + " argument(s) (" +
            std::to_string(a.pos.size()) + " given)");
    for (const auto& kv : a.kw) {
      auto it = std::find_if(names_.begin(), names_.end(), [&](const char* n) { return kv.first == n; });
      if (it == names_.end()) raise(std::string(fn) + "() got an unexpected keyword argument '" + kv.first + "'");
      if (static_cast<size_t>(it - names_.begin()) < a.pos.size())
        raise(std::string(fn) + "() got multiple values for argument '" + kv.first + "'");
    }
  }
  const Value* get(size_t i) const {
    if (i < a_.pos.size()) return &a_.pos[i];
    for (const auto& kv : a_.kw)
      if (kv.first == names_[i]) return &kv.second;
    return nullptr;
  }
  Value get(size_t i, Value def) const {
    const Value* v = get(i);
    return v ? *v : def;
  }
  bool flag(size_t i, bool def) const {
    const Value* v = get(i);
    return v ? truthy(*v) : def;
  }

 private:
  const Args& a_;
  std::vector<const char*> names_;
};

int64_t want_int(const Value& v, const char* what);             // an int (or bool) argument
const std::string& want_str(const Value& v, const char* what);  // a str argument
Value str_list(std::vector<std::string> parts);                 // list of str
bool py_islower(const std::string& s);                          // str.islower()
bool py_isupper(const std::string& s);                          // str.isupper()

}  // namespace gt::jinja
