#include "gemmatune/serve/api.h"

#include <cmath>
#include <limits>

namespace gt::serve {

using json = nlohmann::ordered_json;

std::string error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_exceeded";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

ApiError::ApiError(int s, std::string m, std::string p, std::string c)
    : std::runtime_error(m), status(s), message(std::move(m)), type(error_type(s)), param(std::move(p)), code(std::move(c)) {}

std::string ApiError::body() const {
  json e = json::object();
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? json(nullptr) : json(param);
  e["code"] = code.empty() ? json(nullptr) : json(code);
  return dump(json{{"error", e}});
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse(std::string_view payload) {
  std::string s = "data: ";
  s += payload;
  s += "\n\n";
  return s;
}

int64_t invalid_utf8_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return int64_t(i);
    if (i + len > n) return int64_t(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return int64_t(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return int64_t(i);
    i += len;
  }
  return -1;
}

bool valid_adapter_name(std::string_view s) {
  if (s.empty() || s.size() > 64 || s[0] == '.') return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool bearer_matches(std::string_view header, std::string_view key) {
  constexpr std::string_view prefix = "Bearer ";
  if (header.size() != prefix.size() + key.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < header.size(); ++i) {
    const char want = i < prefix.size() ? prefix[i] : key[i - prefix.size()];
    diff |= static_cast<unsigned char>(header[i] ^ want);
  }
  return diff == 0;
}

namespace {

json parse_body(std::string_view body) {
  if (const int64_t at = invalid_utf8_at(body); at >= 0)
    throw ApiError(400, "the request body is not valid UTF-8 (byte " + std::to_string(at) + ")");
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    throw ApiError(400, std::string("malformed JSON in the request body: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return j;
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

[[noreturn]] void wrong(const std::string& field, const std::string& expected, const json& got) {
  throw ApiError(400, "'" + field + "' must be " + expected + ", got " + type_name(got), field);
}

// A present, non-null field (null counts as absent, as in OpenAI's API).
const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& v, const std::string& name, double lo, double hi) {
  if (!v.is_number()) wrong(name, "a number", v);
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi)
    throw ApiError(400, "'" + name + "' must be between " + dump(json(lo)) + " and " + dump(json(hi)) + ", got " + dump(v), name);
  return d;
}

int64_t integer(const json& v, const std::string& name, int64_t lo, int64_t hi) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(hi) || int64_t(u) < lo)
      throw ApiError(400, "'" + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + dump(v), name);
    return int64_t(u);
  }
  int64_t i;
  if (v.is_number_integer()) {
    i = v.get<int64_t>();
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15) wrong(name, "an integer", v);
    i = int64_t(d);
  } else {
    wrong(name, "an integer", v);
  }
  if (i < lo || i > hi)
    throw ApiError(400, "'" + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + dump(v), name);
  return i;
}

bool boolean(const json& v, const std::string& name) {
  if (!v.is_boolean()) wrong(name, "a boolean", v);
  return v.get<bool>();
}

std::string string(const json& v, const std::string& name) {
  if (!v.is_string()) wrong(name, "a string", v);
  return v.get<std::string>();
}

// Message content: a string, or a list of parts of which only {"type": "text", "text": ...} are supported.
std::string content_text(const json& c, const std::string& name) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) wrong(name, "a string or an array of content parts", c);
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string pn = name + "[" + std::to_string(i) + "]";
    const json& part = c[i];
    if (part.is_string()) {
      out += part.get<std::string>();
      continue;
    }
    if (!part.is_object()) wrong(pn, "a content part object", part);
    const json* t = field(part, "type");
    const std::string type = t ? string(*t, pn + ".type") : "text";
    if (type != "text") throw ApiError(400, "'" + pn + ".type' is '" + type + "': only text content parts are supported", pn + ".type");
    const json* text = field(part, "text");
    if (!text) throw ApiError(400, "'" + pn + ".text' is required", pn + ".text");
    out += string(*text, pn + ".text");
  }
  return out;
}

void parse_messages(const json& j, ApiRequest& r, const ApiLimits& lim) {
  const json* m = field(j, "messages");
  if (!m) throw ApiError(400, "'messages' is required", "messages");
  if (!m->is_array()) wrong("messages", "an array of messages", *m);
  if (m->empty()) throw ApiError(400, "'messages' must not be empty", "messages");
  if (m->size() > lim.max_messages)
    throw ApiError(400, "'messages' has " + std::to_string(m->size()) + " entries, at most " + std::to_string(lim.max_messages) + " are accepted", "messages");
  r.messages = json::array();
  for (size_t i = 0; i < m->size(); ++i) {
    const std::string name = "messages[" + std::to_string(i) + "]";
    const json& msg = (*m)[i];
    if (!msg.is_object()) wrong(name, "an object", msg);
    const json* role = field(msg, "role");
    if (!role) throw ApiError(400, "'" + name + ".role' is required", name + ".role");
    std::string rs = string(*role, name + ".role");
    if (rs == "developer") rs = "system";  // OpenAI's newer name for the system role
    if (rs != "system" && rs != "user" && rs != "assistant" && rs != "tool")
      throw ApiError(400, "'" + name + ".role' must be system, developer, user, assistant or tool, got '" + rs + "'", name + ".role");
    json out = json::object();
    out["role"] = rs;
    const json* content = field(msg, "content");
    if (content) out["content"] = content_text(*content, name + ".content");
    else if (rs != "assistant") throw ApiError(400, "'" + name + ".content' is required", name + ".content");
    else out["content"] = "";
    // Assistant tool calls and tool results keep their fields for the template.
    for (const char* k : {"tool_calls", "tool_call_id", "name"}) {
      if (const json* v = field(msg, k)) {
        if (std::string(k) == "tool_calls" && !v->is_array()) wrong(name + ".tool_calls", "an array", *v);
        if (std::string(k) != "tool_calls" && !v->is_string()) wrong(name + "." + k, "a string", *v);
        out[k] = *v;
      }
    }
    if (const json* rc = field(msg, "reasoning_content")) out["reasoning"] = string(*rc, name + ".reasoning_content");
    r.messages.push_back(std::move(out));
  }
  if (const json* kw = field(j, "chat_template_kwargs")) {
    if (!kw->is_object()) wrong("chat_template_kwargs", "an object", *kw);
    r.template_kwargs = *kw;
    if (const json* et = field(*kw, "enable_thinking")) r.enable_thinking = boolean(*et, "chat_template_kwargs.enable_thinking");
  }
  r.template_kwargs["enable_thinking"] = r.enable_thinking;
  if (const json* tools = field(j, "tools")) {
    if (!tools->is_array()) wrong("tools", "an array", *tools);
    r.template_kwargs["tools"] = *tools;
  }
}

int32_t token_id(const json& v, const std::string& name) {
  return int32_t(integer(v, name, 0, std::numeric_limits<int32_t>::max()));
}

void parse_prompt(const json& j, ApiRequest& r, const ApiLimits& lim) {
  const json* p = field(j, "prompt");
  if (!p) throw ApiError(400, "'prompt' is required", "prompt");
  const json* one = p;
  if (p->is_array() && !p->empty() && (p->front().is_string() || p->front().is_array())) {
    if (p->size() != 1) throw ApiError(400, "'prompt' holds " + std::to_string(p->size()) + " prompts; one prompt per request is supported", "prompt");
    one = &p->front();
  }
  if (one->is_string()) {
    r.prompt = one->get<std::string>();
    return;
  }
  if (!one->is_array()) wrong("prompt", "a string or an array of token ids", *one);
  if (one->empty()) throw ApiError(400, "'prompt' must not be empty", "prompt");
  if (one->size() > lim.max_prompt_ids) throw ApiError(400, "'prompt' has too many token ids", "prompt");
  r.prompt_is_ids = true;
  r.prompt_ids.reserve(one->size());
  for (size_t i = 0; i < one->size(); ++i) r.prompt_ids.push_back(token_id((*one)[i], "prompt[" + std::to_string(i) + "]"));
}

void parse_lora(const json& j, ApiRequest& r, const ApiLimits& lim) {
  const json* l = field(j, "lora");
  if (!l) return;
  if (!l->is_array()) wrong("lora", "an array of {\"name\" or \"id\", \"scale\"}", *l);
  if (l->size() > lim.max_lora) throw ApiError(400, "'lora' lists more than " + std::to_string(lim.max_lora) + " adapters", "lora");
  for (size_t i = 0; i < l->size(); ++i) {
    const std::string name = "lora[" + std::to_string(i) + "]";
    const json& e = (*l)[i];
    if (!e.is_object()) wrong(name, "an object", e);
    LoraChoice c;
    const json* n = field(e, "name");
    const json* id = field(e, "id");
    if (n) c.name = string(*n, name + ".name");
    else if (id) c.id = integer(*id, name + ".id", 0, 1 << 20);
    else throw ApiError(400, "'" + name + "' needs a 'name' or an 'id'", name);
    if (const json* s = field(e, "scale")) c.scale = float(number(*s, name + ".scale", -100, 100));
    r.lora.push_back(std::move(c));
  }
}

void parse_stop(const json& j, ApiRequest& r, const ApiLimits& lim) {
  const json* s = field(j, "stop");
  if (!s) return;
  auto add = [&](const json& v, const std::string& name) {
    std::string t = string(v, name);
    if (t.empty()) throw ApiError(400, "'" + name + "' must not be empty", name);
    if (t.size() > lim.max_stop_bytes) throw ApiError(400, "'" + name + "' is longer than " + std::to_string(lim.max_stop_bytes) + " bytes", name);
    r.stop.push_back(std::move(t));
  };
  if (s->is_string()) return add(*s, "stop");
  if (!s->is_array()) wrong("stop", "a string or an array of strings", *s);
  if (s->size() > lim.max_stop) throw ApiError(400, "'stop' has more than " + std::to_string(lim.max_stop) + " strings", "stop");
  for (size_t i = 0; i < s->size(); ++i) add((*s)[i], "stop[" + std::to_string(i) + "]");
}

}  // namespace

ApiRequest parse_request(std::string_view body, Endpoint ep, const ApiLimits& lim) {
  const json j = parse_body(body);
  ApiRequest r;
  r.endpoint = ep;
  if (const json* m = field(j, "model")) r.model = string(*m, "model");
  if (ep == Endpoint::Chat) parse_messages(j, r, lim);
  else parse_prompt(j, r, lim);
  parse_lora(j, r, lim);
  parse_stop(j, r, lim);
  if (const json* v = field(j, "stream")) r.stream = boolean(*v, "stream");
  if (const json* so = field(j, "stream_options")) {
    if (!so->is_object()) wrong("stream_options", "an object", *so);
    if (const json* iu = field(*so, "include_usage")) r.include_usage = boolean(*iu, "stream_options.include_usage");
  }
  if (const json* v = field(j, "n"); v && integer(*v, "n", 1, 1 << 20) != 1)
    throw ApiError(400, "'n' must be 1: one choice per request is supported", "n");
  if (const json* v = field(j, "best_of"); v && integer(*v, "best_of", 1, 1 << 20) != 1)
    throw ApiError(400, "'best_of' must be 1", "best_of");
  if (const json* v = field(j, "temperature")) r.temperature = float(number(*v, "temperature", 0, 2));
  if (const json* v = field(j, "top_p")) {
    r.top_p = float(number(*v, "top_p", 0, 1));
    if (r.top_p <= 0) throw ApiError(400, "'top_p' must be greater than 0", "top_p");
  }
  if (const json* v = field(j, "top_k")) r.top_k = std::max<int64_t>(0, integer(*v, "top_k", -1, 1 << 30));
  if (const json* v = field(j, "min_p")) r.min_p = float(number(*v, "min_p", 0, 1));
  if (const json* v = field(j, "repetition_penalty")) {
    r.repetition_penalty = float(number(*v, "repetition_penalty", 0, 10));
    if (r.repetition_penalty <= 0) throw ApiError(400, "'repetition_penalty' must be greater than 0", "repetition_penalty");
  }
  if (const json* v = field(j, "frequency_penalty")) r.frequency_penalty = float(number(*v, "frequency_penalty", -2, 2));
  if (const json* v = field(j, "presence_penalty")) r.presence_penalty = float(number(*v, "presence_penalty", -2, 2));
  if (const json* v = field(j, "seed"))
    r.seed = uint64_t(integer(*v, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  const int64_t max_tok = std::numeric_limits<int32_t>::max();
  if (const json* v = field(j, "max_tokens")) r.max_tokens = integer(*v, "max_tokens", 1, max_tok);
  if (const json* v = field(j, "max_completion_tokens")) r.max_tokens = integer(*v, "max_completion_tokens", 1, max_tok);
  if (ep == Endpoint::Chat) {
    // Chat: logprobs is a boolean, top_logprobs 0..20 (needs logprobs).
    const bool lp = field(j, "logprobs") ? boolean(*field(j, "logprobs"), "logprobs") : false;
    const json* tl = field(j, "top_logprobs");
    if (tl && !lp) throw ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
    if (lp) r.top_logprobs = tl ? integer(*tl, "top_logprobs", 0, 20) : 0;
  } else {
    // Completions: logprobs is the number of most likely tokens, 0..5 in OpenAI (we allow 20).
    if (const json* v = field(j, "logprobs")) r.top_logprobs = integer(*v, "logprobs", 0, 20);
    if (const json* v = field(j, "echo"); v && boolean(*v, "echo"))
      throw ApiError(400, "'echo' is not supported", "echo");
  }
  return r;
}

AdapterOp parse_adapter_op(std::string_view body, bool load) {
  const json j = parse_body(body);
  AdapterOp op;
  const json* n = field(j, "lora_name");
  if (!n) throw ApiError(400, "'lora_name' is required", "lora_name");
  op.name = string(*n, "lora_name");
  if (!valid_adapter_name(op.name))
    throw ApiError(400, "'lora_name' must be 1-64 characters of A-Z a-z 0-9 . _ - and not start with '.'", "lora_name");
  op.dir_name = op.name;
  if (load) {
    if (const json* p = field(j, "lora_path")) {
      op.dir_name = string(*p, "lora_path");
      if (!valid_adapter_name(op.dir_name))
        throw ApiError(400, "'lora_path' must name a folder directly inside the server's --adapter-dir (1-64 characters of A-Z a-z 0-9 . _ -, no '/', not starting with '.')", "lora_path");
    }
  }
  return op;
}

// ---- thinking ----



}  // namespace gt::serve
