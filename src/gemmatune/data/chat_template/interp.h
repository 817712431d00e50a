// Tree-walking renderer for a parsed Program, with jinja2's scoping: `set` in a for-loop body
// or macro stays local to it (each iteration starts afresh), `if` opens no scope, macros see
// the scope they were defined in, and namespace() objects are shared by reference.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gemmatune/data/chat_template/ast.h"
#include "gemmatune/data/chat_template/limits.h"
#include "gemmatune/data/chat_template/value.h"

namespace gt::jinja {

struct Scope;
using ScopePtr = std::shared_ptr<Scope>;

struct Scope {
  ScopePtr parent;
  std::vector<std::pair<int, Value>> vars;
  explicit Scope(ScopePtr p = nullptr) : parent(std::move(p)) {}
  void set(int sym, Value v) {
    for (auto& kv : vars) {
      if (kv.first == sym) {
        kv.second = std::move(v);
        return;
      }
    }
    vars.emplace_back(sym, std::move(v));
  }
  const Value* find(int sym) const {
    for (const Scope* s = this; s; s = s->parent.get())
      for (const auto& kv : s->vars)
        if (kv.first == sym) return &kv.second;
    return nullptr;
  }
};

class Interp;

struct CallableObj : Object {
  std::string name;
  virtual Value call(Interp& in, Args& args) = 0;
  std::string repr() const override { return "<function " + name + ">"; }
};

// A builtin function (raise_exception, range, namespace, ...).
struct BuiltinFn : CallableObj {
  Value (*fn)(Interp&, Args&);
  BuiltinFn(std::string n, Value (*f)(Interp&, Args&)) : fn(f) { name = std::move(n); }
  Value call(Interp& in, Args& args) override { return fn(in, args); }
};

// A method bound to its object: "abc".upper, message.get, loop.cycle, ...
struct BoundMethod : CallableObj {
  Value self;
  BoundMethod(Value s, std::string n) : self(std::move(s)) { name = std::move(n); }
  Value call(Interp& in, Args& args) override;
  std::string repr() const override { return "<built-in method " + name + ">"; }
};

struct MacroObj : CallableObj {
  const Stmt* node = nullptr;
  ScopePtr closure;
  Value call(Interp& in, Args& args) override;
  std::string repr() const override { return "<Macro '" + name + "'>"; }
};

// The `loop` variable of a for loop; callable for recursive loops.
struct LoopObj : CallableObj {
  std::shared_ptr<const std::vector<Value>> items;
  int64_t index0 = 0;
  int depth = 1;
  const Stmt* node = nullptr;
  ScopePtr scope;  // scope the loop statement runs in (for recursion)
  bool have_last = false;
  std::vector<Value> last_changed;
  Value call(Interp& in, Args& args) override;
  std::string repr() const override {
    return "<LoopContext " + std::to_string(index0 + 1) + "/" + std::to_string(items->size()) + ">";
  }
};

// Guards the C++ stack against runaway recursion (Python would raise RecursionError).
struct DepthGuard {
  static constexpr int kMaxDepth = 200;
  int& d;
  explicit DepthGuard(int& depth) : d(depth) {
    if (++d > kMaxDepth) raise("maximum recursion depth exceeded");
  }
  ~DepthGuard() { --d; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;
};

inline CallableObj& as_callable(const Value& v) { return *static_cast<CallableObj*>(v.ptr()); }
inline LoopObj& as_loop(const Value& v) { return *static_cast<LoopObj*>(v.ptr()); }

class Interp {
 public:
  explicit Interp(const Program& p) : prog(p), loop_sym(p.sym("loop")) {}
  ~Interp();  // breaks the reference cycles a render can build (scope -> macro -> scope, ...)
  Interp(const Interp&) = delete;
  Interp& operator=(const Interp&) = delete;

  enum Flow { kNormal, kBreak, kContinue };
  Flow exec(const Body& body, const ScopePtr& scope, std::string& out);
  Value eval(const Expr& e, const ScopePtr& scope);

  Value call(const Value& callee, Args& args);
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  Value call_filter(const std::string& name, const Value& v, Args& args);
  bool call_test(const std::string& name, const Value& v, Args& args);
  void run_for(const Stmt& s, std::vector<Value> items, const ScopePtr& scope, std::string& out, int depth);

  const Program& prog;
  int line = 0;   // line of the innermost node being evaluated (for error messages)
  int depth = 0;  // nesting of macro calls and recursive loops
  int loop_sym = -1;
  // Counts one loop iteration or call; raises when the render has run too long.
  static void step() { charge(1); }
  // Raises when a render buffer has grown past the string limit.
  static void check_output(const std::string& out) {
    if (out.size() > limits().max_string) check_string_size(out.size(), "template output");
  }
  // Objects that can close a reference cycle; released when the render ends.
  std::vector<std::shared_ptr<MacroObj>> macros;
  std::vector<std::shared_ptr<LoopObj>> loops;
  std::vector<std::shared_ptr<NamespaceObj>> namespaces;

 private:
  void assign(const Expr& target, const Value& v, const ScopePtr& scope);
  void eval_args(const Expr& e, const ScopePtr& scope, Args& args);
  Value apply_filter(const Expr& f, const ScopePtr& scope, const Value* input);
  Value compare(const Expr& e, const ScopePtr& scope);
  Value slice(const Value& obj, const Expr& sl, const ScopePtr& scope);
  void define_macro(const Stmt& s, const ScopePtr& scope);
};

// Operators and builtins (builtins.cc).
Value binary_op(BinOp op, const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);  // Python `in`
Value unary_minus(const Value& v);
Value unary_plus(const Value& v);
Value call_method(Interp& in, const Value& self, const std::string& name, Args& args);
// A bound method, or the sandbox's "unsafe" undefined for a mutating method, when `name` is a
// method of obj's type; nullopt otherwise.
std::optional<Value> lookup_method(const Value& obj, const std::string& name);
// Raises TypeError when `a op b` is not an ordering Python supports.
void check_orderable(const Value& a, const Value& b, const char* op);
std::string object_type_repr(const Value& v);
Value loop_attr(const Value& loop, const std::string& name);
// Globals that templates see: raise_exception, strftime_now, range, namespace, dict, joiner.
std::vector<std::pair<std::string, Value>> make_globals();

}  // namespace gt::jinja
