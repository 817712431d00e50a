// Recursive-descent parser following jinja2's grammar and operator precedence:
//   condexpr: or ('if' or ('else' condexpr)?)*     or: and ('or' and)*    and: not ('and' not)*
//   not: 'not' not | compare                        compare: math1 (cmpop math1)*
//   math1: concat (('+'|'-') concat)*               concat: math2 ('~' math2)*
//   math2: pow (('*'|'/'|'//'|'%') pow)*            pow: unary ('**' unary)*
//   unary: ('-'|'+') unary | primary postfix* (filter | test | call)*
#include <algorithm>

#include "gemmatune/data/chat_template/ast.h"
#include "gemmatune/data/chat_template/lexer.h"
#include "gemmatune/util/error.h"

namespace gt::jinja {
namespace {

class Parser {
 public:
  Parser(std::vector<Token> toks, Program& prog) : toks_(std::move(toks)), prog_(prog) {}

  Body parse_template() {
    Body body = subparse({});
    if (cur().type != Tok::Eof) fail("unexpected token", cur().line);
    return body;
  }

 private:
  // ---- token stream ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& look() const { return toks_[std::min(pos_ + 1, toks_.size() - 1)]; }
  const Token& next() {
    const Token& t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::Name && cur().text == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }

  [[noreturn]] void fail(const std::string& msg, int line) { gt::fail(prog_.origin, ":", line, ": ", msg); }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Data:
        return "template data / text";
      case Tok::VarBegin:
        return "begin of print statement";
      case Tok::VarEnd:
        return "end of print statement";
      case Tok::BlockBegin:
        return "begin of statement block";
      case Tok::BlockEnd:
        return "end of statement block";
      case Tok::Name:
        return t.text;
      case Tok::String:
        return "string";
      case Tok::Int:
        return "integer";
      case Tok::Float:
        return "float";
      case Tok::Op:
        return t.text;
      case Tok::Eof:
        return "end of template";
    }
    return "token";
  }

  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected token '") + op + "', got '" + describe(cur()) + "'", cur().line);
  }
  void expect(Tok type, const char* what) {
    if (cur().type != type) {
      if (cur().type == Tok::Eof) fail_eof();
      fail(std::string("expected token '") + what + "', got '" + describe(cur()) + "'", cur().line);
    }
    next();
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail("expected token 'name', got '" + describe(cur()) + "'", cur().line);
    return next().text;
  }
  void expect_name(const char* n) {
    if (!skip_name(n)) fail(std::string("expected token '") + n + "', got '" + describe(cur()) + "'", cur().line);
  }

  int intern(const std::string& name) {
    auto it = prog_.symbol_ids.find(name);
    if (it != prog_.symbol_ids.end()) return it->second;
    const int id = static_cast<int>(prog_.symbols.size());
    prog_.symbols.push_back(name);
    prog_.symbol_ids.emplace(name, id);
    return id;
  }

  static ExprPtr mk(EK kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- statements ----
  [[noreturn]] void fail_eof() {
    std::string msg = "Unexpected end of template.";
    if (!end_stack_.empty()) {
      msg += " Jinja was looking for the following tags: ";
      const auto& ends = end_stack_.back();
      for (size_t k = 0; k < ends.size(); ++k) msg += (k ? " or '" : "'") + ends[k] + "'";
      msg += ".";
    }
    if (!tag_stack_.empty()) msg += " The innermost block that needs to be closed is '" + tag_stack_.back() + "'.";
    fail(msg, cur().line);
  }

  Body subparse(const std::vector<std::string>& ends) {
    Nest nest(*this, cur().line);
    Body body;
    if (!ends.empty()) end_stack_.push_back(ends);
    while (cur().type != Tok::Eof) {
      const Token& t = cur();
      if (t.type == Tok::Data) {
        auto s = std::make_unique<Stmt>();
        s->kind = SK::Data;
        s->line = t.line;
        s->data = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.type == Tok::VarBegin) {
        next();
        auto s = std::make_unique<Stmt>();
        s->kind = SK::Print;
        s->line = cur().line;
        s->expr = parse_tuple(false, true, {}, false);
        expect(Tok::VarEnd, "end of print statement");
        body.push_back(std::move(s));
      } else if (t.type == Tok::BlockBegin) {
        next();
        if (!ends.empty() && cur().type == Tok::Name && std::find(ends.begin(), ends.end(), cur().text) != ends.end()) {
          end_stack_.pop_back();
          return body;
        }
        parse_statement(body);
        expect(Tok::BlockEnd, "end of statement block");
      } else {
        fail("unexpected '" + describe(t) + "'", t.line);
      }
    }
    if (!ends.empty()) end_stack_.pop_back();
    return body;
  }

  // Parses statements up to one of `ends`; the current token is then that end name
  // (consumed when drop_needle).
  Body parse_statements(const std::vector<std::string>& ends, bool drop_needle) {
    skip_op(":");
    expect(Tok::BlockEnd, "end of statement block");
    Body body = subparse(ends);
    if (cur().type == Tok::Eof) {
      end_stack_.push_back(ends);
      fail_eof();
    }
    if (drop_needle) next();
    return body;
  }

  void parse_statement(Body& out) {
    const Token& t = cur();
    if (t.type != Tok::Name) fail("tag name expected", t.line);
    const std::string tag = t.text;
    const int line = t.line;
    tag_stack_.push_back(tag);
    StmtPtr s;
    if (tag == "if") {
      s = parse_if();
    } else if (tag == "for") {
      s = parse_for();
    } else if (tag == "set") {
      s = parse_set();
    } else if (tag == "macro") {
      s = parse_macro();
    } else if (tag == "call") {
      s = parse_call_block();
    } else if (tag == "filter") {
      s = parse_filter_block();
    } else if (tag == "with") {
      s = parse_with();
    } else if (tag == "print") {
      next();
      s = std::make_unique<Stmt>();
      s->kind = SK::Print;
      s->line = line;
      auto tup = mk(EK::Tuple, line);
      while (cur().type != Tok::BlockEnd) {
        if (!tup->items.empty()) expect_op(",");
        tup->items.push_back(parse_expression(true));
      }
      // {% print a, b %} prints each expression.
      for (auto& e : tup->items) {
        auto p = std::make_unique<Stmt>();
        p->kind = SK::Print;
        p->line = line;
        p->expr = std::move(e);
        out.push_back(std::move(p));
      }
      tag_stack_.pop_back();
      return;
    } else if (tag == "break" || tag == "continue") {
      next();
      if (loop_depth_ == 0) fail("'" + tag + "' outside of a loop", line);
      s = std::make_unique<Stmt>();
      s->kind = tag == "break" ? SK::Break : SK::Continue;
      s->line = line;
    } else if (tag == "generation") {
      // transformers' AssistantTracker extension: renders its body unchanged.
      next();
      s = std::make_unique<Stmt>();
      s->kind = SK::Scope;
      s->line = line;
      s->body = parse_statements({"endgeneration"}, true);
    } else if (tag == "block" || tag == "extends" || tag == "include" || tag == "import" || tag == "from" ||
               tag == "autoescape") {
      fail("the '" + tag + "' tag is not supported in chat templates", line);
    } else {
      tag_stack_.pop_back();
      std::string msg = "Encountered unknown tag '" + tag + "'.";
      if (!end_stack_.empty()) {
        bool expected = false;
        for (const auto& ends : end_stack_)
          if (std::find(ends.begin(), ends.end(), tag) != ends.end()) expected = true;
        const auto& ends = end_stack_.back();
        std::string looking;
        for (size_t k = 0; k < ends.size(); ++k) looking += (k ? " or '" : "'") + ends[k] + "'";
        if (expected)
          msg += " You probably made a nesting mistake. Jinja is expecting this tag, but currently looking for " +
                 looking + ".";
        else
          msg += " Jinja was looking for the following tags: " + looking + ".";
      }
      if (!tag_stack_.empty()) msg += " The innermost block that needs to be closed is '" + tag_stack_.back() + "'.";
      fail(msg, line);
    }
    tag_stack_.pop_back();
    out.push_back(std::move(s));
  }

  StmtPtr parse_if() {
    const int line = next().line;
    auto s = std::make_unique<Stmt>();
    s->kind = SK::If;
    s->line = line;
    s->expr = parse_tuple(false, false, {}, false);
    s->body = parse_statements({"elif", "else", "endif"}, false);
    const std::string tok = next().text;
    if (tok == "elif") {
      // An elif chain is an If in the else branch; it shares the final endif.
      s->else_body.push_back(parse_if_continuation());
    } else if (tok == "else") {
      s->else_body = parse_statements({"endif"}, true);
    }
    return s;
  }

  StmtPtr parse_if_continuation() {
    auto s = std::make_unique<Stmt>();
    s->kind = SK::If;
    s->line = cur().line;
    s->expr = parse_tuple(false, false, {}, false);
    s->body = parse_statements({"elif", "else", "endif"}, false);
    const std::string tok = next().text;
    if (tok == "elif") {
      s->else_body.push_back(parse_if_continuation());
    } else if (tok == "else") {
      s->else_body = parse_statements({"endif"}, true);
    }
    return s;
  }

  StmtPtr parse_for() {
    const int line = next().line;
    auto s = std::make_unique<Stmt>();
    s->kind = SK::For;
    s->line = line;
    s->target = parse_assign_target(true, false, {"in"}, false);
    expect_name("in");
    s->expr = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) s->cond = parse_expression(true);
    s->recursive = skip_name("recursive");
    ++loop_depth_;
    s->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    if (next().text == "else") s->else_body = parse_statements({"endfor"}, true);
    return s;
  }

  StmtPtr parse_set() {
    const int line = next().line;
    auto s = std::make_unique<Stmt>();
    s->line = line;
    s->target = parse_assign_target(true, false, {}, true);
    if (skip_op("=")) {
      s->kind = SK::Set;
      s->expr = parse_tuple(false, true, {}, false);
      return s;
    }
    s->kind = SK::SetBlock;
    if (is_op("|")) s->expr = parse_filter(nullptr, false);
    s->body = parse_statements({"endset"}, true);
    return s;
  }

  void parse_signature(Stmt& s) {
    expect_op("(");
    while (!is_op(")")) {
      if (!s.params.empty()) expect_op(",");
      const std::string name = expect_name();
      s.param_names.push_back(name);
      s.params.push_back(intern(name));
      if (skip_op("=")) {
        s.defaults.push_back(parse_expression(true));
      } else if (!s.defaults.empty()) {
        fail("non-default argument follows default argument", cur().line);
      }
    }
    expect_op(")");
  }

  void scan_special_names(Stmt& s) {
    s.uses_caller = mentions(s.body, "caller");
    s.uses_varargs = mentions(s.body, "varargs");
    s.uses_kwargs = mentions(s.body, "kwargs");
  }

  StmtPtr parse_macro() {
    const int line = next().line;
    auto s = std::make_unique<Stmt>();
    s->kind = SK::Macro;
    s->line = line;
    s->name = expect_name();
    s->sym = intern(s->name);
    parse_signature(*s);
    const int saved = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_statements({"endmacro"}, true);
    loop_depth_ = saved;
    scan_special_names(*s);
    return s;
  }

  StmtPtr parse_call_block() {
    const int line = next().line;
    auto s = std::make_unique<Stmt>();
    s->kind = SK::CallBlock;
    s->line = line;
    if (is_op("(")) parse_signature(*s);
    s->expr = parse_expression(true);
    if (s->expr->kind != EK::Call) fail("expected call", line);
    s->name = "caller";
    s->body = parse_statements({"endcall"}, true);
    scan_special_names(*s);
    return s;
  }

  StmtPtr parse_filter_block() {
    const int line = next().line;
    auto s = std::make_unique<Stmt>();
    s->kind = SK::FilterBlock;
    s->line = line;
    s->expr = parse_filter(nullptr, true);
    s->body = parse_statements({"endfilter"}, true);
    return s;
  }

  StmtPtr parse_with() {
    const int line = next().line;
    auto s = std::make_unique<Stmt>();
    s->kind = SK::With;
    s->line = line;
    while (cur().type != Tok::BlockEnd) {
      if (!s->targets.empty()) expect_op(",");
      s->targets.push_back(parse_assign_target(true, false, {}, false));
      expect_op("=");
      s->values.push_back(parse_expression(true));
    }
    s->body = parse_statements({"endwith"}, true);
    return s;
  }

  ExprPtr parse_assign_target(bool with_tuple, bool name_only, const std::vector<std::string>& extra_end,
                              bool with_namespace) {
    ExprPtr target;
    const int line = cur().line;
    if (name_only) {
      target = mk(EK::Name, line);
      target->sym = intern(expect_name());
      return target;
    }
    if (with_tuple) {
      target = parse_tuple(true, true, extra_end, false, with_namespace);
    } else {
      target = parse_primary(with_namespace);
    }
    check_assignable(*target);
    return target;
  }

  void check_assignable(const Expr& e) {
    if (e.kind == EK::Name || e.kind == EK::NSRef) {
      if (e.kind == EK::Name) {
        const std::string& n = prog_.symbols[static_cast<size_t>(e.sym)];
        if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" || n == "None")
          fail("can't assign to 'const'", e.line);
      }
      return;
    }
    if (e.kind == EK::Tuple) {
      for (const auto& it : e.items) check_assignable(*it);
      return;
    }
    fail("can't assign to '" + std::string(e.kind == EK::Const ? "const" : "expression") + "'", e.line);
  }

  // ---- expressions ----
  bool is_tuple_end(const std::vector<std::string>& extra_end) const {
    const Token& t = cur();
    if (t.type == Tok::VarEnd || t.type == Tok::BlockEnd || (t.type == Tok::Op && t.text == ")")) return true;
    if (t.type == Tok::Name)
      for (const auto& e : extra_end)
        if (t.text == e) return true;
    return false;
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, const std::vector<std::string>& extra_end,
                      bool explicit_parens, bool with_namespace = false) {
    const int line = cur().line;
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      if (simplified)
        args.push_back(parse_primary(with_namespace));
      else
        args.push_back(parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) {
        if (cur().type == Tok::Eof) fail_eof();
        fail("Expected an expression, got '" + describe(cur()) + "'", cur().line);
      }
    }
    auto t = mk(EK::Tuple, line);
    t->items = std::move(args);
    return t;
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    int line = cur().line;
    ExprPtr e1 = parse_or();
    while (skip_name("if")) {
      ExprPtr e2 = parse_or();
      ExprPtr e3;
      if (skip_name("else")) e3 = parse_condexpr();
      auto c = mk(EK::Cond, line);
      c->a = std::move(e2);  // test
      c->b = std::move(e1);  // value when true
      c->c = std::move(e3);  // value when false (may be null)
      e1 = std::move(c);
      line = cur().line;
    }
    return e1;
  }

  ExprPtr parse_or() {
    int line = cur().line;
    ExprPtr left = parse_and();
    while (skip_name("or")) {
      auto n = mk(EK::Or, line);
      n->a = std::move(left);
      n->b = parse_and();
      left = std::move(n);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_and() {
    int line = cur().line;
    ExprPtr left = parse_not();
    while (skip_name("and")) {
      auto n = mk(EK::And, line);
      n->a = std::move(left);
      n->b = parse_not();
      left = std::move(n);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      const int line = next().line;
      auto n = mk(EK::Not, line);
      n->a = parse_not();
      return n;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr expr = parse_math1();
    ExprPtr cmp;
    while (true) {
      CmpOp op;
      if (is_op("==")) {
        op = CmpOp::Eq;
      } else if (is_op("!=")) {
        op = CmpOp::Ne;
      } else if (is_op("<")) {
        op = CmpOp::Lt;
      } else if (is_op("<=")) {
        op = CmpOp::Le;
      } else if (is_op(">")) {
        op = CmpOp::Gt;
      } else if (is_op(">=")) {
        op = CmpOp::Ge;
      } else if (is_name("in")) {
        op = CmpOp::In;
      } else if (is_name("not") && look().type == Tok::Name && look().text == "in") {
        next();
        op = CmpOp::NotIn;
      } else {
        break;
      }
      next();
      if (!cmp) {
        cmp = mk(EK::Compare, line);
        cmp->items.push_back(std::move(expr));
      }
      cmp->cmp.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(expr);
  }

  ExprPtr binop(BinOp op, ExprPtr a, ExprPtr b, int line) {
    auto n = mk(EK::BinOp, line);
    n->op = op;
    n->a = std::move(a);
    n->b = std::move(b);
    return n;
  }

  ExprPtr parse_math1() {
    int line = cur().line;
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const BinOp op = next().text == "+" ? BinOp::Add : BinOp::Sub;
      left = binop(op, std::move(left), parse_concat(), line);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_concat() {
    const int line = cur().line;
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto n = mk(EK::Concat, line);
    n->items.push_back(std::move(first));
    while (skip_op("~")) n->items.push_back(parse_math2());
    return n;
  }

  ExprPtr parse_math2() {
    int line = cur().line;
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string t = next().text;
      const BinOp op = t == "*" ? BinOp::Mul : t == "/" ? BinOp::Div : t == "//" ? BinOp::FloorDiv : BinOp::Mod;
      left = binop(op, std::move(left), parse_pow(), line);
      line = cur().line;
    }
    return left;
  }

  ExprPtr parse_pow() {
    int line = cur().line;
    ExprPtr left = parse_unary(true);
    while (skip_op("**")) {
      left = binop(BinOp::Pow, std::move(left), parse_unary(true), line);
      line = cur().line;
    }
    return left;
  }

  // Bounds the recursion of nested expressions and blocks, so hostile input cannot overflow the stack.
  struct Nest {
    Parser& p;
    Nest(Parser& parser, int line) : p(parser) {
      if (++p.depth_ > 256) p.fail("expression or block nesting too deep", line);
    }
    ~Nest() { --p.depth_; }
  };

  ExprPtr parse_unary(bool with_filter) {
    const int line = cur().line;
    Nest nest(*this, line);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const bool neg = next().text == "-";
      node = mk(neg ? EK::Neg : EK::Pos, line);
      node->a = parse_unary(false);
    } else {
      node = parse_primary(false);
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary(bool with_namespace) {
    const Token& t = cur();
    const int line = t.line;
    if (t.type == Tok::Name) {
      const std::string name = next().text;
      if (name == "true" || name == "True" || name == "false" || name == "False") {
        auto c = mk(EK::Const, line);
        c->value = Value::boolean(name == "true" || name == "True");
        return c;
      }
      if (name == "none" || name == "None") {
        auto c = mk(EK::Const, line);
        c->value = Value::none();
        return c;
      }
      if (with_namespace && is_op(".")) {
        next();
        auto r = mk(EK::NSRef, line);
        r->sym = intern(name);
        r->name = expect_name();
        return r;
      }
      auto n = mk(EK::Name, line);
      n->sym = intern(name);
      return n;
    }
    if (t.type == Tok::String) {
      std::string s;
      while (cur().type == Tok::String) s += next().text;  // adjacent literals concatenate
      auto c = mk(EK::Const, line);
      c->value = Value::str(std::move(s));
      return c;
    }
    if (t.type == Tok::Int || t.type == Tok::Float) {
      auto c = mk(EK::Const, line);
      c->value = t.type == Tok::Int ? Value::integer(t.ival) : Value::real(t.fval);
      next();
      return c;
    }
    if (t.type == Tok::Op && t.text == "(") {
      next();
      ExprPtr e = parse_tuple(false, true, {}, true);
      expect_op(")");
      return e;
    }
    if (t.type == Tok::Op && t.text == "[") {
      next();
      auto l = mk(EK::List, line);
      while (!is_op("]")) {
        if (!l->items.empty()) expect_op(",");
        if (is_op("]")) break;
        l->items.push_back(parse_expression(true));
      }
      expect_op("]");
      return l;
    }
    if (t.type == Tok::Op && t.text == "{") {
      next();
      auto d = mk(EK::Dict, line);
      while (!is_op("}")) {
        if (!d->items.empty()) expect_op(",");
        if (is_op("}")) break;
        d->items.push_back(parse_expression(true));
        expect_op(":");
        d->items.push_back(parse_expression(true));
      }
      expect_op("}");
      return d;
    }
    if (t.type == Tok::Eof) fail_eof();
    fail("unexpected '" + describe(t) + "'", line);
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        node = parse_filter(std::move(node), false);
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& t = next();
    const int line = t.line;
    if (t.text == ".") {
      const Token& a = cur();
      if (a.type == Tok::Name) {
        auto g = mk(EK::Getattr, line);
        g->a = std::move(node);
        g->name = next().text;
        return g;
      }
      if (a.type != Tok::Int) fail("expected name or number", a.line);
      auto g = mk(EK::Getitem, line);
      g->a = std::move(node);
      g->b = mk(EK::Const, a.line);
      g->b->value = Value::integer(a.ival);
      next();
      return g;
    }
    // '['
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    auto g = mk(EK::Getitem, line);
    g->a = std::move(node);
    if (args.size() == 1) {
      g->b = std::move(args[0]);
    } else {
      g->b = mk(EK::Tuple, line);
      g->b->items = std::move(args);
    }
    return g;
  }

  ExprPtr parse_subscribed() {
    const int line = cur().line;
    ExprPtr start;
    if (is_op(":")) {
      next();
    } else {
      ExprPtr e = parse_expression(true);
      if (!is_op(":")) return e;
      next();
      start = std::move(e);
    }
    auto s = mk(EK::Slice, line);
    s->a = std::move(start);
    if (!is_op(":") && !is_op("]") && !is_op(",")) s->b = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) s->c = parse_expression(true);
    }
    return s;
  }

  void parse_call_args(Expr& call) {
    const int line = cur().line;
    expect_op("(");
    bool require_comma = false;
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*")) {
        if (call.dyn_args || call.dyn_kwargs) fail("invalid syntax for function call expression", line);
        next();
        call.dyn_args = parse_expression(true);
      } else if (is_op("**")) {
        if (call.dyn_kwargs) fail("invalid syntax for function call expression", line);
        next();
        call.dyn_kwargs = parse_expression(true);
      } else if (cur().type == Tok::Name && look().type == Tok::Op && look().text == "=") {
        if (call.dyn_kwargs) fail("invalid syntax for function call expression", line);
        std::string key = next().text;
        next();
        call.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (call.dyn_args || call.dyn_kwargs || !call.kwargs.empty())
          fail("invalid syntax for function call expression", line);
        call.items.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr node) {
    auto c = mk(EK::Call, cur().line);
    c->a = std::move(node);
    parse_call_args(*c);
    return c;
  }

  ExprPtr parse_filter(ExprPtr node, bool start_inline) {
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      const int line = cur().line;
      std::string name = expect_name();
      while (skip_op(".")) {
        name.push_back('.');
        name += expect_name();
      }
      auto f = mk(EK::Filter, line);
      f->a = std::move(node);
      f->name = name;
      f->filter = find_filter(name);
      if (!f->filter) fail("No filter named '" + name + "'.", line);
      if (is_op("(")) parse_call_args(*f);
      node = std::move(f);
      start_inline = false;
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    const int line = next().line;
    const bool negated = skip_name("not");
    std::string name = expect_name();
    while (skip_op(".")) {
      name.push_back('.');
      name += expect_name();
    }
    auto t = mk(EK::Test, line);
    t->a = std::move(node);
    t->name = name;
    t->test = find_test(name);
    if (!t->test) fail("No test named '" + name + "'.", line);
    if (is_op("(")) {
      parse_call_args(*t);
    } else {
      const Token& c = cur();
      const bool arg_start = c.type == Tok::Name || c.type == Tok::String || c.type == Tok::Int ||
                             c.type == Tok::Float ||
                             (c.type == Tok::Op && (c.text == "(" || c.text == "[" || c.text == "{"));
      if (arg_start && !is_name("else") && !is_name("or") && !is_name("and")) {
        if (is_name("is")) fail("You cannot chain multiple tests with is", c.line);
        ExprPtr arg = parse_primary(false);
        t->items.push_back(parse_postfix(std::move(arg)));
      }
    }
    if (!negated) return t;
    auto n = mk(EK::Not, line);
    n->a = std::move(t);
    return n;
  }

  // Whether any Name node in the body refers to `name` (used for caller/varargs/kwargs).
  bool mentions(const Body& body, const char* name) {
    const int id = prog_.sym(name);
    if (id < 0) return false;
    for (const auto& s : body)
      if (mentions_stmt(*s, id)) return true;
    return false;
  }
  static bool mentions_expr(const Expr* e, int id) {
    if (!e) return false;
    if (e->kind == EK::Name && e->sym == id) return true;
    if (mentions_expr(e->a.get(), id) || mentions_expr(e->b.get(), id) || mentions_expr(e->c.get(), id) ||
        mentions_expr(e->dyn_args.get(), id) || mentions_expr(e->dyn_kwargs.get(), id))
      return true;
    for (const auto& x : e->items)
      if (mentions_expr(x.get(), id)) return true;
    for (const auto& kv : e->kwargs)
      if (mentions_expr(kv.second.get(), id)) return true;
    return false;
  }
  static bool mentions_stmt(const Stmt& s, int id) {
    if (mentions_expr(s.expr.get(), id) || mentions_expr(s.cond.get(), id)) return true;
    for (const auto& d : s.defaults)
      if (mentions_expr(d.get(), id)) return true;
    for (const auto& v : s.values)
      if (mentions_expr(v.get(), id)) return true;
    for (const auto& b : s.body)
      if (mentions_stmt(*b, id)) return true;
    for (const auto& b : s.else_body)
      if (mentions_stmt(*b, id)) return true;
    return false;
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  Program& prog_;
  std::vector<std::vector<std::string>> end_stack_;
  std::vector<std::string> tag_stack_;
  int loop_depth_ = 0;
  int depth_ = 0;
};

}  // namespace

std::unique_ptr<Program> parse(const std::string& source, const std::string& origin) {
  auto prog = std::make_unique<Program>();
  prog->origin = origin;
  std::vector<Token> toks = lex(source, origin);
  Parser p(std::move(toks), *prog);
  prog->body = p.parse_template();
  return prog;
}

}  // namespace gt::jinja
