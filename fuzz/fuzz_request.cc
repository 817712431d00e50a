// libFuzzer target: the server's request parsing and validation (serve/api.h). The first byte picks
// the endpoint (chat completions, completions, load or unload adapter); the rest is the HTTP body.
// A body either parses -- then a chat request's messages and template arguments are rendered
// through the real Gemma 3 chat template, as the server does -- or fails with a serve::ApiError of
// status 400 whose body is valid JSON in OpenAI's error shape. The rest of the input also goes
// through the reply splitter (generate/chat_format) in pieces, whose output is never longer than the input.
// Anything else -- a crash, a sanitizer report, another exception, a hang -- is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/generate/chat_format.h"
#include "gemmatune/serve/api.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace {
const gt::ChatTemplate& chat_template() {
  static const gt::ChatTemplate t =
      gt::ChatTemplate::from_string(gt::read_file(std::string(GT_FUZZ_ASSETS) + "/gemma3_chat_template.jinja"), "gemma3_chat_template.jinja");
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int which = data[0] % 4;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    if (which < 2) {
      const gt::serve::ApiRequest r =
          gt::serve::parse_request(body, which == 0 ? gt::serve::Endpoint::Chat : gt::serve::Endpoint::Completion);
      if (r.endpoint == gt::serve::Endpoint::Chat) {
        try {
          const std::string text = chat_template().render(r.messages, true, r.template_kwargs, "<bos>", "<end_of_turn>");
          volatile size_t sink = text.size();
          (void)sink;
        } catch (const gt::Error&) {
        }
      }
    } else {
      const gt::serve::AdapterOp op = gt::serve::parse_adapter_op(body, which == 2);
      if (!gt::serve::valid_adapter_name(op.name) || !gt::serve::valid_adapter_name(op.dir_name)) std::abort();
      if (op.dir_name.find('/') != std::string::npos || op.dir_name.rfind('.', 0) == 0) std::abort();
    }
  } catch (const gt::serve::ApiError& e) {
    if (e.status != 400) std::abort();
    const auto j = nlohmann::json::parse(e.body());  // throws (and so fails) when not JSON
    if (!j["error"]["message"].is_string()) std::abort();
  }
  // The reply splitter (generate/chat_format) only ever drops text: markers and a thought header.
  gt::ReasoningSplitter split(nullptr);
  std::string out;
  for (size_t i = 0; i < body.size(); i += 7) {
    const auto d = split.push(std::string(body.substr(i, 7)));
    out += d.reasoning + d.content;
  }
  const auto d = split.flush();
  out += d.reasoning + d.content;
  if (out.size() > body.size()) std::abort();
  return 0;
}
