// The value type of the template engine: Python's data model as far as chat templates see it.
// None, bool, int, float and str are immediate; list/tuple, dict and namespace are shared,
// mutable-by-reference objects like in Python. Undefined carries the message that an
// operation on it raises (jinja2's default Undefined: printable, iterable, falsy).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gt::jinja {

// An error raised while rendering (TypeError, UndefinedError, raise_exception, ...). The
// renderer adds the template name and line.
struct RenderError {
  std::string message;
};
[[noreturn]] void raise(std::string message);

class Value;
struct Object {
  virtual ~Object() = default;
  virtual std::string repr() const { return "<object>"; }
};
struct StrObj;
struct ListObj;
struct DictObj;
struct NamespaceObj;

class Value {
 public:
  enum Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kCallable, kLoop };

  Value() : kind_(kUndefined), i_(0) {}
  static Value none() { return Value(kNone); }
  static Value boolean(bool b) {
    Value v(kBool);
    v.b_ = b;
    return v;
  }
  static Value integer(int64_t i) {
    Value v(kInt);
    v.i_ = i;
    return v;
  }
  static Value real(double f) {
    Value v(kFloat);
    v.f_ = f;
    return v;
  }
  static Value str(std::string s);
  static Value undefined(std::string message);  // message raised when the value is used
  static Value list(std::vector<Value> items = {}, bool tuple = false);
  static Value tuple(std::vector<Value> items) { return list(std::move(items), true); }
  static Value dict();
  static Value object(Kind k, std::shared_ptr<Object> o) {
    Value v(k);
    v.o_ = std::move(o);
    return v;
  }
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == kUndefined; }
  bool is_none() const { return kind_ == kNone; }
  bool is_bool() const { return kind_ == kBool; }
  bool is_int() const { return kind_ == kInt; }
  bool is_float() const { return kind_ == kFloat; }
  bool is_number() const { return kind_ == kInt || kind_ == kFloat || kind_ == kBool; }
  bool is_integral() const { return kind_ == kInt || kind_ == kBool; }  // usable as a Python index
  bool is_string() const { return kind_ == kString; }
  bool is_list() const { return kind_ == kList; }  // list or tuple
  bool is_tuple() const;
  bool is_dict() const { return kind_ == kDict; }
  bool is_namespace() const { return kind_ == kNamespace; }
  bool is_callable() const { return kind_ == kCallable; }
  bool is_loop() const { return kind_ == kLoop; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == kBool ? (b_ ? 1 : 0) : i_; }  // int or bool
  double as_double() const { return kind_ == kFloat ? f_ : static_cast<double>(as_int()); }
  const std::string& as_str() const;             // kString
  const std::string& undefined_message() const;  // kUndefined
  ListObj& as_list() const;                      // kList
  DictObj& as_dict() const;                      // kDict
  NamespaceObj& as_namespace() const;            // kNamespace
  Object* ptr() const { return o_.get(); }

  // Raises the undefined value's error (for operations other than print/iterate/test).
  [[noreturn]] void fail_undefined() const;

 private:
  explicit Value(Kind k) : kind_(k), i_(0) {}
  static Value from_json_structured(const nlohmann::ordered_json& j);  // array or object
  Kind kind_;
  union {
    bool b_;
    int64_t i_;
    double f_;
  };
  std::shared_ptr<Object> o_;
};

struct StrObj : Object {
  std::string s;
  explicit StrObj(std::string v) : s(std::move(v)) {}
};
struct ListObj : Object {
  ~ListObj() override;
  std::vector<Value> items;
  bool tuple = false;
  uint8_t view = 0;  // 1, 2, 3: the result of dict.items()/keys()/values() (printed as such, not indexable)
};
struct DictObj : Object {
  ~DictObj() override;
  std::vector<std::pair<Value, Value>> items;  // insertion order, like a Python dict
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(const Value& key, Value v);
};
struct NamespaceObj : Object {
  ~NamespaceObj() override;
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value v);
};

// Python semantics.
bool truthy(const Value& v);
std::string type_name(const Value& v);  // Python type name: 'int', 'str', 'NoneType', ...
std::string to_str(const Value& v);     // str(v)
void append_str(std::string& out, const Value& v);
std::string repr(const Value& v);  // repr(v)
std::string float_repr(double d);  // repr(float): shortest round-trip, Python's layout
std::string repr_string(std::string_view s);
bool equal(const Value& a, const Value& b);  // ==
bool less(const Value& a, const Value& b);   // <, raises TypeError when not comparable
bool hashable(const Value& v);
// Python-style iteration: list items, dict keys, string characters; Undefined is empty.
std::vector<Value> iterate(const Value& v);
int64_t py_len(const Value& v);

struct JsonOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonOptions& opt);  // json.dumps

}  // namespace gt::jinja
