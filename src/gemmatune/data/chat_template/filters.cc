// Builtin filters and tests with jinja2 3.1 semantics (tojson is transformers' json.dumps override).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "gemmatune/data/chat_template/builtins.h"
#include "gemmatune/data/chat_template/interp.h"
#include "gemmatune/data/chat_template/strings.h"
#include "gemmatune/data/chat_template/unicode.h"

namespace gt::jinja {

// ------------------------------------------------------------------------ filters

namespace {

// jinja2's make_attrgetter: "a.b.0" looks up item by item (digits become ints).
struct AttrGetter {
  std::vector<Value> parts;
  explicit AttrGetter(const Value& attribute) {
    if (attribute.is_string()) {
      for (auto& p : py_split(attribute.as_str(), Value::str("."), -1)) {
        const bool digits = !p.empty() && p.find_first_not_of("0123456789") == std::string::npos;
        parts.push_back(digits ? Value::integer(std::stoll(p)) : Value::str(std::move(p)));
      }
    } else if (!attribute.is_none() && !attribute.is_undefined()) {
      parts.push_back(attribute);
    }
  }
  Value get(Interp& in, Value item, const Value* def = nullptr) const {
    for (const auto& p : parts) {
      item = in.getitem(item, p);
      if (def && item.is_undefined()) item = *def;
    }
    return item;
  }
};

Value ignore_case(const Value& v) { return v.is_string() ? Value::str(uni::lower(v.as_str())) : v; }

void sort_values(std::vector<Value>& items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> idx(items.size());
  for (size_t k = 0; k < idx.size(); ++k) idx[k] = k;
  std::stable_sort(idx.begin(), idx.end(),
                   [&](size_t a, size_t b) { return reverse ? less(keys[b], keys[a]) : less(keys[a], keys[b]); });
  std::vector<Value> out;
  out.reserve(items.size());
  for (size_t k : idx) out.push_back(std::move(items[k]));
  items = std::move(out);
}

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// int(d) for a finite float; gemmatune's integers are 64-bit, Python's are unbounded.
int64_t float_to_int(double d) {
  const double t = std::trunc(d);
  if (!(t >= -9223372036854775808.0 && t < 9223372036854775808.0))
    raise("int(): " + float_repr(d) + " does not fit in a 64-bit integer");
  return static_cast<int64_t>(t);
}

// The indent string for an integer width (indent filter, tojson(indent=N)).
std::string indent_string(int64_t width) {
  check_width(width, "indent");
  return std::string(static_cast<size_t>(std::max<int64_t>(0, width)), ' ');
}

Value f_abs(Interp&, const Value& v, Args& a) {
  Params(a, "abs", {});
  if (v.is_integral()) {
    if (v.as_int() == INT64_MIN) raise("integer overflow");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.is_float()) return Value::real(std::fabs(v.as_double()));
  if (v.is_undefined()) v.fail_undefined();
  raise("bad operand type for abs(): '" + type_name(v) + "'");
}

Value f_attr(Interp& in, const Value& v, Args& a) {
  Params p(a, "attr", {"name"});
  const std::string& name = want_str(p.get(0, Value::none()), "attribute name");
  if (v.is_dict()) {
    if (auto m = lookup_method(v, name)) return *m;
    return Value::undefined("'dict object' has no attribute '" + name + "'");
  }
  return in.getattr(v, name);
}

Value f_batch(Interp&, const Value& v, Args& a) {
  Params p(a, "batch", {"linecount", "fill_with"});
  const int64_t n = want_int(p.get(0, Value::none()), "linecount");
  const Value fill = p.get(1, Value::none());
  if (!fill.is_none()) check_items(static_cast<size_t>(std::max<int64_t>(n, 0)), "batch()");
  std::vector<Value> out, tmp;
  for (auto& x : iterate(v)) {
    if (static_cast<int64_t>(tmp.size()) == n) {
      out.push_back(Value::list(std::move(tmp)));
      tmp.clear();
    }
    tmp.push_back(std::move(x));
  }
  if (!tmp.empty()) {
    if (!fill.is_none())
      while (static_cast<int64_t>(tmp.size()) < n) tmp.push_back(fill);
    out.push_back(Value::list(std::move(tmp)));
  }
  return Value::list(std::move(out));
}

Value f_capitalize(Interp&, const Value& v, Args& a) {
  Params(a, "capitalize", {});
  return Value::str(uni::capitalize(to_str(v)));
}

Value f_center(Interp& in, const Value& v, Args& a) {
  Params p(a, "center", {"width"});
  Args b;
  b.pos.push_back(p.get(0, Value::integer(80)));
  return call_method(in, Value::str(to_str(v)), "center", b);
}

Value f_length(Interp&, const Value& v, Args& a) {
  Params(a, "length", {});
  return Value::integer(py_len(v));
}

Value f_default(Interp&, const Value& v, Args& a) {
  Params p(a, "default", {"default_value", "boolean"});
  if (v.is_undefined() || (p.flag(1, false) && !truthy(v))) return p.get(0, Value::str(""));
  return v;
}

Value f_dictsort(Interp&, const Value& v, Args& a) {
  Params p(a, "dictsort", {"case_sensitive", "by", "reverse"});
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_dict()) raise("'" + type_name(v) + "' object has no attribute 'items'");
  const bool cs = p.flag(0, false);
  const Value by = p.get(1, Value::str("key"));
  size_t pos;
  if (by.is_string() && by.as_str() == "key") {
    pos = 0;
  } else if (by.is_string() && by.as_str() == "value") {
    pos = 1;
  } else {
    raise("You can only sort by either \"key\" or \"value\"");
  }
  std::vector<Value> items, keys;
  for (const auto& kv : v.as_dict().items) {
    items.push_back(Value::tuple({kv.first, kv.second}));
    const Value& k = pos == 0 ? kv.first : kv.second;
    keys.push_back(cs ? k : ignore_case(k));
  }
  sort_values(items, keys, p.flag(2, false));
  return Value::list(std::move(items));
}

Value f_escape(Interp&, const Value& v, Args& a) {
  Params(a, "escape", {});
  if (v.is_undefined()) return Value::str("");
  return Value::str(html_escape(to_str(v)));
}

Value f_first(Interp&, const Value& v, Args& a) {
  Params(a, "first", {});
  if (v.is_list()) {
    if (v.as_list().items.empty()) return Value::undefined("No first item, sequence was empty.");
    return v.as_list().items.front();
  }
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Interp&, const Value& v, Args& a) {
  Params(a, "last", {});
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value f_float(Interp&, const Value& v, Args& a) {
  Params p(a, "float", {"default"});
  if (v.is_number()) return Value::real(v.as_double());
  if (v.is_string()) {
    double d;
    if (parse_py_float(v.as_str(), &d)) return Value::real(d);
  }
  return p.get(0, Value::real(0.0));
}

Value f_format(Interp&, const Value& v, Args& a) {
  if (!a.pos.empty() && !a.kw.empty()) raise("can't handle positional and keyword arguments at the same time");
  Value args;
  if (!a.kw.empty()) {
    args = Value::dict();
    for (const auto& kv : a.kw) args.as_dict().set(Value::str(kv.first), kv.second);
  } else {
    args = Value::tuple(a.pos);
  }
  return Value::str(py_percent_format(to_str(v), args));
}

Value f_indent(Interp&, const Value& v, Args& a) {
  Params p(a, "indent", {"width", "first", "blank"});
  const Value w = p.get(0, Value::integer(4));
  const std::string ind =
      w.is_string() ? w.as_str() : indent_string(want_int(w, "width"));
  const std::string s = to_str(v) + "\n";
  std::string rv;
  const std::vector<std::string> lines = py_splitlines(s, false);
  check_string_size(s.size() + (lines.size() + 1) * ind.size(), "indent");
  if (p.flag(2, false)) {
    for (size_t k = 0; k < lines.size(); ++k) {
      if (k) rv += "\n" + ind;
      rv += lines[k];
    }
  } else {
    rv = lines.empty() ? std::string() : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) {
      rv += "\n";
      if (!lines[k].empty()) rv += ind;
      rv += lines[k];
    }
  }
  if (p.flag(1, false)) rv = ind + rv;
  return Value::str(std::move(rv));
}

Value f_int(Interp&, const Value& v, Args& a) {
  Params p(a, "int", {"default", "base"});
  const Value def = p.get(0, Value::integer(0));
  const int base = static_cast<int>(want_int(p.get(1, Value::integer(10)), "base"));
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.is_float()) {
    const double d = v.as_double();
    if (std::isnan(d) || std::isinf(d)) return def;
    return Value::integer(float_to_int(d));
  }
  if (v.is_string()) {
    int64_t i;
    if (parse_py_int(v.as_str(), base, &i)) return Value::integer(i);
    double d;
    if (parse_py_float(v.as_str(), &d) && !std::isnan(d) && !std::isinf(d)) return Value::integer(float_to_int(d));
  }
  return def;
}

Value f_join(Interp& in, const Value& v, Args& a) {
  Params p(a, "join", {"d", "attribute"});
  const std::string d = to_str(p.get(0, Value::str("")));
  const Value attr = p.get(1, Value::none());
  std::string out;
  size_t k = 0;
  AttrGetter g(attr);
  for (const auto& x : iterate(v)) {
    if (k++) out += d;
    append_str(out, attr.is_none() ? x : g.get(in, x));
    check_string_size(out.size(), "join()");
  }
  return Value::str(std::move(out));
}

Value f_list(Interp&, const Value& v, Args& a) {
  Params(a, "list", {});
  return Value::list(iterate(v));
}

Value f_lower(Interp&, const Value& v, Args& a) {
  Params(a, "lower", {});
  return Value::str(uni::lower(to_str(v)));
}

Value f_upper(Interp&, const Value& v, Args& a) {
  Params(a, "upper", {});
  return Value::str(uni::upper(to_str(v)));
}

Value f_items(Interp&, const Value& v, Args& a) {
  Params(a, "items", {});
  if (v.is_undefined()) return Value::list();
  if (!v.is_dict()) raise("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& kv : v.as_dict().items) out.push_back(Value::tuple({kv.first, kv.second}));
  return Value::list(std::move(out));
}

Value f_map(Interp& in, const Value& v, Args& a) {
  std::vector<Value> out;
  if (!truthy(v)) return Value::list();
  if (a.pos.empty() && std::any_of(a.kw.begin(), a.kw.end(), [](const auto& kv) { return kv.first == "attribute"; })) {
    Value attr, def = Value::none();
    for (const auto& kv : a.kw) {
      if (kv.first == "attribute") {
        attr = kv.second;
      } else if (kv.first == "default") {
        def = kv.second;
      } else {
        raise("Unexpected keyword argument '" + kv.first + "'");
      }
    }
    AttrGetter g(attr);
    for (const auto& x : iterate(v)) out.push_back(g.get(in, x, def.is_none() ? nullptr : &def));
    return Value::list(std::move(out));
  }
  if (a.pos.empty()) raise("map requires a filter argument");
  const std::string name = want_str(a.pos[0], "filter name");
  Args rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (const auto& x : iterate(v)) {
    Args copy = rest;
    out.push_back(in.call_filter(name, x, copy));
  }
  return Value::list(std::move(out));
}

Value min_max(Interp& in, const Value& v, Args& a, bool is_max) {
  Params p(a, is_max ? "max" : "min", {"case_sensitive", "attribute"});
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const bool cs = p.flag(0, false);
  AttrGetter g(p.get(1, Value::none()));
  auto key = [&](const Value& x) {
    Value k = g.get(in, x);
    return cs ? k : ignore_case(k);
  };
  size_t best = 0;
  Value bk = key(items[0]);
  for (size_t k = 1; k < items.size(); ++k) {
    Value kk = key(items[k]);
    if (is_max ? less(bk, kk) : less(kk, bk)) {
      best = k;
      bk = kk;
    }
  }
  return items[best];
}
Value f_min(Interp& in, const Value& v, Args& a) { return min_max(in, v, a, false); }
Value f_max(Interp& in, const Value& v, Args& a) { return min_max(in, v, a, true); }

Value select_reject(Interp& in, const Value& v, Args& a, bool select, bool attr) {
  std::vector<Value> out;
  if (!truthy(v)) return Value::list();
  size_t off = 0;
  AttrGetter g(Value::none());
  if (attr) {
    if (a.pos.empty()) raise("Missing parameter for attribute name");
    g = AttrGetter(a.pos[0]);
    off = 1;
  }
  const bool has_test = a.pos.size() > off;
  std::string test;
  Args rest;
  if (has_test) {
    test = want_str(a.pos[off], "test name");
    rest.pos.assign(a.pos.begin() + static_cast<long>(off) + 1, a.pos.end());
    rest.kw = a.kw;
  }
  for (const auto& x : iterate(v)) {
    const Value t = attr ? g.get(in, x) : x;
    bool r;
    if (has_test) {
      Args copy = rest;
      r = in.call_test(test, t, copy);
    } else {
      r = truthy(t);
    }
    if (r == select) out.push_back(x);
  }
  return Value::list(std::move(out));
}
Value f_select(Interp& in, const Value& v, Args& a) { return select_reject(in, v, a, true, false); }
Value f_reject(Interp& in, const Value& v, Args& a) { return select_reject(in, v, a, false, false); }
Value f_selectattr(Interp& in, const Value& v, Args& a) { return select_reject(in, v, a, true, true); }
Value f_rejectattr(Interp& in, const Value& v, Args& a) { return select_reject(in, v, a, false, true); }

Value f_replace(Interp&, const Value& v, Args& a) {
  Params p(a, "replace", {"old", "new", "count"});
  const Value cnt = p.get(2, Value::none());
  return Value::str(py_replace(to_str(v), to_str(p.get(0, Value::str(""))), to_str(p.get(1, Value::str(""))),
                               cnt.is_none() ? -1 : want_int(cnt, "count")));
}

Value f_reverse(Interp&, const Value& v, Args& a) {
  Params(a, "reverse", {});
  if (v.is_string()) {
    auto cps = uni::code_points(v.as_str());
    std::reverse(cps.begin(), cps.end());
    return Value::str(uni::encode(cps, 0, cps.size()));
  }
  std::vector<Value> items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

// round(x, nd) for an int, exactly: half to even, like Python.
int64_t round_int(int64_t x, int64_t nd) {
  if (nd >= 0) return x;
  if (nd < -19) return 0;  // |x| < 2**63 < 10**19 / 2
  __int128 p = 1;
  for (int64_t k = 0; k < -nd; ++k) p *= 10;
  __int128 q = x / p, r = x % p;  // truncated towards zero
  if (r < 0) {
    r += p;
    --q;
  }
  if (2 * r > p || (2 * r == p && (q & 1))) ++q;
  const __int128 out = q * p;
  if (out > INT64_MAX || out < INT64_MIN) raise("integer overflow");
  return static_cast<int64_t>(out);
}

double py_round(double x, int64_t nd) {
  if (std::isnan(x) || std::isinf(x)) return x;
  if (nd < -400) return std::copysign(0.0, x);  // 10**400 overflows a double: every x rounds to 0
  if (nd >= 0) {
    if (nd > 300) return x;
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(nd), x);
    return std::strtod(buf, nullptr);
  }
  const double p = std::pow(10.0, static_cast<double>(-nd));
  const double y = x / p;
  double z = std::nearbyint(y);  // round-half-even in the default rounding mode
  return z * p;
}

Value f_round(Interp&, const Value& v, Args& a) {
  Params p(a, "round", {"precision", "method"});
  const int64_t prec = want_int(p.get(0, Value::integer(0)), "precision");
  const std::string method = to_str(p.get(1, Value::str("common")));
  if (method != "common" && method != "ceil" && method != "floor") raise("method must be common, ceil or floor");
  if (v.is_undefined()) v.fail_undefined();
  if (!v.is_number()) raise("type " + type_name(v) + " doesn't define __round__ method");
  if (method == "common") {
    if (v.is_integral()) return Value::integer(round_int(v.as_int(), prec));
    return Value::real(py_round(v.as_double(), prec));
  }
  const double m = std::pow(10.0, static_cast<double>(prec));
  const double x = v.as_double() * m;
  return Value::real((method == "ceil" ? std::ceil(x) : std::floor(x)) / m);
}

Value f_safe(Interp&, const Value& v, Args& a) {
  Params(a, "safe", {});
  return Value::str(to_str(v));
}

Value f_slice(Interp&, const Value& v, Args& a) {
  Params p(a, "slice", {"slices", "fill_with"});
  const int64_t slices = want_int(p.get(0, Value::none()), "slices");
  if (slices <= 0) raise("slices must be positive");
  check_items(static_cast<size_t>(slices), "slice()");
  const Value fill = p.get(1, Value::none());
  const std::vector<Value> seq = iterate(v);
  const auto length = static_cast<int64_t>(seq.size());
  const int64_t per = length / slices, extra = length % slices;
  int64_t offset = 0;
  std::vector<Value> out;
  for (int64_t s = 0; s < slices; ++s) {
    const int64_t start = offset + s * per;
    if (s < extra) ++offset;
    const int64_t end = offset + (s + 1) * per;
    std::vector<Value> tmp(seq.begin() + start, seq.begin() + end);
    if (!fill.is_none() && s >= extra) tmp.push_back(fill);
    out.push_back(Value::list(std::move(tmp)));
  }
  return Value::list(std::move(out));
}

Value f_sort(Interp& in, const Value& v, Args& a) {
  Params p(a, "sort", {"reverse", "case_sensitive", "attribute"});
  std::vector<Value> items = iterate(v);
  const bool cs = p.flag(1, false);
  const Value attr = p.get(2, Value::none());
  std::vector<AttrGetter> getters;
  if (attr.is_string()) {
    for (auto& part : py_split(attr.as_str(), Value::str(","), -1)) getters.emplace_back(Value::str(part));
  } else {
    getters.emplace_back(attr);
  }
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const auto& x : items) {
    std::vector<Value> k;
    for (const auto& g : getters) {
      const Value kv = g.get(in, x);
      k.push_back(cs ? kv : ignore_case(kv));
    }
    keys.push_back(Value::list(std::move(k)));
  }
  sort_values(items, keys, p.flag(0, false));
  return Value::list(std::move(items));
}

Value f_string(Interp&, const Value& v, Args& a) {
  Params(a, "string", {});
  return Value::str(to_str(v));
}

std::string html_unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    const size_t semi = s.find(';', i);
    if (semi == std::string::npos || semi - i > 10) {
      out.push_back('&');
      continue;
    }
    const std::string ent = s.substr(i + 1, semi - i - 1);
    static const std::unordered_map<std::string, uint32_t> kNamed = {{"amp", '&'},  {"lt", '<'},    {"gt", '>'},
                                                                     {"quot", '"'}, {"apos", '\''}, {"nbsp", 0xA0}};
    uint32_t cp = 0;
    if (!ent.empty() && ent[0] == '#') {
      const bool hex = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X');
      cp = static_cast<uint32_t>(std::strtoul(ent.c_str() + (hex ? 2 : 1), nullptr, hex ? 16 : 10));
    } else if (auto it = kNamed.find(ent); it != kNamed.end()) {
      cp = it->second;
    }
    if (!cp) {
      out.push_back('&');
      continue;
    }
    uni::append(out, cp);
    i = semi;
  }
  return out;
}

Value f_striptags(Interp&, const Value& v, Args& a) {
  Params(a, "striptags", {});
  std::string s = to_str(v), t;
  for (size_t i = 0; i < s.size();) {  // <!-- ... -->
    if (s.compare(i, 4, "<!--") == 0) {
      const size_t e = s.find("-->", i + 4);
      if (e != std::string::npos) {
        i = e + 3;
        continue;
      }
    }
    t.push_back(s[i++]);
  }
  s.clear();
  for (size_t i = 0; i < t.size();) {  // <...>
    if (t[i] == '<') {
      const size_t e = t.find('>', i + 1);
      if (e != std::string::npos) {
        i = e + 1;
        continue;
      }
    }
    s.push_back(t[i++]);
  }
  std::string joined;
  for (const auto& w : py_split(s, Value::none(), -1)) {
    if (!joined.empty()) joined.push_back(' ');
    joined += w;
  }
  return Value::str(html_unescape(joined));
}

Value f_sum(Interp& in, const Value& v, Args& a) {
  Params p(a, "sum", {"attribute", "start"});
  AttrGetter g(p.get(0, Value::none()));
  Value acc = p.get(1, Value::integer(0));
  for (const auto& x : iterate(v)) acc = binary_op(BinOp::Add, acc, g.get(in, x));
  return acc;
}

Value f_title(Interp&, const Value& v, Args& a) {
  Params(a, "title", {});
  // jinja2: split on runs of [-\s({\[<]; each piece: first char upper, rest lower.
  const auto cps = uni::code_points(to_str(v));
  auto is_sep = [](uint32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || uni::is_space(c); };
  std::string out;
  size_t k = 0;
  while (k < cps.size()) {
    const bool sep = is_sep(cps[k]);
    size_t e = k;
    while (e < cps.size() && is_sep(cps[e]) == sep) ++e;
    uni::append_upper(out, cps[k]);
    out += uni::lower(uni::encode(cps, k + 1, e));
    k = e;
  }
  return Value::str(std::move(out));
}

Value f_tojson(Interp&, const Value& v, Args& a) {
  Params p(a, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions opt;
  opt.ensure_ascii = p.flag(0, false);
  const Value indent = p.get(1, Value::none());
  if (!indent.is_none()) {
    opt.has_indent = true;
    if (indent.is_string()) {
      opt.indent = indent.as_str();
    } else {
      opt.indent = indent_string(want_int(indent, "indent"));
    }
    opt.item_sep = ",";
  }
  const Value seps = p.get(2, Value::none());
  if (!seps.is_none()) {
    const std::vector<Value> s = iterate(seps);
    if (s.size() != 2) raise("separators must be a (item_separator, key_separator) pair");
    opt.item_sep = want_str(s[0], "item separator");
    opt.key_sep = want_str(s[1], "key separator");
  }
  opt.sort_keys = p.flag(3, false);
  return Value::str(to_json(v, opt));
}

Value f_trim(Interp&, const Value& v, Args& a) {
  Params p(a, "trim", {"chars"});
  const Value chars = p.get(0, Value::none());
  const std::string s = to_str(v);
  if (chars.is_none()) return Value::str(std::string(uni::strip(s, true, true)));
  return Value::str(uni::strip_chars(s, want_str(chars, "strip arg"), true, true));
}

Value f_truncate(Interp&, const Value& v, Args& a) {
  Params p(a, "truncate", {"length", "killwords", "end", "leeway"});
  const int64_t length = want_int(p.get(0, Value::integer(255)), "length");
  const bool killwords = p.flag(1, false);
  const std::string end = to_str(p.get(2, Value::str("...")));
  const Value lw = p.get(3, Value::none());
  const int64_t leeway = lw.is_none() ? 5 : want_int(lw, "leeway");
  const auto end_len = static_cast<int64_t>(uni::length(end));
  if (length < end_len) raise("expected length >= " + std::to_string(end_len) + ", got " + std::to_string(length));
  if (leeway < 0) raise("expected leeway >= 0, got " + std::to_string(leeway));
  const std::string s = to_str(v);
  const auto cps = uni::code_points(s);
  if (static_cast<int64_t>(cps.size()) - leeway <= length) return Value::str(s);
  const std::string head = uni::encode(cps, 0, static_cast<size_t>(length - end_len));
  if (killwords) return Value::str(head + end);
  const size_t sp = head.rfind(' ');
  return Value::str((sp == std::string::npos ? head : head.substr(0, sp)) + end);
}

Value f_unique(Interp& in, const Value& v, Args& a) {
  Params p(a, "unique", {"case_sensitive", "attribute"});
  const bool cs = p.flag(0, false);
  AttrGetter g(p.get(1, Value::none()));
  std::vector<Value> out, seen;
  for (const auto& x : iterate(v)) {
    Value k = g.get(in, x);
    if (!cs) k = ignore_case(k);
    if (!hashable(k)) raise("unhashable type: '" + type_name(k) + "'");
    charge(seen.size());
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, k); })) {
      seen.push_back(k);
      out.push_back(x);
    }
  }
  return Value::list(std::move(out));
}

Value f_wordcount(Interp&, const Value& v, Args& a) {
  Params(a, "wordcount", {});
  const std::string s = to_str(v);
  int64_t n = 0;
  bool in_word = false;
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = uni::decode(s, i);
    const bool w = c == '_' || uni::is_alpha(c) || uni::is_decimal(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}

Value f_pprint(Interp&, const Value& v, Args& a) {
  Params(a, "pprint", {});
  return Value::str(repr(v));
}

Value f_groupby(Interp& in, const Value& v, Args& a) {
  Params p(a, "groupby", {"attribute", "default", "case_sensitive"});
  const Value* attr = p.get(0);
  if (!attr) raise("groupby() missing required argument 'attribute'");
  AttrGetter g(*attr);
  const Value def = p.get(1, Value::none());
  const bool cs = p.flag(2, false);
  std::vector<Value> items = iterate(v);
  std::vector<Value> keys;
  for (const auto& x : items) {
    Value k = g.get(in, x, def.is_none() ? nullptr : &def);
    keys.push_back(cs ? k : ignore_case(k));
  }
  std::vector<size_t> idx(items.size());
  for (size_t k = 0; k < idx.size(); ++k) idx[k] = k;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t x, size_t y) { return less(keys[x], keys[y]); });
  std::vector<Value> out;
  for (size_t k = 0; k < idx.size();) {
    size_t e = k;
    std::vector<Value> group;
    while (e < idx.size() && equal(keys[idx[e]], keys[idx[k]])) group.push_back(items[idx[e++]]);
    const Value grouper = cs ? keys[idx[k]] : g.get(in, group[0], def.is_none() ? nullptr : &def);
    out.push_back(Value::tuple({grouper, Value::list(std::move(group))}));
    k = e;
  }
  return Value::list(std::move(out));
}

struct NamedFilter {
  const char* name;
  FilterFn fn;
};
const NamedFilter kFilters[] = {
    {"abs", f_abs},           {"attr", f_attr},
    {"batch", f_batch},       {"capitalize", f_capitalize},
    {"center", f_center},     {"count", f_length},
    {"d", f_default},         {"default", f_default},
    {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape},     {"first", f_first},
    {"float", f_float},       {"forceescape", f_escape},
    {"format", f_format},     {"groupby", f_groupby},
    {"indent", f_indent},     {"int", f_int},
    {"join", f_join},         {"last", f_last},
    {"length", f_length},     {"list", f_list},
    {"lower", f_lower},       {"items", f_items},
    {"map", f_map},           {"min", f_min},
    {"max", f_max},           {"pprint", f_pprint},
    {"reject", f_reject},     {"rejectattr", f_rejectattr},
    {"replace", f_replace},   {"reverse", f_reverse},
    {"round", f_round},       {"safe", f_safe},
    {"select", f_select},     {"selectattr", f_selectattr},
    {"slice", f_slice},       {"sort", f_sort},
    {"string", f_string},     {"striptags", f_striptags},
    {"sum", f_sum},           {"title", f_title},
    {"tojson", f_tojson},     {"trim", f_trim},
    {"truncate", f_truncate}, {"unique", f_unique},
    {"upper", f_upper},       {"wordcount", f_wordcount},
};

// ------------------------------------------------------------------------ tests

const Value& arg0(const Args& a, const char* test) {
  if (a.pos.empty() && a.kw.empty()) raise(std::string("test '") + test + "' requires an argument");
  return a.pos.empty() ? a.kw[0].second : a.pos[0];
}

bool t_defined(Interp&, const Value& v, Args&) { return !v.is_undefined(); }
bool t_undefined(Interp&, const Value& v, Args&) { return v.is_undefined(); }
bool t_none(Interp&, const Value& v, Args&) { return v.is_none(); }
bool t_boolean(Interp&, const Value& v, Args&) { return v.is_bool(); }
bool t_false(Interp&, const Value& v, Args&) { return v.is_bool() && !v.as_bool(); }
bool t_true(Interp&, const Value& v, Args&) { return v.is_bool() && v.as_bool(); }
bool t_integer(Interp&, const Value& v, Args&) { return v.is_int(); }
bool t_float(Interp&, const Value& v, Args&) { return v.is_float(); }
bool t_number(Interp&, const Value& v, Args&) { return v.is_number(); }
bool t_string(Interp&, const Value& v, Args&) { return v.is_string(); }
bool t_mapping(Interp&, const Value& v, Args&) { return v.is_dict(); }
bool t_sequence(Interp&, const Value& v, Args&) {
  return v.is_string() || (v.is_list() && !v.as_list().view) || v.is_dict() || v.is_undefined();
}
bool t_iterable(Interp&, const Value& v, Args&) {
  return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined() || v.is_loop();
}
bool t_callable(Interp&, const Value& v, Args&) { return v.is_callable() || v.is_loop() || v.is_undefined(); }
bool t_escaped(Interp&, const Value&, Args&) { return false; }
bool t_lower(Interp&, const Value& v, Args&) { return py_islower(to_str(v)); }
bool t_upper(Interp&, const Value& v, Args&) { return py_isupper(to_str(v)); }
bool t_odd(Interp&, const Value& v, Args&) {
  return equal(binary_op(BinOp::Mod, v, Value::integer(2)), Value::integer(1));
}
bool t_even(Interp&, const Value& v, Args&) {
  return equal(binary_op(BinOp::Mod, v, Value::integer(2)), Value::integer(0));
}
bool t_divisibleby(Interp&, const Value& v, Args& a) {
  return equal(binary_op(BinOp::Mod, v, arg0(a, "divisibleby")), Value::integer(0));
}
bool t_sameas(Interp&, const Value& v, Args& a) {
  const Value& o = arg0(a, "sameas");
  if (v.kind() != o.kind()) return false;
  switch (v.kind()) {
    case Value::kNone:
      return true;
    case Value::kBool:
    case Value::kInt:
    case Value::kFloat:
      return equal(v, o);
    case Value::kString:
      return v.ptr() == o.ptr() || v.as_str() == o.as_str();
    default:
      return v.ptr() == o.ptr();
  }
}
bool t_in(Interp&, const Value& v, Args& a) { return contains(arg0(a, "in"), v); }
bool t_eq(Interp&, const Value& v, Args& a) { return equal(v, arg0(a, "eq")); }
bool t_ne(Interp&, const Value& v, Args& a) { return !equal(v, arg0(a, "ne")); }
bool t_lt(Interp&, const Value& v, Args& a) {
  check_orderable(v, arg0(a, "lt"), "<");
  return less(v, arg0(a, "lt"));
}
bool t_le(Interp&, const Value& v, Args& a) {
  check_orderable(v, arg0(a, "le"), "<=");
  return !less(arg0(a, "le"), v);
}
bool t_gt(Interp&, const Value& v, Args& a) {
  check_orderable(v, arg0(a, "gt"), ">");
  return less(arg0(a, "gt"), v);
}
bool t_ge(Interp&, const Value& v, Args& a) {
  check_orderable(v, arg0(a, "ge"), ">=");
  return !less(v, arg0(a, "ge"));
}
bool t_filter(Interp&, const Value& v, Args&) { return v.is_string() && find_filter(v.as_str()) != nullptr; }
bool t_test(Interp&, const Value& v, Args&) { return v.is_string() && find_test(v.as_str()) != nullptr; }

struct NamedTest {
  const char* name;
  TestFn fn;
};
const NamedTest kTests[] = {
    {"odd", t_odd},
    {"even", t_even},
    {"divisibleby", t_divisibleby},
    {"defined", t_defined},
    {"undefined", t_undefined},
    {"filter", t_filter},
    {"test", t_test},
    {"none", t_none},
    {"boolean", t_boolean},
    {"false", t_false},
    {"true", t_true},
    {"integer", t_integer},
    {"float", t_float},
    {"lower", t_lower},
    {"upper", t_upper},
    {"string", t_string},
    {"mapping", t_mapping},
    {"number", t_number},
    {"sequence", t_sequence},
    {"iterable", t_iterable},
    {"callable", t_callable},
    {"sameas", t_sameas},
    {"escaped", t_escaped},
    {"in", t_in},
    {"==", t_eq},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"!=", t_ne},
    {"ne", t_ne},
    {">", t_gt},
    {"gt", t_gt},
    {"greaterthan", t_gt},
    {"ge", t_ge},
    {">=", t_ge},
    {"<", t_lt},
    {"lt", t_lt},
    {"lessthan", t_lt},
    {"<=", t_le},
    {"le", t_le},
};

}  // namespace

FilterFn find_filter(std::string_view name) {
  for (const auto& f : kFilters)
    if (name == f.name) return f.fn;
  return nullptr;
}

TestFn find_test(std::string_view name) {
  for (const auto& t : kTests)
    if (name == t.name) return t.fn;
  return nullptr;
}

}  // namespace gt::jinja
