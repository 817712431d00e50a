// The parsed form of a template: expressions and statements, mirroring jinja2's node types.
// Names are interned into symbol ids at parse time; filters and tests are resolved to
// function pointers, so rendering never looks at source text again.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gemmatune/data/chat_template/value.h"

namespace gt::jinja {

class Interp;

// Arguments of a call, filter or test (positional and keyword), after evaluation.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

using FilterFn = Value (*)(Interp&, const Value&, Args&);
using TestFn = bool (*)(Interp&, const Value&, Args&);

enum class EK : uint8_t {
  Const,
  Name,
  List,
  Tuple,
  Dict,
  Getattr,
  Getitem,
  Slice,
  Call,
  Filter,
  Test,
  Neg,
  Pos,
  Not,
  BinOp,
  And,
  Or,
  Concat,
  Compare,
  Cond,
  NSRef
};
enum class BinOp : uint8_t { Add, Sub, Mul, Div, FloorDiv, Mod, Pow };
enum class CmpOp : uint8_t { Eq, Ne, Lt, Le, Gt, Ge, In, NotIn };

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  EK kind = EK::Const;
  int line = 0;
  Value value;                 // Const
  int sym = -1;                // Name, NSRef
  BinOp op = BinOp::Add;       // BinOp
  std::string name;            // Getattr / NSRef attribute, Filter / Test name
  FilterFn filter = nullptr;   // Filter
  TestFn test = nullptr;       // Test
  ExprPtr a, b, c;             // operands (see the parser for each kind)
  std::vector<ExprPtr> items;  // list/tuple items, dict key,value,..., call args, concat parts, compare operands
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args, dyn_kwargs;
  std::vector<CmpOp> cmp;  // Compare
};

enum class SK : uint8_t {
  Data,
  Print,
  If,
  For,
  Set,
  SetBlock,
  Macro,
  CallBlock,
  FilterBlock,
  With,
  Break,
  Continue,
  Scope
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  SK kind = SK::Data;
  int line = 0;
  std::string data;  // Data
  ExprPtr expr;      // Print value, If test, For iterable, Set value, CallBlock call, Set/FilterBlock filter
  ExprPtr target;    // For / Set / SetBlock target
  ExprPtr cond;      // For ... if cond
  Body body, else_body;
  bool recursive = false;
  // Macro and CallBlock signatures.
  int sym = -1;
  std::string name;
  std::vector<int> params;
  std::vector<std::string> param_names;
  std::vector<ExprPtr> defaults;  // for the last defaults.size() params
  bool uses_caller = false, uses_varargs = false, uses_kwargs = false;
  // With
  std::vector<ExprPtr> targets, values;
};

struct Program {
  std::string origin;
  Body body;
  std::vector<std::string> symbols;
  std::unordered_map<std::string, int> symbol_ids;
  int sym(std::string_view name) const {
    auto it = symbol_ids.find(std::string(name));
    return it == symbol_ids.end() ? -1 : it->second;
  }
};

// Throws gt::Error("<origin>:<line>: ...") on a syntax error.
std::unique_ptr<Program> parse(const std::string& source, const std::string& origin);

// Builtin filters and tests by name (nullptr when unknown).
FilterFn find_filter(std::string_view name);
TestFn find_test(std::string_view name);

}  // namespace gt::jinja
