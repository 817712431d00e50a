// libFuzzer target: arbitrary bytes as a chat template's source. The template is parsed, then
// rendered with a few fixed conversations, with and without the generation prompt. gt::Error
// (a syntax error, raise_exception(), a type error, a limit) is the expected way to fail;
// anything else -- a crash, a sanitizer report, another exception, a hang, runaway memory -- is
// a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/util/error.h"

namespace {

using ojson = nlohmann::ordered_json;

struct Inputs {
  ojson chat;      // system, user, assistant (with reasoning and a tool call), tool, user
  ojson short_chat;  // user, assistant (content parts)
  ojson extra;     // tools and enable_thinking
  Inputs() {
    chat = ojson::parse(R"([
      {"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "What is the weather in Paris?"},
      {"role": "assistant", "content": "", "reasoning": "Call the tool.",
       "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
      {"role": "tool", "name": "get_weather", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
      {"role": "assistant", "content": "It is 21.5 \u00b0C and clear. \u2600\ufe0f"},
      {"role": "user", "content": "Thanks!\nAnd tomorrow?"}
    ])");
    short_chat = ojson::parse(R"([
      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe <this> & that."}]},
      {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}
    ])");
    extra = ojson::parse(R"({
      "enable_thinking": true,
      "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "enum": [1, 2, 3]}}, "required": ["city"]}}}]
    })");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Inputs in;
  const std::string source(reinterpret_cast<const char*>(data), size);
  gt::ChatTemplate t;
  try {
    t = gt::ChatTemplate::from_string(source, "fuzz.jinja");
  } catch (const gt::Error&) {
    return 0;
  }
  // Tighter bounds than the defaults (64 MiB strings, 50M steps per render), so that inputs which run into
  // them fail in milliseconds and the fuzzer keeps its pace; the limit checks are the same code.
  gt::ChatTemplate::Limits limits;
  limits.max_string = size_t(1) << 20;
  limits.max_items = size_t(1) << 16;
  limits.max_steps = 20'000;
  t.set_limits(limits);
  const ojson none = ojson::object();
  auto render = [&](const ojson& msgs, bool gen, const ojson& extra) {
    try {
      (void)t.render(msgs, gen, extra, "<bos>", "<eos>");
    } catch (const gt::Error&) {
    }
  };
  render(in.chat, true, in.extra);
  render(in.chat, false, none);
  render(in.short_chat, false, none);
  render(in.short_chat, true, in.extra);
  return 0;
}
