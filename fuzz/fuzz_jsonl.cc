// libFuzzer target: arbitrary bytes as a JSONL training-data file. The bytes go through the path
// training takes (sft.cc): JsonlRecords splits them into lines, parse_conversation() turns each
// line into a Conversation -- with the default column names, and with a FieldMap and
// allow_empty_answers as the CLI's --field and data options set them -- and every accepted chat
// is rendered with the Gemma 3 and Gemma 4 chat templates, whole and as the prompt before its
// first trained turn. gt::Error is the expected way to reject a row; anything else -- a crash, a
// sanitizer report, another exception (e.g. nlohmann::json's), a hang, runaway memory -- is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/dataset.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace {

using ojson = nlohmann::ordered_json;

struct Setup {
  std::vector<gt::ChatTemplate> templates;
  std::vector<gt::ConversationOptions> options;
  Setup() {
    try {
      for (const char* f : {"gemma3_chat_template.jinja", "gemma4_chat_template.jinja"}) {
        const std::string path = std::string(GT_FUZZ_ASSETS) + "/" + f;
        templates.push_back(gt::ChatTemplate::from_string(gt::read_file(path), path));
      }
    } catch (const gt::Error& e) {
      std::fprintf(stderr, "fuzz_jsonl: cannot load the chat templates: %s\n", e.what());
      std::abort();
    }
    options.emplace_back();  // the defaults
    gt::ConversationOptions mapped;
    for (const char* spec : {"messages=conversation", "prompt=input", "completion=output", "question=instruction",
                             "answer=response", "text=content", "tools=functions"})
      mapped.fields.add(spec);
    mapped.allow_empty_answers = true;
    options.push_back(mapped);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Setup setup;
  gt::JsonlRecords records;
  records.add_text("fuzz.jsonl", std::string_view(reinterpret_cast<const char*>(data), size));
  for (size_t i = 0; i < records.size(); ++i) {
    for (const auto& opt : setup.options) {
      gt::Conversation c;
      try {
        c = gt::parse_conversation(records.line(i), opt, records.origin(i));
      } catch (const gt::Error&) {
        continue;
      }
      if (c.kind != gt::Conversation::Kind::Chat) continue;
      ojson prompt = ojson::array();
      for (size_t k = 0; k < c.first_trained && k < c.messages.size(); ++k) prompt.push_back(c.messages[k]);
      for (const auto& t : setup.templates) {
        try {
          (void)t.render(c.messages, false, c.extra, "<bos>", "<eos>");
          if (!prompt.empty()) (void)t.render(prompt, true, c.extra, "<bos>", "<eos>");
        } catch (const gt::Error&) {
        }
      }
    }
  }
  return 0;
}
