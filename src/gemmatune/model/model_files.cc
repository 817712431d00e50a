#include "gemmatune/model/model_files.h"

#include "gemmatune/io/gguf.h"
#include "gemmatune/model/gguf_model.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

std::unique_ptr<Tokenizer> open_model_tokenizer(const std::string& model) {
  if (is_gguf_path(model)) {
    const GgufFile f(model);
    return std::make_unique<Tokenizer>(Tokenizer::from_json_text(gguf_tokenizer_json(f), model + " (GGUF vocabulary)"));
  }
  const std::string p = model + "/tokenizer.json";
  if (!file_exists(p)) return nullptr;
  return std::make_unique<Tokenizer>(Tokenizer::from_file(p));
}

ChatTemplate open_model_chat_template(const std::string& model, const std::string& explicit_file) {
  if (explicit_file.empty() && is_gguf_path(model)) {
    const GgufFile f(model);
    const std::string t = gguf_chat_template(f);
    if (t.empty()) fail("no chat template in ", model, ": the GGUF has no tokenizer.chat_template (give --chat-template FILE)");
    return ChatTemplate::from_string(t, model + ":tokenizer.chat_template");
  }
  return ChatTemplate::from_model_dir(model, explicit_file);
}

}  // namespace gt
