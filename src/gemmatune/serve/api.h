// The OpenAI-compatible HTTP API's pure part: request bodies (JSON text in) parsed and validated
// into an ApiRequest, or an ApiError with the HTTP status and OpenAI's error shape; the response
// and stream-chunk bodies; Server-Sent Events framing; adapter-name checks; the API-key compare;
// the Gemma 4 thinking splitter. Nothing here touches the engine, a socket or a file, so it is
// unit-tested and fuzzed (fuzz/fuzz_request.cc) directly.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace gt::serve {

// An error answered to the client: {"error": {"message", "type", "param", "code"}} with `status`.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "", std::string code = "");
  int status;
  std::string message, type, param, code;
  std::string body() const;  // the response body
};
// OpenAI's error type for an HTTP status (400 invalid_request_error, 401 authentication_error,
// 404 not_found_error, 413 request_too_large, 429 rate_limit_exceeded, 503 service_unavailable, ...).
std::string error_type(int status);

enum class Endpoint { Chat, Completion };

struct LoraChoice {
  std::string name;  // by registry name, or
  int64_t id = -1;   // by index in the sorted adapter list (llama.cpp's `id`)
  float scale = 1.0f;
};

struct ApiRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;                 // "" = the base model
  std::vector<LoraChoice> lora;      // llama.cpp-style adapter list
  nlohmann::ordered_json messages;   // chat: validated messages (content flattened to a string)
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();  // chat_template_kwargs (+ tools)
  bool enable_thinking = false;
  std::string prompt;                // completions: prompt text, or
  std::vector<int32_t> prompt_ids;   //   token ids
  bool prompt_is_ids = false;
  bool stream = false, include_usage = false;
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f, repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f, presence_penalty = 0.0f;
  int64_t top_k = 0;                 // 0 (or -1) = off
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  int64_t max_tokens = -1;           // -1: not given (until the context ends)
  int64_t top_logprobs = -1;         // -1: no logprobs
};

// Bounds applied while parsing (the server's configuration).
struct ApiLimits {
  size_t max_messages = 1024;
  size_t max_stop = 16, max_stop_bytes = 256;
  size_t max_prompt_ids = 1 << 20;
  size_t max_lora = 8;
};

// Parses a request body of `ep`. Throws ApiError (400) for malformed JSON, invalid UTF-8, a field
// of the wrong type, a number out of range, a missing required field, an unsupported option
// (n > 1, non-text content parts, several prompts). Unknown fields are ignored.
ApiRequest parse_request(std::string_view body, Endpoint ep, const ApiLimits& lim = {});

// POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's field names): `lora_name`, and for
// load an optional `lora_path`, which must name a folder directly inside --adapter-dir (default:
// lora_name). Both are checked with valid_adapter_name.
struct AdapterOp {
  std::string name, dir_name;
};
AdapterOp parse_adapter_op(std::string_view body, bool load);

// Adapter names (and folder names under --adapter-dir): 1-64 bytes of [A-Za-z0-9._-], not starting
// with '.' (so never "." or ".."), no "/" -- so a name can never leave the adapter folder.
bool valid_adapter_name(std::string_view s);
// Byte offset of the first invalid UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated), or -1.
int64_t invalid_utf8_at(std::string_view s);
// Constant-time comparison of an Authorization header value with "Bearer <key>" (length leaks only).
bool bearer_matches(std::string_view header, std::string_view key);

// Server-Sent Events: "data: <payload>\n\n".
std::string sse(std::string_view payload);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";
// JSON text that never throws on invalid UTF-8 (replaced with U+FFFD).
std::string dump(const nlohmann::ordered_json& j);

}  // namespace gt::serve
