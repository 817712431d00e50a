// gemmatune template render: renders chat templates the way transformers does.
//   --cases FILE.jsonl --assets DIR   one {"id", "got"} JSON line per case (chat_render.jsonl format)
//   --template FILE | --model DIR, --messages FILE.json [--extra JSON] [--add-generation-prompt]
//                                     prints one rendered conversation
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/model/model_files.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt::cli {
namespace {

using ojson = nlohmann::ordered_json;

int render_cases(const std::string& cases, const std::string& assets) {
  std::ifstream in(cases, std::ios::binary);
  GT_CHECK(in, "cannot open ", cases);
  std::map<std::string, std::shared_ptr<ChatTemplate>> templates;
  std::map<std::string, std::string> template_errors;
  std::string line;
  size_t lineno = 0, n = 0, errors = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    ojson row;
    try {
      row = ojson::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(cases, ":", lineno, ": invalid JSON: ", e.what());
    }
    ojson out;
    out["id"] = row.contains("id") ? row["id"] : ojson(nullptr);
    print_case(out, [&]() -> ojson {
      const std::string name = row.value("template", std::string());
      GT_CHECK(!name.empty(), cases, ":", lineno, ": missing \"template\"");
      if (!templates.count(name) && !template_errors.count(name)) {
        try {
          templates[name] =
              std::make_shared<ChatTemplate>(ChatTemplate::from_string(read_file(assets + "/" + name), name));
        } catch (const Error& e) {
          template_errors[name] = e.what();
        }
      }
      if (template_errors.count(name)) fail(template_errors[name]);
      const ojson empty = ojson::object();
      return ojson(templates[name]->render(
          row.contains("messages") ? row["messages"] : ojson::array(), row.value("add_generation_prompt", false),
          row.contains("extra") ? row["extra"] : empty, row.value("bos_token", std::string("<bos>")),
          row.value("eos_token", std::string("<eos>"))));
    }, n, errors);
  }
  std::fflush(stdout);
  std::fprintf(stderr, "template render: %zu cases, %zu rendered, %zu errors\n", n, n - errors, errors);
  return 0;
}

int render_one(const std::string& tmpl, const std::string& model, const std::string& messages_file,
               const std::string& extra_json, bool add_generation_prompt, const std::string& bos,
               const std::string& eos) {
  const ChatTemplate t = open_model_chat_template(model, tmpl);
  ojson messages, extra = ojson::object();
  try {
    messages = ojson::parse(read_file(messages_file));
    if (!extra_json.empty()) extra = ojson::parse(extra_json);
  } catch (const nlohmann::json::exception& e) {
    fail("invalid JSON: ", e.what());
  }
  if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];
  const std::string text = t.render(messages, add_generation_prompt, extra, bos, eos);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "\ntemplate render: %zu bytes from %s\n", text.size(), t.origin().c_str());
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 1 || std::strcmp(argv[0], "render") != 0) {
    const bool help = argc >= 1 && (!std::strcmp(argv[0], "--help") || !std::strcmp(argv[0], "-h"));
    std::fprintf(help ? stdout : stderr,
                 "usage: gemmatune template render [options]\n\n"
                 "Render Hugging Face chat templates exactly like transformers' apply_chat_template.\n"
                 "Run 'gemmatune template render --help' for the options.\n");
    return help ? 0 : 1;
  }
  Args a("template render", "Render chat templates like transformers' apply_chat_template.", argc - 1, argv + 1);
  const std::string cases =
      a.str("cases", "", "JSONL file of cases (chat_render.jsonl format): prints {id, got} per line");
  const std::string assets = a.str("assets", ".", "directory holding the templates named by the cases");
  const std::string tmpl = a.str("template", "", "template file to render one conversation with");
  const std::string model = a.str("model", "", "model directory or GGUF file whose chat template to use");
  const std::string messages = a.str("messages", "", "JSON file: an array of messages (or {\"messages\": [...]})");
  const std::string extra =
      a.str("extra", "", "JSON object of extra template variables, e.g. '{\"enable_thinking\": true}'");
  const bool gen = a.flag("add-generation-prompt", "append the generation prompt");
  const std::string bos = a.str("bos-token", "<bos>", "bos_token variable");
  const std::string eos = a.str("eos-token", "<eos>", "eos_token variable");
  if (a.finish()) return 0;
  if (!cases.empty()) return render_cases(cases, assets);
  GT_CHECK(!messages.empty() && (!tmpl.empty() || !model.empty()),
           "template render: give --cases FILE, or --messages FILE with --template FILE or --model DIR");
  return render_one(tmpl, model, messages, extra, gen, bos, eos);
}

Command reg("template", "render chat templates (like transformers' apply_chat_template)", run);

}  // namespace
}  // namespace gt::cli
