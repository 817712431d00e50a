// The tokenizer and chat template of a model, wherever it is stored: a Hugging Face folder
// (tokenizer.json, chat_template.jinja / tokenizer_config.json) or a GGUF file (the vocabulary and
// tokenizer.chat_template in its metadata, model/gguf_model.h). Every command that takes
// --model goes through these.
#pragma once
#include <memory>
#include <string>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/tokenizer.h"

namespace gt {

// <folder>/tokenizer.json, or the GGUF's vocabulary; null when a folder has no tokenizer.json.
std::unique_ptr<Tokenizer> open_model_tokenizer(const std::string& model);
// `explicit_file` when given, else the folder's or the GGUF's chat template; fails naming the model
// when there is none.
ChatTemplate open_model_chat_template(const std::string& model, const std::string& explicit_file = "");

}  // namespace gt
