// A chat session: the conversation (system prompt, user and assistant turns), rendered through the
// model's own chat template each turn, generated with KV-cached decoding and streamed. Shared by
// `gemmatune chat` and (later) the server's chat endpoint.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/generate/chat_format.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/generate/generate.h"
#include "gemmatune/model/decoder.h"

namespace gt {

struct ChatOptions {
  std::string system;          // system prompt ("" = none)
  bool thinking = false;       // Gemma 4: enable_thinking in the template
  int64_t context = 4096;      // KV cache size in tokens (prompt + reply)
  GenerateOptions generate;    // sampling, max_new_tokens, stops (the session adds the end-of-turn ids)
};

class ChatSession {
 public:
  // `dec`, `tok` and `tmpl` must outlive the session.
  ChatSession(Decoder& dec, const Tokenizer& tok, const ChatTemplate& tmpl, ChatOptions o);

  // Adds the user message, generates the assistant's reply (its answer streamed to on_text as it
  // becomes final; a Gemma 4 thought, when thinking is on, to on_reasoning if given) and adds the
  // answer to the history. The result's text is the answer (the thought in last_reasoning()). The whole conversation is re-rendered and re-prefilled each
  // turn: exactly what the template defines (a template may rewrite earlier turns, e.g. dropping
  // old thoughts). Throws when the conversation no longer fits the context.
  GenerateResult reply(const std::string& user, const std::function<void(const std::string&)>& on_text,
                       const std::function<void(const std::string&)>& on_reasoning = nullptr);
  const std::string& last_reasoning() const { return reasoning_; }
  // Forgets the conversation (the system prompt stays).
  void reset();
  const nlohmann::ordered_json& messages() const { return messages_; }
  const GenerateOptions& generate_options() const { return o_.generate; }

 private:
  Decoder& dec_;
  const Tokenizer& tok_;
  ChatFormat fmt_;
  ChatOptions o_;
  nlohmann::ordered_json messages_;
  std::string reasoning_;
};

}  // namespace gt
