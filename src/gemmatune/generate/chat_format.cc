#include "gemmatune/generate/chat_format.h"

#include <algorithm>
#include <stdexcept>

#include "gemmatune/util/error.h"

namespace gt {

namespace {

constexpr const char* kOpen = "<|channel>";
constexpr const char* kClose = "<channel|>";
constexpr const char* kThoughtHeader = "thought\n";

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw std::invalid_argument(field + ": " + what);
}

const char* type_name(const nlohmann::ordered_json& j) { return j.type_name(); }

void validate_content(const nlohmann::ordered_json& c, const std::string& field, bool null_ok) {
  if (c.is_string()) return;
  if (c.is_null()) {
    if (!null_ok) bad(field, "expected a string or a list of text parts, got null");
    return;
  }
  if (!c.is_array())
    bad(field, std::string("expected a string or a list of text parts, got ") + type_name(c));
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string f = field + "[" + std::to_string(i) + "]";
    const auto& p = c[i];
    if (!p.is_object()) bad(f, std::string("expected an object {\"type\": \"text\", \"text\": ...}, got ") + type_name(p));
    auto t = p.find("type");
    if (t == p.end() || !t->is_string()) bad(f + ".type", "expected a string (\"text\")");
    if (*t != "text")
      bad(f + ".type", "only text parts are supported (this engine is text-only), got \"" + t->get<std::string>() + "\"");
    auto x = p.find("text");
    if (x == p.end() || !x->is_string()) bad(f + ".text", "expected a string");
  }
}

}  // namespace

void validate_chat_messages(const nlohmann::ordered_json& messages) {
  if (!messages.is_array()) bad("messages", std::string("expected an array of messages, got ") + type_name(messages));
  if (messages.empty()) bad("messages", "expected at least one message");
  static const std::vector<std::string> roles = {"system", "developer", "user", "assistant", "tool"};
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string f = "messages[" + std::to_string(i) + "]";
    const auto& m = messages[i];
    if (!m.is_object()) bad(f, std::string("expected an object with role and content, got ") + type_name(m));
    auto r = m.find("role");
    if (r == m.end() || !r->is_string()) bad(f + ".role", "expected a string (system, developer, user, assistant or tool)");
    const std::string role = r->get<std::string>();
    if (std::find(roles.begin(), roles.end(), role) == roles.end())
      bad(f + ".role", "unknown role \"" + role + "\" (expected system, developer, user, assistant or tool)");
    auto c = m.find("content");
    const bool assistant = role == "assistant";
    if (c == m.end()) {
      if (!assistant) bad(f + ".content", "missing");
    } else {
      validate_content(*c, f + ".content", assistant);
    }
    auto tc = m.find("tool_calls");
    if (tc != m.end() && !tc->is_null()) {
      if (!assistant) bad(f + ".tool_calls", "only assistant messages carry tool calls");
      if (!tc->is_array()) bad(f + ".tool_calls", std::string("expected an array, got ") + type_name(*tc));
      for (size_t k = 0; k < tc->size(); ++k) {
        const auto& call = (*tc)[k];
        const std::string g = f + ".tool_calls[" + std::to_string(k) + "]";
        if (!call.is_object()) bad(g, "expected an object");
        auto fn = call.find("function");
        if (fn == call.end() || !fn->is_object()) bad(g + ".function", "expected an object with name and arguments");
        auto nm = fn->find("name");
        if (nm == fn->end() || !nm->is_string()) bad(g + ".function.name", "expected a string");
      }
    }
    for (const char* k : {"reasoning_content", "reasoning", "name", "tool_call_id"}) {
      auto it = m.find(k);
      if (it != m.end() && !it->is_null() && !it->is_string()) bad(f + "." + k, "expected a string");
    }
  }
}

ChatFormat::ChatFormat(const Tokenizer& tok, const ChatTemplate& tmpl, const ModelConfig& c) : tok_(tok), tmpl_(tmpl) {
  stop_ids_ = c.eos_ids;
  for (const char* t : {"<end_of_turn>", "<turn|>", "<eos>"}) {
    const int32_t id = tok.token_id(t);
    if (id >= 0 && std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end()) stop_ids_.push_back(id);
  }
  bos_ = tok.bos_id() >= 0 ? tok.token_text(tok.bos_id()) : "<bos>";
  eos_ = c.family == Family::Gemma3 ? "<end_of_turn>" : "<eos>";
  thinking_ = c.family == Family::Gemma4;
  auto sp = std::make_shared<std::set<std::string>>();
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (tok.is_special(id) && !tok.token_text(id).empty()) sp->insert(tok.token_text(id));
  // The channel markers are split on even where a tokenizer does not flag them special.
  sp->insert(kOpen);
  sp->insert(kClose);
  specials_ = std::move(sp);
}

std::string ChatFormat::render(const nlohmann::ordered_json& messages, bool enable_thinking, bool add_generation_prompt,
                               const nlohmann::ordered_json& extra) const {
  validate_chat_messages(messages);
  if (!extra.is_object()) bad("chat_template_kwargs", "expected an object");
  nlohmann::ordered_json x = extra;
  x["enable_thinking"] = enable_thinking;
  try {
    return tmpl_.render(messages, add_generation_prompt, x, bos_, eos_);
  } catch (const Error& e) {  // the template refused the conversation (raise_exception) or hit a limit
    throw std::invalid_argument(std::string("messages: the chat template refused them: ") + e.what());
  }
}

std::vector<int32_t> ChatFormat::encode(const nlohmann::ordered_json& messages, bool enable_thinking,
                                        const nlohmann::ordered_json& extra) const {
  return tok_.encode(render(messages, enable_thinking, true, extra), false);
}

ReasoningSplitter::ReasoningSplitter(const ChatFormat& f) : specials_(f.special_texts()) {}

ReasoningSplitter::ReasoningSplitter(std::shared_ptr<const std::set<std::string>> specials) {
  auto sp = std::make_shared<std::set<std::string>>(specials ? *specials : std::set<std::string>{});
  sp->insert(kOpen);
  sp->insert(kClose);
  specials_ = std::move(sp);
}

ReplyParts ReasoningSplitter::push(const std::string& text) {
  pending_ += text;
  return drain(false);
}

ReplyParts ReasoningSplitter::flush() { return drain(true); }

ReplyParts ReasoningSplitter::split(const ChatFormat& f, const std::string& text) {
  ReasoningSplitter s(f);
  ReplyParts a = s.push(text), b = s.flush();
  a.reasoning += b.reasoning;
  a.content += b.content;
  return a;
}

ReplyParts ReasoningSplitter::drain(bool final) {
  ReplyParts out;
  const auto& sp = *specials_;
  size_t i = 0;
  auto emit = [&](std::string_view s) { (in_thought_ ? out.reasoning : out.content) += s; };
  while (i < pending_.size()) {
    if (header_) {  // after <|channel>: drop the channel name line "thought\n"
      const std::string_view rest(pending_.data() + i, pending_.size() - i);
      const std::string_view h(kThoughtHeader);
      if (rest.substr(0, h.size()) == h) {
        i += h.size();
        header_ = false;
        continue;
      }
      if (!final && h.substr(0, rest.size()) == rest) break;  // may still become the header
      header_ = false;
      continue;
    }
    const char ch = pending_[i];
    if (ch == '<') {
      // A special token here? Find the longest one that matches; hold back a possible prefix.
      const std::string_view rest(pending_.data() + i, pending_.size() - i);
      auto it = sp.lower_bound(std::string(1, '<'));
      size_t match = 0;
      bool prefix = false;
      for (; it != sp.end() && !it->empty() && (*it)[0] == '<'; ++it) {
        const std::string& t = *it;
        if (rest.size() >= t.size()) {
          if (rest.compare(0, t.size(), t) == 0) match = std::max(match, t.size());
        } else if (t.compare(0, rest.size(), rest) == 0) {
          prefix = true;
        }
      }
      if (prefix && !final) break;  // wait for more text
      if (match > 0) {
        const std::string_view tok = rest.substr(0, match);
        if (tok == kOpen) {
          in_thought_ = true;
          header_ = true;
        } else if (tok == kClose) {
          in_thought_ = false;
        }
        i += match;  // every special token is dropped from the text
        continue;
      }
    }
    // Plain text up to the next '<'.
    size_t j = pending_.find('<', i + 1);
    if (j == std::string::npos) j = pending_.size();
    emit(std::string_view(pending_.data() + i, j - i));
    i = j;
  }
  pending_.erase(0, i);
  if (final) pending_.clear();
  return out;
}

}  // namespace gt
