#include "gemmatune/data/dataset.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

using ojson = nlohmann::ordered_json;

namespace {

const char* const kCanonical[] = {"messages", "conversations", "prompt", "completion",
                                  "question", "answer",        "text",   "tools"};

std::string short_dump(const ojson& v, size_t max = 60) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

// Rows nested deeper than this are refused: nlohmann::json copies, compares and prints values
// recursively, so a line of a million '[' would overflow the stack. Real rows (messages, content
// parts, tool calls with JSON-schema arguments) stay below 20 levels.
constexpr size_t kMaxNesting = 200;

// The nesting depth of a JSON value, found without recursion; stops counting past `limit`.
size_t nesting_depth(const ojson& root, size_t limit) {
  std::vector<std::pair<const ojson*, size_t>> todo{{&root, 1}};
  size_t deepest = 0;
  while (!todo.empty()) {
    auto [v, d] = todo.back();
    todo.pop_back();
    if (!v->is_structured()) continue;
    deepest = std::max(deepest, d);
    if (deepest > limit) return deepest;
    for (const auto& child : *v)  // array elements or object values
      if (child.is_structured()) todo.emplace_back(&child, d + 1);
  }
  return deepest;
}

// A string member of a JSON object, or "" when it is absent or not a string.
std::string string_member(const ojson& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool is_blank(std::string_view s) {
  for (char c : s)
    if (!(c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')) return false;
  return true;
}

// The role a message names, after ShareGPT's names are mapped.
std::string role_of(const ojson& m, size_t i) {
  if (m.contains("role")) {
    if (!m["role"].is_string()) fail("message ", i, ": \"role\" must be a string, found ", short_dump(m["role"]));
    return m["role"].get<std::string>();
  }
  if (m.contains("from")) {
    if (!m["from"].is_string()) fail("message ", i, ": \"from\" must be a string, found ", short_dump(m["from"]));
    const std::string f = m["from"].get<std::string>();
    if (f == "human") return "user";
    if (f == "gpt") return "assistant";
    return f;
  }
  fail("message ", i, ": missing \"role\"");
}

// Is the content free of anything to train (no text, no non-text part)?
bool content_empty(const ojson& c) {
  if (c.is_null()) return true;
  if (c.is_string()) return is_blank(c.get_ref<const std::string&>());
  if (c.is_array()) {
    for (const auto& p : c) {
      if (!p.is_object()) return false;
      const std::string type = string_member(p, "type");
      if (type == "text") {
        if (p.contains("text") && p["text"].is_string() && !is_blank(p["text"].get_ref<const std::string&>()))
          return false;
      } else {
        return false;
      }
    }
    return true;
  }
  return false;
}

// Normalises one message in place (ShareGPT names, thinking -> reasoning, JSON-string tool
// arguments) and checks it. Throws with a message that the caller prefixes with the origin.
ojson normalise_message(const ojson& m, size_t i, const ConversationOptions& opt) {
  if (!m.is_object()) fail("message ", i, " must be a JSON object, found ", short_dump(m));
  const std::string role = role_of(m, i);
  const bool system_like = role == "system" || role == "developer";
  if (!system_like && role != "user" && role != "assistant" && role != "tool")
    fail("message ", i, " has unknown role \"", role, "\" (expected system, developer, user, assistant or tool)");
  if (system_like && i != 0)
    fail("message ", i, ": a ", role, " message is allowed only at index 0 (found at index ", i, ")");

  ojson out = ojson::object();
  out["role"] = role;
  const bool has_content = m.contains("content") || m.contains("value");
  const ojson content = m.contains("content") ? m["content"] : m.contains("value") ? m["value"] : ojson(nullptr);
  const bool has_tool_calls = m.contains("tool_calls") && m["tool_calls"].is_array() && !m["tool_calls"].empty();
  if (!content.is_null() && !content.is_string() && !content.is_array())
    fail("message ", i, " (", role, "): \"content\" must be a string or a list of parts, found ", short_dump(content));
  if (content.is_array()) {
    for (size_t j = 0; j < content.size(); ++j) {
      const ojson& p = content[j];
      if (!p.is_object()) fail("message ", i, " (", role, "): content part ", j, " must be an object, found ", short_dump(p));
      if (p.contains("type") && !p["type"].is_string())
        fail("message ", i, " (", role, "): content part ", j, ": \"type\" must be a string, found ",
             short_dump(p["type"]));
      if (string_member(p, "type") == "text" && !(p.contains("text") && p["text"].is_string()))
        fail("message ", i, " (", role, "): text part ", j, " needs a string \"text\"");
    }
  }
  if (content.is_null() && !(role == "assistant" && has_tool_calls))
    fail("message ", i, " (", role, ") has ", has_content ? "null content" : "no \"content\"");
  for (auto it = m.begin(); it != m.end(); ++it) {
    const std::string& k = it.key();
    if (k == "role" || k == "content") continue;
    if ((k == "from" && !m.contains("role")) || (k == "value" && !m.contains("content"))) continue;
    if (k == "thinking" && !m.contains("reasoning")) {
      out["reasoning"] = it.value();
      continue;
    }
    out[k] = it.value();
  }
  // Keep the key order readable: role, content, then the rest.
  ojson ordered = ojson::object();
  ordered["role"] = role;
  ordered["content"] = content;
  for (auto it = out.begin(); it != out.end(); ++it)
    if (it.key() != "role") ordered[it.key()] = it.value();

  if (ordered.contains("tool_calls") && !ordered["tool_calls"].is_null()) {
    ojson& calls = ordered["tool_calls"];
    if (!calls.is_array()) fail("message ", i, " (", role, "): \"tool_calls\" must be a list, found ", short_dump(calls));
    for (auto& c : calls) {
      if (!c.is_object()) fail("message ", i, " (", role, "): each tool call must be an object, found ", short_dump(c));
      if (c.contains("function") && c["function"].is_object() && c["function"].contains("arguments") &&
          c["function"]["arguments"].is_string()) {
        ojson parsed = ojson::parse(c["function"]["arguments"].get<std::string>(), nullptr, false);
        if (!parsed.is_discarded() && parsed.is_object()) {
          if (nesting_depth(parsed, kMaxNesting) > kMaxNesting)
            fail("message ", i, " (", role, "): tool call arguments are nested more than ", kMaxNesting,
                 " levels deep");
          c["function"]["arguments"] = std::move(parsed);
        }
      }
    }
  }
  if (role == "assistant" && !opt.allow_empty_answers && content_empty(content) && !has_tool_calls) {
    const bool has_reasoning = ordered.contains("reasoning") && ordered["reasoning"].is_string() &&
                               !is_blank(ordered["reasoning"].get_ref<const std::string&>());
    if (!has_reasoning) fail("message ", i, ": empty assistant turn (no content, no tool calls)");
  }
  return ordered;
}

ojson as_messages(const ojson& v, const std::string& field, const char* default_role) {
  if (v.is_string()) return ojson::array({ojson{{"role", default_role}, {"content", v}}});
  if (v.is_array()) return v;
  fail("\"", field, "\" must be a string or a list of messages, found ", short_dump(v));
}

Conversation to_conversation_impl(const ojson& row, const ConversationOptions& opt) {
  if (nesting_depth(row, kMaxNesting) > kMaxNesting)
    fail("the row is nested more than ", kMaxNesting, " levels deep");
  if (!row.is_object()) fail("expected a JSON object, found ", short_dump(row));
  const FieldMap& f = opt.fields;
  Conversation c;
  ojson msgs;
  auto has = [&](const char* canonical) { return row.contains(f(canonical)); };
  auto get = [&](const char* canonical) -> const ojson& { return row[f(canonical)]; };
  auto need = [&](const char* have, const char* other) {
    if (!has(other)) fail("missing field \"", f(other), "\" (a row with \"", f(have), "\" needs one)");
  };
  if (has("messages") || has("conversations")) {
    const char* key = has("messages") ? "messages" : "conversations";
    const ojson& v = get(key);
    if (!v.is_array()) fail("\"", f(key), "\" must be a list of messages, found ", short_dump(v));
    msgs = v;
  } else if (has("prompt") || has("completion")) {
    need("prompt", "completion");
    need("completion", "prompt");
    msgs = as_messages(get("prompt"), f("prompt"), "user");
    c.first_trained = msgs.size();
    for (const auto& m : as_messages(get("completion"), f("completion"), "assistant")) msgs.push_back(m);
  } else if (has("question") || has("answer")) {
    need("question", "answer");
    need("answer", "question");
    for (const char* k : {"question", "answer"})
      if (!get(k).is_string()) fail("\"", f(k), "\" must be a string, found ", short_dump(get(k)));
    msgs = ojson::array({ojson{{"role", "user"}, {"content", get("question")}},
                         ojson{{"role", "assistant"}, {"content", get("answer")}}});
  } else if (has("text")) {
    const ojson& t = get("text");
    if (!t.is_string()) fail("\"", f("text"), "\" must be a string, found ", short_dump(t));
    if (t.get_ref<const std::string&>().empty()) fail("\"", f("text"), "\" is empty");
    c.kind = Conversation::Kind::Text;
    c.text = t.get<std::string>();
    return c;
  } else {
    std::string keys;
    for (auto it = row.begin(); it != row.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
    fail("no known fields (expected \"", f("messages"), "\", \"", f("prompt"), "\"+\"", f("completion"), "\", \"",
         f("question"), "\"+\"", f("answer"), "\" or \"", f("text"), "\"; found: ", keys.empty() ? "none" : keys,
         "); map other names with --field CANONICAL=NAME");
  }
  if (msgs.empty()) fail("the conversation has no messages");
  c.messages = ojson::array();
  bool trains = false;
  for (size_t i = 0; i < msgs.size(); ++i) {
    c.messages.push_back(normalise_message(msgs[i], i, opt));
    if (i >= c.first_trained && c.messages.back()["role"] == "assistant") trains = true;
  }
  if (!trains) fail("no assistant message to train");
  if (has("tools") && !get("tools").is_null()) {
    if (!get("tools").is_array()) fail("\"", f("tools"), "\" must be a list, found ", short_dump(get("tools")));
    c.extra["tools"] = get("tools");
  }
  return c;
}

}  // namespace

const std::string& FieldMap::operator()(const std::string& canonical) const {
  static const std::map<std::string, std::string> self = [] {
    std::map<std::string, std::string> m;
    for (const char* c : kCanonical) m[c] = c;
    return m;
  }();
  auto it = names.find(canonical);
  if (it != names.end()) return it->second;
  auto s = self.find(canonical);
  if (s == self.end()) fail("internal: unknown canonical field ", canonical);
  return s->second;
}

void FieldMap::add(const std::string& spec) {
  const auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    fail("--field expects CANONICAL=NAME (e.g. messages=conversation), got '", spec, "'");
  const std::string canonical = spec.substr(0, eq);
  bool known = false;
  for (const char* k : kCanonical) known |= canonical == k;
  if (!known)
    fail("--field ", spec, ": unknown field '", canonical,
         "' (expected messages, conversations, prompt, completion, question, answer, text or tools)");
  names[canonical] = spec.substr(eq + 1);
}

Conversation to_conversation(const ojson& row, const ConversationOptions& opt, const std::string& origin) {
  try {
    Conversation c = to_conversation_impl(row, opt);
    c.origin = origin;
    return c;
  } catch (const Error& e) {
    fail(origin, ": ", e.what());
  }
}

Conversation parse_conversation(std::string_view line, const ConversationOptions& opt, const std::string& origin) {
  ojson row;
  try {
    row = ojson::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": malformed JSON: ", e.what());
  }
  return to_conversation(row, opt, origin);
}

std::vector<std::string> expand_data_paths(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  if (paths.empty()) fail("no data files given");
  for (const auto& p : paths) {
    if (is_directory(p)) {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".jsonl") found.push_back(e.path().string());
      if (found.empty()) fail("data directory ", p, " holds no .jsonl file");
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else if (file_exists(p)) {
      out.push_back(p);
    } else {
      fail("data file ", p, " does not exist");
    }
  }
  return out;
}

void JsonlRecords::add_file(const std::string& path) { add_text(path, read_file(path)); }

void JsonlRecords::add_text(const std::string& path, std::string_view body) {
  const uint32_t fi = uint32_t(files_.size());
  files_.push_back(path);
  uint32_t line_no = 0;
  for (size_t pos = 0; pos < body.size();) {
    size_t nl = body.find('\n', pos);
    if (nl == std::string::npos) nl = body.size();
    ++line_no;
    size_t end = nl;
    if (end > pos && body[end - 1] == '\r') --end;
    std::string_view line(body.data() + pos, end - pos);
    pos = nl + 1;
    if (is_blank(line)) continue;
    lines_.push_back(Line{fi, line_no, std::string(line)});
  }
}

std::string JsonlRecords::origin(size_t i) const {
  return files_[lines_[i].file] + ":" + std::to_string(lines_[i].line);
}

}  // namespace gt
