// The session logic shared by `gemmatune chat` and the server: OpenAI-style chat messages
// (system / developer / user / assistant / tool; string, null or a list of text parts as content)
// rendered through the model's own chat template into prompt ids, the end-of-turn stop ids, and the
// split of a Gemma 4 reply into its thought (reasoning) and its answer (content).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/model/config.h"

namespace gt {

// Checks the shape of an OpenAI `messages` array; throws std::invalid_argument naming the field
// (e.g. "messages[2].content[0].text: expected a string") and what was expected. Content parts
// other than text (images, audio) are refused: the engine is text-only.
void validate_chat_messages(const nlohmann::ordered_json& messages);

class ChatFormat {
 public:
  // `tok` and `tmpl` must outlive this object.
  ChatFormat(const Tokenizer& tok, const ChatTemplate& tmpl, const ModelConfig& c);

  // The prompt text for these messages (validated first). enable_thinking: Gemma 4's switch (other
  // templates ignore it). extra: more template variables (e.g. "tools"). Invalid messages, or a
  // conversation the template refuses (its raise_exception), throw std::invalid_argument.
  std::string render(const nlohmann::ordered_json& messages, bool enable_thinking, bool add_generation_prompt = true,
                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;
  // render() then tokenized (the template writes <bos> itself).
  std::vector<int32_t> encode(const nlohmann::ordered_json& messages, bool enable_thinking,
                              const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

  // Generation ends at these ids: the config's eos ids and the template's end-of-turn tokens.
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  const std::string& bos_token() const { return bos_; }
  const std::string& eos_token() const { return eos_; }
  // Whether replies may carry a thought channel (Gemma 4).
  bool has_thinking() const { return thinking_; }
  const Tokenizer& tokenizer() const { return tok_; }
  // The text of every special token (for ReasoningSplitter).
  const std::shared_ptr<const std::set<std::string>>& special_texts() const { return specials_; }

 private:
  const Tokenizer& tok_;
  std::shared_ptr<const std::set<std::string>> specials_;
  const ChatTemplate& tmpl_;
  std::vector<int32_t> stop_ids_;
  std::string bos_, eos_;
  bool thinking_ = false;
};

// Splits streamed reply text into reasoning and content. Feed it text decoded WITH special tokens
// (GenerateOptions::skip_special_tokens = false), since the thought channel is delimited by special
// tokens: `<|channel>thought\n … <channel|>` is reasoning, the rest content. Every other special
// token (as the tokenizer flags them) is dropped, as skip_special_tokens would. Text that may be
// the start of a marker is held back until it is known.
struct ReplyParts {
  std::string reasoning, content;
};

class ReasoningSplitter {
 public:
  explicit ReasoningSplitter(const ChatFormat& f);
  // With an explicit set of special-token texts (the channel markers are always among them).
  explicit ReasoningSplitter(std::shared_ptr<const std::set<std::string>> specials);
  ReplyParts push(const std::string& text);  // the newly final parts
  ReplyParts flush();                        // the end: what was held back
  // The whole reply at once.
  static ReplyParts split(const ChatFormat& f, const std::string& text);

 private:
  ReplyParts drain(bool final);
  std::shared_ptr<const std::set<std::string>> specials_;
  std::string pending_;
  bool in_thought_ = false;
  bool header_ = false;  // just after <|channel>: the channel name ("thought\n") is not reasoning
};

}  // namespace gt
