// Hugging Face chat templates (Jinja), rendered byte-for-byte like transformers'
// apply_chat_template(..., tokenize=False): jinja2 3.1 ImmutableSandboxedEnvironment with
// trim_blocks, lstrip_blocks, loopcontrols, raise_exception(), strftime_now() and the
// json.dumps(ensure_ascii=False) tojson filter, and Python's printing semantics.
//
// The template is parsed once (syntax errors name the origin and line); render() walks the
// parsed tree and may be called any number of times, from several threads at once.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "gemmatune/data/chat_template/limits.h"

namespace gt {

namespace jinja {
struct Program;
}

class ChatTemplate {
 public:
  static ChatTemplate from_string(const std::string& source, const std::string& origin /* file name for errors */);
  // Template source in this order: explicit_file if non-empty; <model_dir>/chat_template.jinja;
  // <model_dir>/tokenizer_config.json "chat_template" (a string, or a list of {name, template}:
  // take "default"); <model_dir>/chat_template.json "chat_template".
  static ChatTemplate from_model_dir(const std::string& model_dir, const std::string& explicit_file = "");

  // messages: JSON array of message objects; extra: object of extra variables (tools,
  // enable_thinking, ...). Variables seen by the template: messages, add_generation_prompt,
  // bos_token, eos_token, tools (extra["tools"] or none), documents (none unless in extra),
  // and every key of extra. Throws gt::Error("<origin>:<line>: <message>") when rendering fails,
  // including the template's own raise_exception(message).
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra, const std::string& bos_token,
                     const std::string& eos_token) const;

  // Bounds on each render (output and string size, list size, loop iterations and calls, value
  // nesting); passing one fails the render with a gt::Error. The defaults suit every real template.
  using Limits = jinja::Limits;
  void set_limits(const Limits& l) { limits_ = l; }
  const Limits& limits() const { return limits_; }

  const std::string& origin() const;
  const std::string& source() const { return *source_; }

 private:
  std::shared_ptr<const jinja::Program> prog_;
  std::shared_ptr<const std::string> source_;
  Limits limits_;
};

}  // namespace gt
