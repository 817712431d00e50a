#include "gemmatune/data/chat_template/interp.h"

#include <algorithm>

#include "gemmatune/data/chat_template/unicode.h"

namespace gt::jinja {

Interp::~Interp() {
  for (auto& m : macros) m->closure.reset();
  for (auto& l : loops) l->scope.reset();
  for (auto& n : namespaces) n->attrs.clear();
}

// ---------------------------------------------------------------- statements

Interp::Flow Interp::exec(const Body& body, const ScopePtr& scope, std::string& out) {
  for (const auto& sp : body) {
    const Stmt& s = *sp;
    line = s.line;
    switch (s.kind) {
      case SK::Data:
        out += s.data;
        check_output(out);
        break;
      case SK::Print: {
        const Value v = eval(*s.expr, scope);
        append_str(out, v);
        check_output(out);
        break;
      }
      case SK::If: {
        const bool t = truthy(eval(*s.expr, scope));
        const Flow f = exec(t ? s.body : s.else_body, scope, out);
        if (f != kNormal) return f;
        break;
      }
      case SK::For: {
        const Value iterable = eval(*s.expr, scope);
        if (iterable.is_none()) raise("'NoneType' object is not iterable");
        run_for(s, iterate(iterable), scope, out, 1);
        break;
      }
      case SK::Set: {
        const Value v = eval(*s.expr, scope);
        line = s.line;
        assign(*s.target, v, scope);
        break;
      }
      case SK::SetBlock: {
        std::string buf;
        exec(s.body, std::make_shared<Scope>(scope), buf);
        line = s.line;
        Value v = Value::str(std::move(buf));
        if (s.expr) v = apply_filter(*s.expr, scope, &v);
        assign(*s.target, v, scope);
        break;
      }
      case SK::Macro:
        define_macro(s, scope);
        break;
      case SK::CallBlock: {
        auto caller = std::make_shared<MacroObj>();
        caller->name = "caller";
        caller->node = &s;
        caller->closure = scope;
        macros.push_back(caller);
        const Expr& call = *s.expr;
        const Value callee = eval(*call.a, scope);
        Args args;
        eval_args(call, scope, args);
        args.kw.emplace_back("caller", Value::object(Value::kCallable, caller));
        line = s.line;
        append_str(out, this->call(callee, args));
        check_output(out);
        break;
      }
      case SK::FilterBlock: {
        std::string buf;
        exec(s.body, std::make_shared<Scope>(scope), buf);
        line = s.line;
        const Value in = Value::str(std::move(buf));
        append_str(out, apply_filter(*s.expr, scope, &in));
        check_output(out);
        break;
      }
      case SK::With: {
        auto inner = std::make_shared<Scope>(scope);
        for (size_t k = 0; k < s.targets.size(); ++k) assign(*s.targets[k], eval(*s.values[k], scope), inner);
        const Flow f = exec(s.body, inner, out);
        if (f != kNormal) return f;
        break;
      }
      case SK::Scope: {
        const Flow f = exec(s.body, scope, out);
        if (f != kNormal) return f;
        break;
      }
      case SK::Break:
        return kBreak;
      case SK::Continue:
        return kContinue;
    }
  }
  return kNormal;
}

void Interp::run_for(const Stmt& s, std::vector<Value> items, const ScopePtr& scope, std::string& out, int depth) {
  if (s.cond) {
    // `for x in xs if cond`: filter first; loop.length counts the kept items.
    std::vector<Value> kept;
    for (auto& it : items) {
      step();
      auto fs = std::make_shared<Scope>(scope);
      assign(*s.target, it, fs);
      if (truthy(eval(*s.cond, fs))) kept.push_back(std::move(it));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    if (!s.else_body.empty()) exec(s.else_body, std::make_shared<Scope>(scope), out);
    return;
  }
  std::shared_ptr<LoopObj> loop;
  auto shared_items = std::make_shared<const std::vector<Value>>(std::move(items));
  if (loop_sym >= 0) {
    loop = std::make_shared<LoopObj>();
    loop->name = "loop";
    loop->items = shared_items;
    loop->depth = depth;
    loop->node = &s;
    loop->scope = scope;
    loops.push_back(loop);
  }
  const Value loop_value = loop ? Value::object(Value::kLoop, loop) : Value();
  const auto& list = *shared_items;
  for (size_t k = 0; k < list.size(); ++k) {
    step();
    auto it_scope = std::make_shared<Scope>(scope);
    if (loop) {
      loop->index0 = static_cast<int64_t>(k);
      it_scope->set(loop_sym, loop_value);
    }
    line = s.line;
    assign(*s.target, list[k], it_scope);
    const Flow f = exec(s.body, it_scope, out);
    if (f == kBreak) break;
  }
}

void Interp::assign(const Expr& target, const Value& v, const ScopePtr& scope) {
  switch (target.kind) {
    case EK::Name:
      scope->set(target.sym, v);
      return;
    case EK::NSRef: {
      const Value* ns = scope->find(target.sym);
      if (!ns || !ns->is_namespace()) raise("cannot assign attribute on non-namespace object");
      ns->as_namespace().set(target.name, v);
      return;
    }
    case EK::Tuple: {
      const std::vector<Value> vals = iterate(v);
      if (vals.size() < target.items.size())
        raise("not enough values to unpack (expected " + std::to_string(target.items.size()) + ", got " +
              std::to_string(vals.size()) + ")");
      if (vals.size() > target.items.size())
        raise("too many values to unpack (expected " + std::to_string(target.items.size()) + ")");
      for (size_t k = 0; k < vals.size(); ++k) assign(*target.items[k], vals[k], scope);
      return;
    }
    default:
      raise("can't assign to this expression");
  }
}

void Interp::define_macro(const Stmt& s, const ScopePtr& scope) {
  auto m = std::make_shared<MacroObj>();
  m->name = s.name;
  m->node = &s;
  m->closure = scope;
  macros.push_back(m);
  scope->set(s.sym, Value::object(Value::kCallable, m));
}

Value MacroObj::call(Interp& in, Args& args) {
  DepthGuard guard(in.depth);
  const Stmt& m = *node;
  auto s = std::make_shared<Scope>(closure);
  const size_t np = m.params.size();
  std::vector<char> bound(np, 0);
  std::vector<Value> extra;
  for (size_t k = 0; k < args.pos.size(); ++k) {
    if (k < np) {
      s->set(m.params[k], args.pos[k]);
      bound[k] = 1;
    } else {
      extra.push_back(args.pos[k]);
    }
  }
  if (!extra.empty() && !m.uses_varargs)
    raise("macro '" + name + "' takes not more than " + std::to_string(np) + " argument(s)");
  Value kwargs = Value::dict();
  Value caller;
  bool have_caller = false;
  for (auto& kv : args.kw) {
    auto it = std::find(m.param_names.begin(), m.param_names.end(), kv.first);
    if (it != m.param_names.end()) {
      const size_t idx = static_cast<size_t>(it - m.param_names.begin());
      if (bound[idx]) raise("macro '" + name + "' got multiple values for argument '" + kv.first + "'");
      s->set(m.params[idx], kv.second);
      bound[idx] = 1;
    } else if (kv.first == "caller" && m.uses_caller) {
      caller = kv.second;
      have_caller = true;
    } else if (m.uses_kwargs) {
      kwargs.as_dict().set(Value::str(kv.first), kv.second);
    } else {
      raise("macro '" + name + "' takes no keyword argument '" + kv.first + "'");
    }
  }
  const size_t first_default = np - m.defaults.size();
  for (size_t k = 0; k < np; ++k) {
    if (bound[k]) continue;
    if (k >= first_default) {
      s->set(m.params[k], in.eval(*m.defaults[k - first_default], s));
    } else {
      s->set(m.params[k], Value::undefined("parameter '" + m.param_names[k] + "' was not provided"));
    }
  }
  if (m.uses_varargs) s->set(in.prog.sym("varargs"), Value::tuple(std::move(extra)));
  if (m.uses_kwargs) s->set(in.prog.sym("kwargs"), kwargs);
  if (m.uses_caller) s->set(in.prog.sym("caller"), have_caller ? caller : Value::undefined("No caller defined"));
  std::string out;
  const int saved = in.line;
  in.exec(m.body, s, out);
  in.line = saved;
  return Value::str(std::move(out));
}

Value LoopObj::call(Interp& in, Args& args) {
  if (!node->recursive) raise("Tried to call non recursive loop.  Maybe you forgot the 'recursive' modifier.");
  if (args.pos.size() != 1 || !args.kw.empty()) raise("loop() takes exactly one argument");
  DepthGuard guard(in.depth);
  std::string out;
  const int saved = in.line;
  in.run_for(*node, iterate(args.pos[0]), scope, out, depth + 1);
  in.line = saved;
  return Value::str(std::move(out));
}

Value BoundMethod::call(Interp& in, Args& args) { return call_method(in, self, name, args); }

// ---------------------------------------------------------------- expressions

void Interp::eval_args(const Expr& e, const ScopePtr& scope, Args& args) {
  args.pos.reserve(e.items.size());
  for (const auto& a : e.items) args.pos.push_back(eval(*a, scope));
  if (e.dyn_args) {
    for (auto& v : iterate(eval(*e.dyn_args, scope))) args.pos.push_back(std::move(v));
  }
  for (const auto& kv : e.kwargs) args.kw.emplace_back(kv.first, eval(*kv.second, scope));
  if (e.dyn_kwargs) {
    const Value d = eval(*e.dyn_kwargs, scope);
    if (!d.is_dict()) raise("argument after ** must be a mapping, not " + type_name(d));
    for (const auto& kv : d.as_dict().items) {
      if (!kv.first.is_string()) raise("keywords must be strings");
      args.kw.emplace_back(kv.first.as_str(), kv.second);
    }
  }
}

Value Interp::apply_filter(const Expr& f, const ScopePtr& scope, const Value* input) {
  Value v;
  if (f.a) {
    v = f.a->kind == EK::Filter && input ? apply_filter(*f.a, scope, input) : eval(*f.a, scope);
  } else if (input) {
    v = *input;
  }
  Args args;
  eval_args(f, scope, args);
  line = f.line;
  return f.filter(*this, v, args);
}

Value Interp::call(const Value& callee, Args& args) {
  step();
  if (callee.is_callable() || callee.is_loop()) return as_callable(callee).call(*this, args);
  if (callee.is_undefined()) callee.fail_undefined();
  raise("'" + type_name(callee) + "' object is not callable");
}

Value Interp::call_filter(const std::string& name, const Value& v, Args& args) {
  FilterFn f = find_filter(name);
  if (!f) raise("No filter named '" + name + "'.");
  return f(*this, v, args);
}

bool Interp::call_test(const std::string& name, const Value& v, Args& args) {
  TestFn t = find_test(name);
  if (!t) raise("No test named '" + name + "'.");
  return t(*this, v, args);
}

Value Interp::getattr(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::kUndefined:
      obj.fail_undefined();
    case Value::kDict: {
      if (auto m = lookup_method(obj, name)) return *m;
      if (const Value* v = obj.as_dict().find(std::string_view(name))) return *v;
      break;
    }
    case Value::kNamespace:
      if (const Value* v = obj.as_namespace().find(name)) return *v;
      break;
    case Value::kLoop:
      return loop_attr(obj, name);
    case Value::kBool:
    case Value::kInt:
    case Value::kFloat:
      if (name == "real") return obj.is_float() ? obj : Value::integer(obj.as_int());
      if (name == "imag") return obj.is_float() ? Value::real(0.0) : Value::integer(0);
      break;
    default:
      if (auto m = lookup_method(obj, name)) return *m;
      break;
  }
  return Value::undefined("'" + object_type_repr(obj) + "' has no attribute '" + name + "'");
}

Value Interp::getitem(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::kUndefined:
      obj.fail_undefined();
    case Value::kDict:
      if (hashable(key)) {
        if (const Value* v = obj.as_dict().find(key)) return *v;
      }
      break;
    case Value::kList:
      if (key.is_integral() && !obj.as_list().view) {
        const auto& items = obj.as_list().items;
        int64_t i = key.as_int();
        const auto n = static_cast<int64_t>(items.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return items[static_cast<size_t>(i)];
      }
      break;
    case Value::kString:
      if (key.is_integral()) {
        const std::string& s = obj.as_str();
        int64_t i = key.as_int();
        if (uni::is_ascii(s)) {
          const auto n = static_cast<int64_t>(s.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return Value::str(std::string(1, s[static_cast<size_t>(i)]));
        } else {
          const auto cps = uni::code_points(s);
          const auto n = static_cast<int64_t>(cps.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return Value::str(uni::encode(cps, static_cast<size_t>(i), static_cast<size_t>(i) + 1));
        }
      }
      break;
    case Value::kNamespace:
    case Value::kLoop:
      if (key.is_string()) return getattr(obj, key.as_str());
      break;
    default:
      break;
  }
  // jinja2 falls back to the attribute (e.g. message['get'] is the dict method).
  if (key.is_string()) return getattr(obj, key.as_str());
  return Value::undefined(object_type_repr(obj) + " has no element " + repr(key));
}

namespace {

// Python's slice.indices() for a sequence of length n.
void slice_indices(const Value& start, const Value& stop, const Value& step, int64_t n, std::vector<int64_t>& idx) {
  auto want_index = [](const Value& v) {
    if (!v.is_integral()) raise("slice indices must be integers or None or have an __index__ method");
    return v.as_int();
  };
  int64_t st = 1;
  if (!step.is_none() && !step.is_undefined()) st = want_index(step);
  if (st == 0) raise("slice step cannot be zero");
  auto adjust = [&](const Value& v, int64_t def) -> int64_t {
    if (v.is_none() || v.is_undefined()) return def;
    int64_t x = want_index(v);
    if (x < 0) {
      x += n;
      if (x < 0) x = st < 0 ? -1 : 0;
    } else if (x >= n) {
      x = st < 0 ? n - 1 : n;
    }
    return x;
  };
  const int64_t b = adjust(start, st < 0 ? n - 1 : 0);
  const int64_t e = adjust(stop, st < 0 ? -1 : n);
  // The index never steps past the end: b + st can overflow for a huge step.
  if (st > 0) {
    for (int64_t i = b; i < e; i = e - i > st ? i + st : e) idx.push_back(i);
  } else {
    for (int64_t i = b; i > e; i = i - e > -(st + 1) ? i + st : e) idx.push_back(i);
  }
}

}  // namespace

Value Interp::slice(const Value& obj, const Expr& sl, const ScopePtr& scope) {
  const Value start = sl.a ? eval(*sl.a, scope) : Value::none();
  const Value stop = sl.b ? eval(*sl.b, scope) : Value::none();
  const Value step = sl.c ? eval(*sl.c, scope) : Value::none();
  if (obj.is_undefined()) obj.fail_undefined();
  for (const Value* v : {&start, &stop, &step}) {
    if (!v->is_none() && !v->is_integral()) {
      return Value::undefined(object_type_repr(obj) + " has no element slice");
    }
  }
  if (obj.is_list() && !obj.as_list().view) {
    const auto& items = obj.as_list().items;
    std::vector<int64_t> idx;
    slice_indices(start, stop, step, static_cast<int64_t>(items.size()), idx);
    std::vector<Value> out;
    out.reserve(idx.size());
    for (int64_t i : idx) out.push_back(items[static_cast<size_t>(i)]);
    return Value::list(std::move(out), obj.is_tuple());
  }
  if (obj.is_string()) {
    const std::string& s = obj.as_str();
    std::vector<int64_t> idx;
    if (uni::is_ascii(s)) {
      slice_indices(start, stop, step, static_cast<int64_t>(s.size()), idx);
      std::string out;
      out.reserve(idx.size());
      for (int64_t i : idx) out.push_back(s[static_cast<size_t>(i)]);
      return Value::str(std::move(out));
    }
    const auto cps = uni::code_points(s);
    slice_indices(start, stop, step, static_cast<int64_t>(cps.size()), idx);
    std::string out;
    for (int64_t i : idx) uni::append(out, cps[static_cast<size_t>(i)]);
    return Value::str(std::move(out));
  }
  return Value::undefined(object_type_repr(obj) + " has no element slice");
}

Value Interp::compare(const Expr& e, const ScopePtr& scope) {
  Value left = eval(*e.items[0], scope);
  for (size_t k = 0; k < e.cmp.size(); ++k) {
    Value right = eval(*e.items[k + 1], scope);
    line = e.line;
    bool r = false;
    switch (e.cmp[k]) {
      case CmpOp::Eq:
        r = equal(left, right);
        break;
      case CmpOp::Ne:
        r = !equal(left, right);
        break;
      case CmpOp::Lt:
        check_orderable(left, right, "<");
        r = less(left, right);
        break;
      case CmpOp::Le:
        check_orderable(left, right, "<=");
        r = !less(right, left);
        break;
      case CmpOp::Gt:
        check_orderable(left, right, ">");
        r = less(right, left);
        break;
      case CmpOp::Ge:
        check_orderable(left, right, ">=");
        r = !less(left, right);
        break;
      case CmpOp::In:
        r = contains(right, left);
        break;
      case CmpOp::NotIn:
        r = !contains(right, left);
        break;
    }
    if (!r) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

Value Interp::eval(const Expr& e, const ScopePtr& scope) {
  switch (e.kind) {
    case EK::Const:
      return e.value;
    case EK::Name: {
      if (const Value* v = scope->find(e.sym)) return *v;
      return Value::undefined("'" + prog.symbols[static_cast<size_t>(e.sym)] + "' is undefined");
    }
    case EK::List:
    case EK::Tuple: {
      std::vector<Value> items;
      items.reserve(e.items.size());
      for (const auto& x : e.items) items.push_back(eval(*x, scope));
      return Value::list(std::move(items), e.kind == EK::Tuple);
    }
    case EK::Dict: {
      Value d = Value::dict();
      for (size_t k = 0; k + 1 < e.items.size(); k += 2) {
        Value key = eval(*e.items[k], scope);
        if (!hashable(key)) {
          line = e.line;
          raise("unhashable type: '" + type_name(key) + "'");
        }
        d.as_dict().set(key, eval(*e.items[k + 1], scope));
      }
      return d;
    }
    case EK::Getattr: {
      const Value obj = eval(*e.a, scope);
      line = e.line;
      return getattr(obj, e.name);
    }
    case EK::Getitem: {
      const Value obj = eval(*e.a, scope);
      if (e.b->kind == EK::Slice) {
        line = e.line;
        return slice(obj, *e.b, scope);
      }
      const Value key = eval(*e.b, scope);
      line = e.line;
      return getitem(obj, key);
    }
    case EK::Slice:
      raise("slice outside of a subscript");
    case EK::Call: {
      const Value callee = eval(*e.a, scope);
      Args args;
      eval_args(e, scope, args);
      line = e.line;
      return call(callee, args);
    }
    case EK::Filter:
      return apply_filter(e, scope, nullptr);
    case EK::Test: {
      const Value v = eval(*e.a, scope);
      Args args;
      eval_args(e, scope, args);
      line = e.line;
      return Value::boolean(e.test(*this, v, args));
    }
    case EK::Neg: {
      const Value v = eval(*e.a, scope);
      line = e.line;
      return unary_minus(v);
    }
    case EK::Pos: {
      const Value v = eval(*e.a, scope);
      line = e.line;
      return unary_plus(v);
    }
    case EK::Not:
      return Value::boolean(!truthy(eval(*e.a, scope)));
    case EK::BinOp: {
      const Value a = eval(*e.a, scope);
      const Value b = eval(*e.b, scope);
      line = e.line;
      return binary_op(e.op, a, b);
    }
    case EK::And: {
      Value a = eval(*e.a, scope);
      if (!truthy(a)) return a;
      return eval(*e.b, scope);
    }
    case EK::Or: {
      Value a = eval(*e.a, scope);
      if (truthy(a)) return a;
      return eval(*e.b, scope);
    }
    case EK::Concat: {
      std::string s;
      for (const auto& x : e.items) append_str(s, eval(*x, scope));
      return Value::str(std::move(s));
    }
    case EK::Compare:
      return compare(e, scope);
    case EK::Cond: {
      if (truthy(eval(*e.a, scope))) return eval(*e.b, scope);
      if (e.c) return eval(*e.c, scope);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                              " evaluated to false and no else section was defined.");
    }
    case EK::NSRef:
      raise("namespace reference outside of an assignment");
  }
  return Value();
}

}  // namespace gt::jinja
