#include "gemmatune/data/chat_template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "gemmatune/data/chat_template/limits.h"
#include "gemmatune/data/chat_template/unicode.h"

namespace gt::jinja {

void raise(std::string message) { throw RenderError{std::move(message)}; }

Value Value::str(std::string s) {
  check_string_size(s.size(), "string");
  Value v(kString);
  v.o_ = std::make_shared<StrObj>(std::move(s));
  return v;
}

Value Value::undefined(std::string message) {
  Value v(kUndefined);
  v.o_ = std::make_shared<StrObj>(std::move(message));
  return v;
}

Value Value::list(std::vector<Value> items, bool tuple) {
  Value v(kList);
  auto l = std::make_shared<ListObj>();
  l->items = std::move(items);
  l->tuple = tuple;
  v.o_ = std::move(l);
  return v;
}

Value Value::dict() {
  Value v(kDict);
  v.o_ = std::make_shared<DictObj>();
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  using J = nlohmann::ordered_json;
  if (j.is_structured()) {
    NestGuard guard("a template variable");
    return from_json_structured(j);
  }
  switch (j.type()) {
    case J::value_t::null:
      return none();
    case J::value_t::boolean:
      return boolean(j.get<bool>());
    case J::value_t::number_integer:
      return integer(j.get<int64_t>());
    case J::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return real(static_cast<double>(u));
      return integer(static_cast<int64_t>(u));
    }
    case J::value_t::number_float:
      return real(j.get<double>());
    case J::value_t::string:
      return str(j.get<std::string>());
    default:
      return none();
  }
}

Value Value::from_json_structured(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value d = dict();
      auto& items = d.as_dict().items;
      items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) items.emplace_back(str(it.key()), from_json(it.value()));
      return d;
    }
    default:
      return none();
  }
}

// Containers free their items iteratively: a chain of lists nested a million deep (a loop can
// build one) would otherwise overflow the stack in the chain of destructors.
namespace {
thread_local std::vector<Value>* t_graveyard = nullptr;

void bury(std::vector<Value>& dead) {
  if (t_graveyard) {  // an outer container's destructor is draining: hand the items to it
    for (auto& v : dead)
      if (v.ptr()) t_graveyard->push_back(std::move(v));
    return;
  }
  std::vector<Value> grave;
  for (auto& v : dead)
    if (v.ptr()) grave.push_back(std::move(v));
  t_graveyard = &grave;
  while (!grave.empty()) {
    Value v = std::move(grave.back());
    grave.pop_back();
    // v's destructor runs here; a container it frees pushes its items onto `grave`.
  }
  t_graveyard = nullptr;
}
}  // namespace

ListObj::~ListObj() {
  if (!items.empty()) bury(items);
}

DictObj::~DictObj() {
  if (items.empty()) return;
  std::vector<Value> dead;
  dead.reserve(items.size() * 2);
  for (auto& kv : items) {
    dead.push_back(std::move(kv.first));
    dead.push_back(std::move(kv.second));
  }
  bury(dead);
}

NamespaceObj::~NamespaceObj() {
  if (attrs.empty()) return;
  std::vector<Value> dead;
  dead.reserve(attrs.size());
  for (auto& kv : attrs) dead.push_back(std::move(kv.second));
  bury(dead);
}

bool Value::is_tuple() const { return kind_ == kList && static_cast<const ListObj*>(o_.get())->tuple; }
const std::string& Value::as_str() const { return static_cast<const StrObj*>(o_.get())->s; }
const std::string& Value::undefined_message() const {
  static const std::string kEmpty = "value is undefined";
  return o_ ? static_cast<const StrObj*>(o_.get())->s : kEmpty;
}
ListObj& Value::as_list() const { return *static_cast<ListObj*>(o_.get()); }
DictObj& Value::as_dict() const { return *static_cast<DictObj*>(o_.get()); }
NamespaceObj& Value::as_namespace() const { return *static_cast<NamespaceObj*>(o_.get()); }

void Value::fail_undefined() const { raise(undefined_message()); }

const Value* DictObj::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.as_str()));
  for (const auto& kv : items)
    if (equal(kv.first, key)) return &kv.second;
  return nullptr;
}

const Value* DictObj::find(std::string_view key) const {
  for (const auto& kv : items)
    if (kv.first.is_string() && kv.first.as_str() == key) return &kv.second;
  return nullptr;
}

void DictObj::set(const Value& key, Value v) {
  for (auto& kv : items) {
    if (equal(kv.first, key)) {
      kv.second = std::move(v);
      return;
    }
  }
  items.emplace_back(key, std::move(v));
}

const Value* NamespaceObj::find(std::string_view name) const {
  for (const auto& kv : attrs)
    if (kv.first == name) return &kv.second;
  return nullptr;
}

void NamespaceObj::set(const std::string& name, Value v) {
  for (auto& kv : attrs) {
    if (kv.first == name) {
      kv.second = std::move(v);
      return;
    }
  }
  attrs.emplace_back(name, std::move(v));
}

bool truthy(const Value& v) {
  switch (v.kind()) {
    case Value::kUndefined:
    case Value::kNone:
      return false;
    case Value::kBool:
      return v.as_bool();
    case Value::kInt:
      return v.as_int() != 0;
    case Value::kFloat:
      return v.as_double() != 0.0;
    case Value::kString:
      return !v.as_str().empty();
    case Value::kList:
      return !v.as_list().items.empty();
    case Value::kDict:
      return !v.as_dict().items.empty();
    default:
      return true;
  }
}

std::string type_name(const Value& v) {
  switch (v.kind()) {
    case Value::kUndefined:
      return "Undefined";
    case Value::kNone:
      return "NoneType";
    case Value::kBool:
      return "bool";
    case Value::kInt:
      return "int";
    case Value::kFloat:
      return "float";
    case Value::kString:
      return "str";
    case Value::kList: {
      static const char* const kViews[] = {"list", "dict_items", "dict_keys", "dict_values"};
      return v.is_tuple() ? "tuple" : kViews[v.as_list().view & 3];
    }
    case Value::kDict:
      return "dict";
    case Value::kNamespace:
      return "Namespace";
    case Value::kCallable:
      return "function";
    case Value::kLoop:
      return "LoopContext";
  }
  return "object";
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string out;
  size_t p = 0;
  if (sci[0] == '-') {
    out.push_back('-');
    p = 1;
  }
  const size_t e = sci.find('e');
  std::string digits;
  for (size_t k = p; k < e; ++k)
    if (sci[k] != '.') digits.push_back(sci[k]);
  const int exp10 = std::atoi(sci.c_str() + e + 1);
  if (exp10 >= -5 + 1 && exp10 < 16) {
    const int decpt = exp10 + 1;
    const int nd = static_cast<int>(digits.size());
    if (decpt <= 0) {
      out += "0.";
      out.append(static_cast<size_t>(-decpt), '0');
      out += digits;
    } else if (decpt >= nd) {
      out += digits;
      out.append(static_cast<size_t>(decpt - nd), '0');
      out += ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(decpt));
      out.push_back('.');
      out += digits.substr(static_cast<size_t>(decpt));
    }
  } else {
    out.push_back(digits[0]);
    if (digits.size() > 1) {
      out.push_back('.');
      out += digits.substr(1);
    }
    out.push_back('e');
    out.push_back(exp10 < 0 ? '-' : '+');
    const int a = exp10 < 0 ? -exp10 : exp10;
    if (a < 10) out.push_back('0');
    out += std::to_string(a);
  }
  return out;
}

namespace {

bool printable(uint32_t c) {
  // Approximates Python's str.isprintable() for one character.
  if (c < 0x20 || c == 0x7F) return false;
  if (c < 0x7F) return true;
  if (c <= 0xA0 || c == 0xAD) return false;
  if (c == 0x1680 || c == 0x180E || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
      (c >= 0x205F && c <= 0x206F) || c == 0x3000 || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB))
    return false;
  if (c >= 0xD800 && c <= 0xDFFF) return false;
  if ((c >= 0xE000 && c <= 0xF8FF) || c >= 0xF0000) return false;
  if (c == 0x61C || c == 0x110BD || (c >= 0x1D173 && c <= 0x1D17A) || c == 0xE0001 || (c >= 0xE0020 && c <= 0xE007F))
    return false;
  if ((c & 0xFFFE) == 0xFFFE) return false;
  return true;
}

void hex_escape(std::string& out, const char* prefix, uint32_t c, int width) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%s%0*x", prefix, width, c);
  out += buf;
}

}  // namespace

std::string repr_string(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char q = (has_single && !has_double) ? '"' : '\'';
  std::string out;
  out.push_back(q);
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = uni::decode(s, i);
    if (c == static_cast<uint32_t>(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c >= 0xDC80 && c <= 0xDCFF) {
      hex_escape(out, "\\u", c, 4);
    } else if (printable(c)) {
      uni::append(out, c);
    } else if (c < 0x100) {
      hex_escape(out, "\\x", c, 2);
    } else if (c < 0x10000) {
      hex_escape(out, "\\u", c, 4);
    } else {
      hex_escape(out, "\\U", c, 8);
    }
  }
  out.push_back(q);
  return out;
}

namespace {

void append_repr(std::string& out, const Value& v);

void append_seq(std::string& out, const Value& v) {
  NestGuard guard("str()");
  const ListObj& l = v.as_list();
  if (l.view) out += type_name(v) + "(";
  out.push_back(l.tuple ? '(' : '[');
  for (size_t k = 0; k < l.items.size(); ++k) {
    if (k) out += ", ";
    append_repr(out, l.items[k]);
    check_string_size(out.size(), "str()");
  }
  if (l.tuple && l.items.size() == 1) out.push_back(',');
  out.push_back(l.tuple ? ')' : ']');
  if (l.view) out.push_back(')');
}

void append_dict(std::string& out, const Value& v) {
  NestGuard guard("str()");
  out.push_back('{');
  bool first = true;
  for (const auto& kv : v.as_dict().items) {
    if (!first) out += ", ";
    first = false;
    append_repr(out, kv.first);
    out += ": ";
    append_repr(out, kv.second);
    check_string_size(out.size(), "str()");
  }
  out.push_back('}');
}

void append_repr(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::kUndefined:
      out += "Undefined";
      return;
    case Value::kString:
      out += repr_string(v.as_str());
      return;
    default:
      append_str(out, v);
  }
}

}  // namespace

void append_str(std::string& out, const Value& v) {
  switch (v.kind()) {
    case Value::kUndefined:
      return;
    case Value::kNone:
      out += "None";
      return;
    case Value::kBool:
      out += v.as_bool() ? "True" : "False";
      return;
    case Value::kInt: {
      char buf[32];
      auto r = std::to_chars(buf, buf + sizeof(buf), v.as_int());
      out.append(buf, r.ptr);
      return;
    }
    case Value::kFloat:
      out += float_repr(v.as_double());
      return;
    case Value::kString:
      out += v.as_str();
      return;
    case Value::kList:
      append_seq(out, v);
      return;
    case Value::kDict:
      append_dict(out, v);
      return;
    case Value::kNamespace: {
      NestGuard guard("str()");
      out += "<Namespace {";
      bool first = true;
      for (const auto& kv : v.as_namespace().attrs) {
        if (!first) out += ", ";
        first = false;
        out += repr_string(kv.first);
        out += ": ";
        append_repr(out, kv.second);
        check_string_size(out.size(), "str()");
      }
      out += "}>";
      return;
    }
    default:
      out += v.ptr() ? v.ptr()->repr() : std::string("<object>");
  }
}

std::string to_str(const Value& v) {
  if (v.is_string()) return v.as_str();
  std::string out;
  append_str(out, v);
  return out;
}

std::string repr(const Value& v) {
  std::string out;
  append_repr(out, v);
  return out;
}

bool equal(const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::kNone:
      return true;
    case Value::kString:
      return a.as_str() == b.as_str();
    case Value::kList: {
      NestGuard guard("==");
      const ListObj& x = a.as_list();
      const ListObj& y = b.as_list();
      if (x.tuple != y.tuple || x.items.size() != y.items.size()) return false;
      for (size_t k = 0; k < x.items.size(); ++k)
        if (!equal(x.items[k], y.items[k])) return false;
      return true;
    }
    case Value::kDict: {
      NestGuard guard("==");
      const DictObj& x = a.as_dict();
      const DictObj& y = b.as_dict();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& kv : x.items) {
        const Value* o = y.find(kv.first);
        if (!o || !equal(kv.second, *o)) return false;
      }
      return true;
    }
    default:
      return a.ptr() == b.ptr();
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  if (a.is_string() && b.is_string()) return a.as_str() < b.as_str();  // UTF-8 order = code point order
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    NestGuard guard("<");
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      if (!equal(x[k], y[k])) return less(x[k], y[k]);
    }
    return x.size() < y.size();
  }
  raise("'<' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
}

bool hashable(const Value& v) {
  switch (v.kind()) {
    case Value::kList: {
      if (!v.is_tuple()) return false;
      NestGuard guard("hash()");
      for (const auto& x : v.as_list().items)
        if (!hashable(x)) return false;
      return true;
    }
    case Value::kDict:
      return false;
    default:
      return true;
  }
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::kUndefined:
      return {};
    case Value::kList:
      charge(v.as_list().items.size());
      return v.as_list().items;
    case Value::kDict: {
      charge(v.as_dict().items.size());
      std::vector<Value> keys;
      keys.reserve(v.as_dict().items.size());
      for (const auto& kv : v.as_dict().items) keys.push_back(kv.first);
      return keys;
    }
    case Value::kString: {
      std::vector<Value> chars;
      const std::string& s = v.as_str();
      check_items(s.size(), "iterating over a string");  // bytes bound the characters
      charge(s.size());
      chars.reserve(s.size());
      for (size_t i = 0; i < s.size();) {
        const size_t b = i;
        uni::decode(s, i);
        chars.push_back(Value::str(s.substr(b, i - b)));
      }
      return chars;
    }
    default:
      raise("'" + type_name(v) + "' object is not iterable");
  }
}

int64_t py_len(const Value& v) {
  switch (v.kind()) {
    case Value::kUndefined:
      return 0;
    case Value::kString:
      return static_cast<int64_t>(uni::length(v.as_str()));
    case Value::kList:
      return static_cast<int64_t>(v.as_list().items.size());
    case Value::kDict:
      return static_cast<int64_t>(v.as_dict().items.size());
    default:
      raise("object of type '" + type_name(v) + "' has no len()");
  }
}

namespace {

void json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x80) {
      const size_t st = i;
      const uint32_t c = uni::decode(s, i);
      if (!ensure_ascii) {
        out.append(s.substr(st, i - st));
      } else if (c < 0x10000) {
        hex_escape(out, "\\u", c, 4);
      } else {
        const uint32_t v = c - 0x10000;
        hex_escape(out, "\\u", 0xD800 + (v >> 10), 4);
        hex_escape(out, "\\u", 0xDC00 + (v & 0x3FF), 4);
      }
      continue;
    }
    ++i;
    switch (b) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (b < 0x20 || (ensure_ascii && b == 0x7F)) {
          if (b == 0x7F && !ensure_ascii) {
            out.push_back(static_cast<char>(b));
          } else {
            hex_escape(out, "\\u", b, 4);
          }
        } else {
          out.push_back(static_cast<char>(b));
        }
    }
  }
  out.push_back('"');
}

std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  return float_repr(d);
}

void json_dump(std::string& out, const Value& v, const JsonOptions& opt, int level) {
  check_string_size(out.size(), "tojson");
  switch (v.kind()) {
    case Value::kNone:
      out += "null";
      return;
    case Value::kBool:
      out += v.as_bool() ? "true" : "false";
      return;
    case Value::kInt:
      out += std::to_string(v.as_int());
      return;
    case Value::kFloat:
      out += json_float(v.as_double());
      return;
    case Value::kString:
      json_string(out, v.as_str(), opt.ensure_ascii);
      return;
    case Value::kList: {
      NestGuard guard("tojson");
      if (v.as_list().view) raise("Object of type " + type_name(v) + " is not JSON serializable");
      const auto& items = v.as_list().items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      std::string nl;
      if (opt.has_indent) {
        check_string_size(opt.indent.size() * static_cast<size_t>(level + 1), "tojson indent");
        nl = "\n";
        for (int k = 0; k <= level; ++k) nl += opt.indent;
        out += nl;
      }
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) {
          out += opt.item_sep;
          out += nl;
        }
        json_dump(out, items[k], opt, level + 1);
      }
      if (opt.has_indent) {
        out.push_back('\n');
        for (int k = 0; k < level; ++k) out += opt.indent;
      }
      out.push_back(']');
      return;
    }
    case Value::kDict: {
      NestGuard guard("tojson");
      std::vector<std::pair<Value, Value>> items = v.as_dict().items;
      if (items.empty()) {
        out += "{}";
        return;
      }
      if (opt.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](const auto& a, const auto& b) { return less(a.first, b.first); });
      }
      out.push_back('{');
      std::string nl;
      if (opt.has_indent) {
        check_string_size(opt.indent.size() * static_cast<size_t>(level + 1), "tojson indent");
        nl = "\n";
        for (int k = 0; k <= level; ++k) nl += opt.indent;
        out += nl;
      }
      bool first = true;
      for (const auto& kv : items) {
        if (!first) {
          out += opt.item_sep;
          out += nl;
        }
        first = false;
        const Value& key = kv.first;
        switch (key.kind()) {
          case Value::kString:
            json_string(out, key.as_str(), opt.ensure_ascii);
            break;
          case Value::kNone:
            out += "\"null\"";
            break;
          case Value::kBool:
            out += key.as_bool() ? "\"true\"" : "\"false\"";
            break;
          case Value::kInt:
            out += "\"" + std::to_string(key.as_int()) + "\"";
            break;
          case Value::kFloat:
            out += "\"" + json_float(key.as_double()) + "\"";
            break;
          default:
            raise("keys must be str, int, float, bool or None, not " + type_name(key));
        }
        out += opt.key_sep;
        json_dump(out, kv.second, opt, level + 1);
      }
      if (opt.has_indent) {
        out.push_back('\n');
        for (int k = 0; k < level; ++k) out += opt.indent;
      }
      out.push_back('}');
      return;
    }
    default:
      raise("Object of type " + type_name(v) + " is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const Value& v, const JsonOptions& opt) {
  std::string out;
  json_dump(out, v, opt, 0);
  return out;
}

}  // namespace gt::jinja
