// Operators, str/dict/list methods, loop attributes and globals, with the semantics of
// jinja2 3.1 in transformers' ImmutableSandboxedEnvironment (mutating list/dict methods are
// refused like the sandbox does). Filters and tests are in filters.cc.
#include "gemmatune/data/chat_template/builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "gemmatune/data/chat_template/interp.h"
#include "gemmatune/data/chat_template/limits.h"
#include "gemmatune/data/chat_template/strings.h"
#include "gemmatune/data/chat_template/unicode.h"

namespace gt::jinja {

int64_t want_int(const Value& v, const char* what) {
  if (v.is_integral()) return v.as_int();
  if (v.is_undefined()) v.fail_undefined();
  raise(std::string("'") + type_name(v) + "' object cannot be interpreted as an integer" +
        (what[0] ? std::string(" (") + what + ")" : ""));
}

const std::string& want_str(const Value& v, const char* what) {
  if (v.is_string()) return v.as_str();
  if (v.is_undefined()) v.fail_undefined();
  raise(std::string(what) + " must be str, not " + type_name(v));
}

Value str_list(std::vector<std::string> parts) {
  std::vector<Value> out;
  out.reserve(parts.size());
  for (auto& p : parts) out.push_back(Value::str(std::move(p)));
  return Value::list(std::move(out));
}

bool py_islower(const std::string& s) {
  bool cased = false;
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = uni::decode(s, i);
    if (uni::is_upper_char(c) || uni::is_title_char(c)) return false;
    if (uni::is_lower_char(c)) cased = true;
  }
  return cased;
}

bool py_isupper(const std::string& s) {
  bool cased = false;
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = uni::decode(s, i);
    if (uni::is_lower_char(c) || uni::is_title_char(c)) return false;
    if (uni::is_upper_char(c)) cased = true;
  }
  return cased;
}

namespace {

// ------------------------------------------------------------------------ operators

bool checked_add(int64_t a, int64_t b, int64_t* r) { return !__builtin_add_overflow(a, b, r); }
bool checked_sub(int64_t a, int64_t b, int64_t* r) { return !__builtin_sub_overflow(a, b, r); }
bool checked_mul(int64_t a, int64_t b, int64_t* r) { return !__builtin_mul_overflow(a, b, r); }

[[noreturn]] void unsupported(const char* op, const Value& a, const Value& b) {
  raise(std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
}

Value repeat(const Value& seq, int64_t n) {
  if (seq.is_string()) {
    const std::string& s = seq.as_str();
    std::string out;
    if (n <= 0 || s.empty()) return Value::str(std::move(out));
    if (static_cast<uint64_t>(n) > limits().max_string / s.size())
      raise("string repetition: the result would be " + std::to_string(s.size()) + " x " + std::to_string(n) +
            " bytes, more than the limit of " + std::to_string(limits().max_string) + " bytes for a string");
    out.reserve(s.size() * static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) out += s;
    return Value::str(std::move(out));
  }
  std::vector<Value> out;
  const size_t len = seq.as_list().items.size();
  if (n > 0 && len > 0) {
    if (static_cast<uint64_t>(n) > limits().max_items / len)
      raise("list repetition: the result would have " + std::to_string(len) + " x " + std::to_string(n) +
            " items, more than the limit of " + std::to_string(limits().max_items) + " items for a list");
    out.reserve(len * static_cast<size_t>(n));
  }
  for (int64_t k = 0; k < n; ++k)
    for (const auto& x : seq.as_list().items) out.push_back(x);
  return Value::list(std::move(out), seq.is_tuple());
}

}  // namespace

void check_orderable(const Value& a, const Value& b, const char* op) {
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
  if (a.is_number() && b.is_number()) return;
  if (a.is_string() && b.is_string()) return;
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) return;
  raise(std::string("'") + op + "' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) +
        "'");
}

Value binary_op(BinOp op, const Value& a, const Value& b) {
  if (op == BinOp::Mod && a.is_string()) {
    return Value::str(py_percent_format(a.as_str(), b));
  }
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
  const bool nums = a.is_number() && b.is_number();
  const bool ints = a.is_integral() && b.is_integral();
  switch (op) {
    case BinOp::Add:
      if (ints) {
        int64_t r;
        if (!checked_add(a.as_int(), b.as_int(), &r)) raise("integer overflow");
        return Value::integer(r);
      }
      if (nums) return Value::real(a.as_double() + b.as_double());
      if (a.is_string() && b.is_string()) return Value::str(a.as_str() + b.as_str());
      if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
        check_items(a.as_list().items.size() + b.as_list().items.size(), "list concatenation");
        std::vector<Value> out = a.as_list().items;
        out.insert(out.end(), b.as_list().items.begin(), b.as_list().items.end());
        return Value::list(std::move(out), a.is_tuple());
      }
      if (a.is_string()) raise("can only concatenate str (not \"" + type_name(b) + "\") to str");
      if (a.is_list())
        raise("can only concatenate " + type_name(a) + " (not \"" + type_name(b) + "\") to " + type_name(a));
      unsupported("+", a, b);
    case BinOp::Sub:
      if (ints) {
        int64_t r;
        if (!checked_sub(a.as_int(), b.as_int(), &r)) raise("integer overflow");
        return Value::integer(r);
      }
      if (nums) return Value::real(a.as_double() - b.as_double());
      unsupported("-", a, b);
    case BinOp::Mul:
      if (ints) {
        int64_t r;
        if (!checked_mul(a.as_int(), b.as_int(), &r)) raise("integer overflow");
        return Value::integer(r);
      }
      if (nums) return Value::real(a.as_double() * b.as_double());
      if ((a.is_string() || a.is_list()) && b.is_integral()) return repeat(a, b.as_int());
      if ((b.is_string() || b.is_list()) && a.is_integral()) return repeat(b, a.as_int());
      if (a.is_string() || a.is_list() || b.is_string() || b.is_list())
        raise("can't multiply sequence by non-int of type '" + type_name(a.is_string() || a.is_list() ? b : a) + "'");
      unsupported("*", a, b);
    case BinOp::Div:
      if (!nums) unsupported("/", a, b);
      if (b.as_double() == 0.0) raise("division by zero");
      return Value::real(a.as_double() / b.as_double());
    case BinOp::FloorDiv:
      if (!nums) unsupported("//", a, b);
      if (ints) {
        const int64_t x = a.as_int(), y = b.as_int();
        if (y == 0) raise("integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) raise("integer overflow");
        int64_t q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
        return Value::integer(q);
      }
      if (b.as_double() == 0.0) raise("float floor division by zero");
      return Value::real(std::floor(a.as_double() / b.as_double()));
    case BinOp::Mod:
      if (!nums) unsupported("%", a, b);
      if (ints) {
        const int64_t x = a.as_int(), y = b.as_int();
        if (y == 0) raise("integer modulo by zero");
        if (y == -1) return Value::integer(0);  // also INT64_MIN % -1, which traps in C++
        int64_t r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        return Value::integer(r);
      } else {
        const double x = a.as_double(), y = b.as_double();
        if (y == 0.0) raise("float modulo");
        double r = std::fmod(x, y);
        if (r != 0.0) {
          if ((r < 0) != (y < 0)) r += y;
        } else {
          r = std::copysign(0.0, y);
        }
        return Value::real(r);
      }
    case BinOp::Pow:
      if (!nums) unsupported("** or pow()", a, b);
      if (ints && b.as_int() >= 0) {
        // Square-and-multiply: 1 ** (2 ** 62) must not loop 2 ** 62 times.
        int64_t r = 1, base = a.as_int();
        for (int64_t e = b.as_int(); e > 0; e >>= 1) {
          if (e & 1)
            if (!checked_mul(r, base, &r)) raise("integer overflow");
          if (e > 1 && !checked_mul(base, base, &base)) {
            if (r == 0) break;
            raise("integer overflow");
          }
        }
        return Value::integer(r);
      }
      if (a.as_double() == 0.0 && b.as_double() < 0) raise("0.0 cannot be raised to a negative power");
      return Value::real(std::pow(a.as_double(), b.as_double()));
  }
  return Value();
}

Value unary_minus(const Value& v) {
  if (v.is_undefined()) v.fail_undefined();
  if (v.is_integral()) {
    if (v.as_int() == INT64_MIN) raise("integer overflow");
    return Value::integer(-v.as_int());
  }
  if (v.is_float()) return Value::real(-v.as_double());
  raise("bad operand type for unary -: '" + type_name(v) + "'");
}

Value unary_plus(const Value& v) {
  if (v.is_undefined()) v.fail_undefined();
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.is_float()) return v;
  raise("bad operand type for unary +: '" + type_name(v) + "'");
}

bool contains(const Value& c, const Value& item) {
  switch (c.kind()) {
    case Value::kUndefined:
      return false;
    case Value::kString:
      if (!item.is_string()) {
        if (item.is_undefined()) item.fail_undefined();
        raise("'in <string>' requires string as left operand, not " + type_name(item));
      }
      return c.as_str().find(item.as_str()) != std::string::npos;
    case Value::kList:
      charge(c.as_list().items.size());
      for (const auto& x : c.as_list().items)
        if (equal(x, item)) return true;
      return false;
    case Value::kDict:
      if (!hashable(item)) raise("unhashable type: '" + type_name(item) + "'");
      return c.as_dict().find(item) != nullptr;
    default:
      raise("argument of type '" + type_name(c) + "' is not iterable");
  }
}

std::string object_type_repr(const Value& v) {
  switch (v.kind()) {
    case Value::kNone:
      return "None";
    case Value::kNamespace:
      return "jinja2.utils.Namespace object";
    case Value::kLoop:
      return "jinja2.runtime.LoopContext object";
    case Value::kCallable:
      return "jinja2.runtime.Macro object";
    default:
      return type_name(v) + " object";
  }
}

// ------------------------------------------------------------------------ loop

Value loop_attr(const Value& loop, const std::string& name) {
  const LoopObj& l = as_loop(loop);
  const auto n = static_cast<int64_t>(l.items->size());
  const int64_t i = l.index0;
  if (name == "index") return Value::integer(i + 1);
  if (name == "index0") return Value::integer(i);
  if (name == "revindex") return Value::integer(n - i);
  if (name == "revindex0") return Value::integer(n - i - 1);
  if (name == "first") return Value::boolean(i == 0);
  if (name == "last") return Value::boolean(i == n - 1);
  if (name == "length") return Value::integer(n);
  if (name == "depth") return Value::integer(l.depth);
  if (name == "depth0") return Value::integer(l.depth - 1);
  if (name == "previtem") {
    if (i == 0) return Value::undefined("there is no previous item");
    return (*l.items)[static_cast<size_t>(i - 1)];
  }
  if (name == "nextitem") {
    if (i + 1 >= n) return Value::undefined("there is no next item");
    return (*l.items)[static_cast<size_t>(i + 1)];
  }
  if (name == "cycle" || name == "changed")
    return Value::object(Value::kCallable, std::make_shared<BoundMethod>(loop, name));
  return Value::undefined("'jinja2.runtime.LoopContext object' has no attribute '" + name + "'");
}

// ------------------------------------------------------------------------ methods

namespace {

const char* const kStrMethods[] = {
    "capitalize",   "casefold",   "center",     "count",       "endswith",   "find",         "format",
    "format_map",   "index",      "isalnum",    "isalpha",     "isascii",    "isdecimal",    "isdigit",
    "isidentifier", "islower",    "isnumeric",  "isprintable", "isspace",    "istitle",      "isupper",
    "join",         "ljust",      "lower",      "lstrip",      "partition",  "removeprefix", "removesuffix",
    "replace",      "rfind",      "rindex",     "rjust",       "rpartition", "rsplit",       "rstrip",
    "split",        "splitlines", "startswith", "strip",       "swapcase",   "title",        "upper",
    "zfill"};
const char* const kDictMethods[] = {"copy", "get", "items", "keys", "values"};
const char* const kDictUnsafe[] = {"clear", "pop", "popitem", "setdefault", "update"};
const char* const kListMethods[] = {"copy", "count", "index"};
const char* const kListUnsafe[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"};

template <size_t N>
bool in_set(const char* const (&set)[N], const std::string& name) {
  for (const char* s : set)
    if (name == s) return true;
  return false;
}

Value bound(const Value& self, const std::string& name) {
  return Value::object(Value::kCallable, std::make_shared<BoundMethod>(self, name));
}

Value unsafe(const Value& obj, const std::string& name) {
  return Value::undefined("access to attribute '" + name + "' of '" + type_name(obj) + "' object is unsafe.");
}

bool str_pred(const std::string& s, bool (*pred)(uint32_t)) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();)
    if (!pred(uni::decode(s, i))) return false;
  return true;
}

bool py_istitle(const std::string& s) {
  bool cased = false, prev_cased = false;
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = uni::decode(s, i);
    if (uni::is_upper_char(c) || uni::is_title_char(c)) {
      if (prev_cased) return false;
      prev_cased = cased = true;
    } else if (uni::is_lower_char(c)) {
      if (!prev_cased) return false;
      prev_cased = cased = true;
    } else {
      prev_cased = false;
    }
  }
  return cased;
}

bool affix_match(const std::string& s, const Value& affix, const Value& start, const Value& end, bool suffix) {
  std::string_view w(s);
  if (!start.is_none() || !end.is_none()) {
    // Work on the code-point slice s[start:end].
    const auto cps = uni::code_points(s);
    const auto n = static_cast<int64_t>(cps.size());
    auto norm = [&](const Value& v, int64_t def) {
      if (v.is_none()) return def;
      int64_t x = want_int(v, "");
      if (x < 0) x = std::max<int64_t>(0, x + n);
      return std::min(x, n);
    };
    const int64_t b = norm(start, 0), e = norm(end, n);
    if (b > n) return false;
    static thread_local std::string tmp;
    tmp = b < e ? uni::encode(cps, static_cast<size_t>(b), static_cast<size_t>(e)) : std::string();
    w = tmp;
  }
  auto one = [&](const Value& a) {
    const std::string& p = want_str(a, suffix ? "endswith first arg" : "startswith first arg");
    if (p.size() > w.size()) return false;
    return suffix ? w.compare(w.size() - p.size(), p.size(), p) == 0 : w.compare(0, p.size(), p) == 0;
  };
  if (affix.is_tuple()) {
    for (const auto& a : affix.as_list().items)
      if (one(a)) return true;
    return false;
  }
  return one(affix);
}

Value str_method(Interp& in, const Value& self, const std::string& name, Args& args) {
  const std::string& s = self.as_str();
  if (name == "upper") return Value::str(uni::upper(s));
  if (name == "lower") return Value::str(uni::lower(s));
  if (name == "casefold") return Value::str(uni::casefold(s));
  if (name == "title") return Value::str(uni::title(s));
  if (name == "capitalize") return Value::str(uni::capitalize(s));
  if (name == "swapcase") return Value::str(uni::swapcase(s));
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    Params p(args, name.c_str(), {"chars"});
    const bool l = name != "rstrip", r = name != "lstrip";
    const Value chars = p.get(0, Value::none());
    if (chars.is_none()) return Value::str(std::string(uni::strip(s, l, r)));
    return Value::str(uni::strip_chars(s, want_str(chars, name.c_str()), l, r));
  }
  if (name == "split" || name == "rsplit") {
    Params p(args, name.c_str(), {"sep", "maxsplit"});
    const Value sep = p.get(0, Value::none());
    const int64_t maxsplit = want_int(p.get(1, Value::integer(-1)), "");
    return str_list(name == "split" ? py_split(s, sep, maxsplit) : py_rsplit(s, sep, maxsplit));
  }
  if (name == "splitlines") {
    Params p(args, name.c_str(), {"keepends"});
    return str_list(py_splitlines(s, p.flag(0, false)));
  }
  if (name == "startswith" || name == "endswith") {
    Params p(args, name.c_str(), {"prefix", "start", "end"});
    if (!p.get(0)) raise(name + "() takes at least 1 argument (0 given)");
    return Value::boolean(
        affix_match(s, *p.get(0), p.get(1, Value::none()), p.get(2, Value::none()), name == "endswith"));
  }
  if (name == "replace") {
    Params p(args, name.c_str(), {"old", "new", "count"});
    if (!p.get(0) || !p.get(1)) raise("replace expected at least 2 arguments");
    return Value::str(py_replace(s, want_str(*p.get(0), "replace() argument 1"),
                                 want_str(*p.get(1), "replace() argument 2"),
                                 want_int(p.get(2, Value::integer(-1)), "")));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    Params p(args, name.c_str(), {"sub", "start", "end"});
    if (!p.get(0)) raise(name + "() takes at least 1 argument (0 given)");
    const std::string& sub = want_str(*p.get(0), "must be str");
    const Value st = p.get(1, Value::none()), en = p.get(2, Value::none());
    if (name == "count") return Value::integer(py_count(s, sub, st, en));
    const int64_t r = py_find(s, sub, st, en, name[0] == 'r');
    if (r < 0 && (name == "index" || name == "rindex")) raise("substring not found");
    return Value::integer(r);
  }
  if (name == "join") {
    Params p(args, name.c_str(), {"iterable"});
    if (!p.get(0)) raise("join() takes exactly one argument (0 given)");
    std::string out;
    size_t k = 0;
    for (const auto& x : iterate(*p.get(0))) {
      if (!x.is_string())
        raise("sequence item " + std::to_string(k) + ": expected str instance, " + type_name(x) + " found");
      if (k++) out += s;
      out += x.as_str();
      check_string_size(out.size(), "join()");
    }
    return Value::str(std::move(out));
  }
  if (name == "format") return Value::str(py_str_format(in, s, args.pos, args.kw));
  if (name == "format_map") {
    if (args.pos.size() != 1 || !args.pos[0].is_dict()) raise("format_map() takes exactly one mapping argument");
    std::vector<std::pair<std::string, Value>> kw;
    for (const auto& kv : args.pos[0].as_dict().items)
      if (kv.first.is_string()) kw.emplace_back(kv.first.as_str(), kv.second);
    return Value::str(py_str_format(in, s, {}, kw));
  }
  if (name == "center" || name == "ljust" || name == "rjust") {
    Params p(args, name.c_str(), {"width", "fillchar"});
    const int64_t w = want_int(p.get(0, Value::integer(0)), "");
    const std::string fill = p.get(1) ? want_str(*p.get(1), "fillchar") : std::string(" ");
    if (name == "center") {
      // CPython: left = pad // 2 + (pad & width & 1)
      const auto len = static_cast<int64_t>(uni::length(s));
      if (w <= len) return self;
      check_width(w, "center()");
      check_string_size(static_cast<size_t>(w) * std::max<size_t>(fill.size(), 1), "center()");
      const int64_t total = w - len;
      const int64_t left = total / 2 + (total & w & 1);
      std::string out;
      for (int64_t k = 0; k < left; ++k) out += fill;
      out += s;
      for (int64_t k = 0; k < total - left; ++k) out += fill;
      return Value::str(std::move(out));
    }
    return Value::str(pad(s, w, name == "ljust" ? '<' : '>', fill));
  }
  if (name == "zfill") {
    Params p(args, name.c_str(), {"width"});
    const int64_t w = want_int(p.get(0, Value::integer(0)), "");
    const auto len = static_cast<int64_t>(uni::length(s));
    if (w <= len) return self;
    check_width(w, "zfill()");
    std::string out;
    size_t b = 0;
    if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
      out.push_back(s[0]);
      b = 1;
    }
    out.append(static_cast<size_t>(w - len), '0');
    out.append(s.substr(b));
    return Value::str(std::move(out));
  }
  if (name == "partition" || name == "rpartition") {
    Params p(args, name.c_str(), {"sep"});
    const std::string& sep = want_str(p.get(0, Value::none()), "must be str");
    if (sep.empty()) raise("empty separator");
    const size_t k = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (k == std::string::npos) {
      if (name == "partition") return Value::tuple({self, Value::str(""), Value::str("")});
      return Value::tuple({Value::str(""), Value::str(""), self});
    }
    return Value::tuple({Value::str(s.substr(0, k)), Value::str(sep), Value::str(s.substr(k + sep.size()))});
  }
  if (name == "removeprefix" || name == "removesuffix") {
    Params p(args, name.c_str(), {"affix"});
    const std::string& a = want_str(p.get(0, Value::none()), "must be str");
    if (name == "removeprefix" && s.compare(0, a.size(), a) == 0) return Value::str(s.substr(a.size()));
    if (name == "removesuffix" && !a.empty() && s.size() >= a.size() &&
        s.compare(s.size() - a.size(), a.size(), a) == 0)
      return Value::str(s.substr(0, s.size() - a.size()));
    return self;
  }
  if (name == "isdigit" || name == "isdecimal" || name == "isnumeric")
    return Value::boolean(str_pred(s, uni::is_decimal));
  if (name == "isalpha") return Value::boolean(str_pred(s, uni::is_alpha));
  if (name == "isalnum")
    return Value::boolean(str_pred(s, [](uint32_t c) { return uni::is_alpha(c) || uni::is_decimal(c); }));
  if (name == "isspace") return Value::boolean(str_pred(s, uni::is_space));
  if (name == "isascii") return Value::boolean(uni::is_ascii(s));
  if (name == "islower") return Value::boolean(py_islower(s));
  if (name == "isupper") return Value::boolean(py_isupper(s));
  if (name == "istitle") return Value::boolean(py_istitle(s));
  if (name == "isprintable") return Value::boolean(repr_string(s).size() == s.size() + 2);
  if (name == "isidentifier") {
    if (s.empty() || uni::is_decimal(static_cast<unsigned char>(s[0]))) return Value::boolean(false);
    return Value::boolean(str_pred(s, [](uint32_t c) { return c == '_' || uni::is_alpha(c) || uni::is_decimal(c); }));
  }
  raise("'str' object has no attribute '" + name + "'");
}

Value dict_method(const Value& self, const std::string& name, Args& args) {
  const DictObj& d = self.as_dict();
  if (name == "get") {
    if (args.pos.empty() || args.pos.size() > 2 || !args.kw.empty())
      raise("get expected 1 or 2 arguments, got " + std::to_string(args.pos.size()));
    if (!hashable(args.pos[0])) raise("unhashable type: '" + type_name(args.pos[0]) + "'");
    if (const Value* v = d.find(args.pos[0])) return *v;
    return args.pos.size() > 1 ? args.pos[1] : Value::none();
  }
  if (!args.pos.empty() || !args.kw.empty()) raise(name + "() takes no arguments");
  std::vector<Value> out;
  out.reserve(d.items.size());
  uint8_t view = 0;
  if (name == "items") {
    view = 1;
    for (const auto& kv : d.items) out.push_back(Value::tuple({kv.first, kv.second}));
  } else if (name == "keys") {
    view = 2;
    for (const auto& kv : d.items) out.push_back(kv.first);
  } else if (name == "values") {
    view = 3;
    for (const auto& kv : d.items) out.push_back(kv.second);
  } else if (name == "copy") {
    Value c = Value::dict();
    c.as_dict().items = d.items;
    return c;
  } else {
    raise("'dict' object has no attribute '" + name + "'");
  }
  Value l = Value::list(std::move(out));
  l.as_list().view = view;
  return l;
}

Value list_method(const Value& self, const std::string& name, Args& args) {
  const auto& items = self.as_list().items;
  if (name == "copy") return Value::list(items, self.is_tuple());
  if (args.pos.empty()) raise(name + "() takes at least 1 argument (0 given)");
  if (name == "count") {
    int64_t n = 0;
    for (const auto& x : items) n += equal(x, args.pos[0]);
    return Value::integer(n);
  }
  if (name == "index") {
    for (size_t k = 0; k < items.size(); ++k)
      if (equal(items[k], args.pos[0])) return Value::integer(static_cast<int64_t>(k));
    raise(repr(args.pos[0]) + " is not in list");
  }
  raise("'" + type_name(self) + "' object has no attribute '" + name + "'");
}

Value loop_method(const Value& self, const std::string& name, Args& args) {
  LoopObj& l = as_loop(self);
  if (name == "cycle") {
    if (args.pos.empty()) raise("no items for cycling given");
    return args.pos[static_cast<size_t>(l.index0) % args.pos.size()];
  }
  // changed(*values): true when the values differ from the previous call's.
  if (l.have_last && l.last_changed.size() == args.pos.size()) {
    bool same = true;
    for (size_t k = 0; k < args.pos.size(); ++k) same = same && equal(l.last_changed[k], args.pos[k]);
    if (same) return Value::boolean(false);
  }
  l.last_changed = args.pos;
  l.have_last = true;
  return Value::boolean(true);
}

}  // namespace

std::optional<Value> lookup_method(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::kString:
      if (in_set(kStrMethods, name)) return bound(obj, name);
      break;
    case Value::kDict:
      if (in_set(kDictMethods, name)) return bound(obj, name);
      if (in_set(kDictUnsafe, name)) return unsafe(obj, name);
      break;
    case Value::kList:
      if (in_set(kListMethods, name) && !(obj.is_tuple() && name == "copy")) return bound(obj, name);
      if (!obj.is_tuple() && in_set(kListUnsafe, name)) return unsafe(obj, name);
      break;
    case Value::kLoop:
      return loop_attr(obj, name);
    default:
      break;
  }
  return std::nullopt;
}

Value call_method(Interp& in, const Value& self, const std::string& name, Args& args) {
  switch (self.kind()) {
    case Value::kString:
      return str_method(in, self, name, args);
    case Value::kDict:
      return dict_method(self, name, args);
    case Value::kList:
      return list_method(self, name, args);
    case Value::kLoop:
      return loop_method(self, name, args);
    default:
      raise("'" + type_name(self) + "' object has no attribute '" + name + "'");
  }
}

namespace {

// ------------------------------------------------------------------------ globals

Value g_raise_exception(Interp&, Args& a) { raise(a.pos.empty() ? std::string() : to_str(a.pos[0])); }

Value g_strftime_now(Interp&, Args& a) {
  Params p(a, "strftime_now", {"format"});
  const std::string fmt = want_str(p.get(0, Value::none()), "strftime_now() argument");
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::string buf(256 + fmt.size() * 8, '\0');
  const size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
  buf.resize(n);
  return Value::str(std::move(buf));
}

Value g_range(Interp&, Args& a) {
  if (!a.kw.empty()) raise("range() takes no keyword arguments");
  if (a.pos.empty() || a.pos.size() > 3) raise("range expected 1 to 3 arguments, got " + std::to_string(a.pos.size()));
  int64_t start = 0, stop, step = 1;
  if (a.pos.size() == 1) {
    stop = want_int(a.pos[0], "");
  } else {
    start = want_int(a.pos[0], "");
    stop = want_int(a.pos[1], "");
    if (a.pos.size() == 3) step = want_int(a.pos[2], "");
  }
  if (step == 0) raise("range() arg 3 must not be zero");
  __int128 n = 0;  // 128 bits: stop - start and -step overflow 64 for extreme arguments
  if (step > 0 && stop > start) n = (__int128(stop) - start + step - 1) / step;
  if (step < 0 && stop < start) n = (__int128(start) - stop - step - 1) / -__int128(step);
  if (n > 100000) raise("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  std::vector<Value> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) out.push_back(Value::integer(static_cast<int64_t>(start + __int128(k) * step)));
  return Value::list(std::move(out));
}

void fill_from(Value& target, Args& a, const char* fn) {
  if (a.pos.size() > 1) raise(std::string(fn) + " expected at most 1 argument, got " + std::to_string(a.pos.size()));
  auto put = [&](const Value& k, const Value& v) {
    if (target.is_dict()) {
      target.as_dict().set(k, v);
    } else {
      if (!k.is_string()) raise("namespace attribute names must be strings");
      target.as_namespace().set(k.as_str(), v);
    }
  };
  if (!a.pos.empty()) {
    const Value& src = a.pos[0];
    if (src.is_dict()) {
      for (const auto& kv : src.as_dict().items) put(kv.first, kv.second);
    } else if (src.is_namespace()) {
      for (const auto& kv : src.as_namespace().attrs) put(Value::str(kv.first), kv.second);
    } else {
      for (const auto& item : iterate(src)) {
        const std::vector<Value> pair = iterate(item);
        if (pair.size() != 2) raise("dictionary update sequence element has wrong length");
        put(pair[0], pair[1]);
      }
    }
  }
  for (const auto& kv : a.kw) put(Value::str(kv.first), kv.second);
}

Value g_dict(Interp&, Args& a) {
  Value d = Value::dict();
  fill_from(d, a, "dict");
  return d;
}

Value g_namespace(Interp& in, Args& a) {
  auto obj = std::make_shared<NamespaceObj>();
  in.namespaces.push_back(obj);
  Value ns = Value::object(Value::kNamespace, obj);
  fill_from(ns, a, "namespace");
  return ns;
}

struct JoinerObj : CallableObj {
  std::string sep;
  bool used = false;
  Value call(Interp&, Args&) override {
    if (!used) {
      used = true;
      return Value::str("");
    }
    return Value::str(sep);
  }
};

Value g_joiner(Interp&, Args& a) {
  Params p(a, "joiner", {"sep"});
  auto j = std::make_shared<JoinerObj>();
  j->name = "joiner";
  j->sep = to_str(p.get(0, Value::str(", ")));
  return Value::object(Value::kCallable, j);
}

}  // namespace

std::vector<std::pair<std::string, Value>> make_globals() {
  std::vector<std::pair<std::string, Value>> g;
  auto add = [&](const char* name, Value (*fn)(Interp&, Args&)) {
    g.emplace_back(name, Value::object(Value::kCallable, std::make_shared<BuiltinFn>(name, fn)));
  };
  add("raise_exception", g_raise_exception);
  add("strftime_now", g_strftime_now);
  add("range", g_range);
  add("dict", g_dict);
  add("namespace", g_namespace);
  add("joiner", g_joiner);
  return g;
}

}  // namespace gt::jinja
