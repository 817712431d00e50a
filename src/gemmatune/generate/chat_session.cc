#include "gemmatune/generate/chat_session.h"

#include <algorithm>

#include "gemmatune/model/kv_cache.h"
#include "gemmatune/util/error.h"

namespace gt {

ChatSession::ChatSession(Decoder& dec, const Tokenizer& tok, const ChatTemplate& tmpl, ChatOptions o)
    : dec_(dec), tok_(tok), fmt_(tok, tmpl, dec.model().config()), o_(std::move(o)) {
  auto& stops = o_.generate.stop_ids;
  for (int32_t id : fmt_.stop_ids())
    if (std::find(stops.begin(), stops.end(), id) == stops.end()) stops.push_back(id);
  // The thought channel's markers are special tokens: decode them, the splitter drops them.
  o_.generate.skip_special_tokens = false;
  reset();
}

void ChatSession::reset() {
  messages_ = nlohmann::ordered_json::array();
  if (!o_.system.empty()) messages_.push_back({{"role", "system"}, {"content", o_.system}});
}

GenerateResult ChatSession::reply(const std::string& user, const std::function<void(const std::string&)>& on_text,
                                  const std::function<void(const std::string&)>& on_reasoning) {
  messages_.push_back({{"role", "user"}, {"content", user}});
  std::vector<int32_t> ids;
  try {
    ids = tok_.encode(fmt_.render(messages_, o_.thinking), false);
  } catch (...) {
    messages_.erase(messages_.end() - 1);
    throw;
  }
  const int64_t context = o_.context;
  if (int64_t(ids.size()) + 1 >= context) {
    messages_.erase(messages_.end() - 1);
    fail("chat: the conversation (", ids.size(), " tokens) exceeds --context ", context);
  }
  KvCache cache(dec_.model(), context);
  GenerateOptions turn = o_.generate;
  turn.max_new_tokens = std::min<int64_t>(o_.generate.max_new_tokens, context - int64_t(ids.size()));
  ReasoningSplitter split(fmt_);
  std::string content;
  reasoning_.clear();
  auto deliver = [&](const ReplyParts& p) {
    if (!p.reasoning.empty()) {
      reasoning_ += p.reasoning;
      if (on_reasoning) on_reasoning(p.reasoning);
    }
    if (!p.content.empty()) {
      content += p.content;
      if (on_text) on_text(p.content);
    }
  };
  GenerateResult r = generate(dec_, cache, &tok_, ids, turn, [&](const std::string& s) { deliver(split.push(s)); });
  deliver(split.flush());
  r.text = content;
  messages_.push_back({{"role", "assistant"}, {"content", r.text}});
  return r;
}

}  // namespace gt
