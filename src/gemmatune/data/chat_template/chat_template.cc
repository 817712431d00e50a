#include "gemmatune/data/chat_template/chat_template.h"

#include "gemmatune/data/chat_template/ast.h"
#include "gemmatune/data/chat_template/interp.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

ChatTemplate ChatTemplate::from_string(const std::string& source, const std::string& origin) {
  ChatTemplate t;
  t.prog_ = jinja::parse(source, origin);
  t.source_ = std::make_shared<const std::string>(source);
  return t;
}

ChatTemplate ChatTemplate::from_model_dir(const std::string& model_dir, const std::string& explicit_file) {
  if (!explicit_file.empty()) {
    GT_CHECK(file_exists(explicit_file), "chat template file ", explicit_file, " does not exist");
    return from_string(read_file(explicit_file), explicit_file);
  }
  const std::string jinja_path = model_dir + "/chat_template.jinja";
  if (file_exists(jinja_path)) return from_string(read_file(jinja_path), jinja_path);

  auto from_json_file = [&](const std::string& path, ChatTemplate* out) {
    if (!file_exists(path)) return false;
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(read_file(path));
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": invalid JSON: ", e.what());
    }
    if (!j.is_object() || !j.contains("chat_template") || j["chat_template"].is_null()) return false;
    const auto& ct = j["chat_template"];
    const std::string origin = path + ":chat_template";
    if (ct.is_string()) {
      *out = from_string(ct.get<std::string>(), origin);
      return true;
    }
    if (ct.is_array()) {
      for (const auto& e : ct) {
        if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template") &&
            e["template"].is_string()) {
          *out = from_string(e["template"].get<std::string>(), origin + "[default]");
          return true;
        }
      }
      fail(path, ": chat_template is a list without an entry named \"default\"");
    }
    fail(path, ": chat_template must be a string or a list of {name, template}, found ", ct.type_name());
  };
  ChatTemplate t;
  if (from_json_file(model_dir + "/tokenizer_config.json", &t)) return t;
  if (from_json_file(model_dir + "/chat_template.json", &t)) return t;
  fail("no chat template in ", model_dir,
       ": expected chat_template.jinja, or a \"chat_template\" in tokenizer_config.json or chat_template.json");
}

const std::string& ChatTemplate::origin() const { return prog_->origin; }

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& extra, const std::string& bos_token,
                                 const std::string& eos_token) const {
  GT_CHECK(prog_, "render() called on an empty ChatTemplate");
  const jinja::Program& prog = *prog_;
  const jinja::LimitsScope limits_scope(limits_);
  using jinja::Value;
  // Globals sit below the render variables, like jinja2's environment globals.
  auto globals = std::make_shared<jinja::Scope>();
  for (auto& [name, value] : jinja::make_globals()) {
    const int id = prog.sym(name);
    if (id >= 0) globals->set(id, std::move(value));
  }
  auto root = std::make_shared<jinja::Scope>(globals);
  auto bind = [&](const std::string& name, Value v) {
    const int id = prog.sym(name);
    if (id >= 0) root->set(id, std::move(v));  // a name the template never mentions cannot be read
  };
  if (!extra.is_object() && !extra.is_null())
    fail(prog.origin, ": extra template variables must be a JSON object, found ", extra.type_name());
  try {
    bind("messages", Value::from_json(messages));
    bind("add_generation_prompt", Value::boolean(add_generation_prompt));
    bind("bos_token", Value::str(bos_token));
    bind("eos_token", Value::str(eos_token));
    bind("tools", Value::none());
    bind("documents", Value::none());
    if (extra.is_object())
      for (auto it = extra.begin(); it != extra.end(); ++it) bind(it.key(), Value::from_json(it.value()));
  } catch (const jinja::RenderError& e) {  // a variable past the limits (e.g. JSON nested too deep)
    fail(prog.origin, ": template variables: ", e.message);
  }

  jinja::Interp in(prog);
  std::string out;
  try {
    in.exec(prog.body, root, out);
  } catch (const jinja::RenderError& e) {
    fail(prog.origin, ":", in.line, ": ", e.message);
  }
  return out;
}

}  // namespace gt
