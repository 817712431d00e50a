#include "gemmatune/generate/chat_session.h"

#include <algorithm>

#include "gemmatune/model/kv_cache.h"
#include "gemmatune/util/error.h"

namespace gt {

ChatSession::ChatSession(Decoder& dec, const Tokenizer& tok, const ChatTemplate& tmpl, ChatOptions o)
    : dec_(dec), tok_(tok), tmpl_(tmpl), o_(std::move(o)) {
  const ModelConfig& c = dec.model().config();
  auto& stops = o_.generate.stop_ids;
  stops = c.eos_ids;
  for (const char* t : {"<end_of_turn>", "<turn|>", "<eos>"}) {
    const int32_t id = tok.token_id(t);
    if (id >= 0 && std::find(stops.begin(), stops.end(), id) == stops.end()) stops.push_back(id);
  }
  bos_ = tok.bos_id() >= 0 ? tok.token_text(tok.bos_id()) : "<bos>";
  eos_ = c.family == Family::Gemma3 ? "<end_of_turn>" : "<eos>";
  extra_ = nlohmann::ordered_json::object();
  extra_["enable_thinking"] = o_.thinking;
  reset();
}

void ChatSession::reset() {
  messages_ = nlohmann::ordered_json::array();
  if (!o_.system.empty()) messages_.push_back({{"role", "system"}, {"content", o_.system}});
}

GenerateResult ChatSession::reply(const std::string& user, const std::function<void(const std::string&)>& on_text) {
  messages_.push_back({{"role", "user"}, {"content", user}});
  const std::string text = tmpl_.render(messages_, true, extra_, bos_, eos_);
  std::vector<int32_t> ids = tok_.encode(text, false);
  const int64_t context = o_.context;
  if (int64_t(ids.size()) + 1 >= context) fail("chat: the conversation (", ids.size(), " tokens) exceeds --context ", context);
  KvCache cache(dec_.model(), context);
  GenerateOptions turn = o_.generate;
  turn.max_new_tokens = std::min<int64_t>(o_.generate.max_new_tokens, context - int64_t(ids.size()));
  GenerateResult r = generate(dec_, cache, &tok_, ids, turn, on_text);
  messages_.push_back({{"role", "assistant"}, {"content", r.text}});
  return r;
}

}  // namespace gt
