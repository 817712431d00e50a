// gemmatune chat: conversation with a model through its own chat template (history kept, Gemma 4
// thinking on or off, tokens streamed), interactively or one shot with --prompt.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/generate/generate.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/plan.h"
#include "gemmatune/util/error.h"

namespace gt::cli {
namespace {
int run(int argc, char** argv) {
  Args a("chat", "Chat with a model using its own chat template (interactive, or one shot with --prompt).", argc, argv);
  const std::string model_dir = a.required("model", "Hugging Face model folder (with tokenizer.json and a chat template)");
  const std::string prompt = a.str("prompt", "", "one user message: answer it and exit");
  const std::string system = a.str("system", "", "system prompt");
  const std::string tmpl_file = a.str("chat-template", "", "chat template file (default: the model folder's)");
  const std::string adapter_dir = a.str("adapter", "", "LoRA adapter folder (PEFT format), applied unmerged");
  const double adapter_scale = a.real("adapter-scale", 1.0, "multiplier of the adapter's contribution");
  const bool thinking = a.flag("thinking", "Gemma 4: enable thinking (enable_thinking in the template)");
  GenerateOptions o;
  o.max_new_tokens = a.integer("max-new-tokens", 512, "most tokens per answer");
  o.sampling = sampling_options(a);
  const int64_t context = a.integer("context", 4096, "KV cache size in tokens");
  const int threads = threads_option(a);
  if (a.finish()) return 0;
  apply_threads(threads);

  Model model = Model::load(model_dir);
  auto tok = load_model_tokenizer(model_dir);
  if (!tok) fail("chat: ", model_dir, " has no tokenizer.json");
  ChatTemplate tmpl = ChatTemplate::from_model_dir(model_dir, tmpl_file);
  PlanInput pin;
  pin.context = context;
  check_fits(plan_memory(model, pin), "chat");
  Decoder dec(model);
  std::unique_ptr<Adapter> adapter;
  if (!adapter_dir.empty()) {
    adapter = std::make_unique<Adapter>(Adapter::load_peft(adapter_dir, model));
    dec.set_lora(bind_adapter(*adapter, model, float(adapter_scale)));
  }
  o.stop_ids = model.config().eos_ids;
  for (const char* t : {"<end_of_turn>", "<turn|>", "<eos>"}) {
    const int32_t id = tok->token_id(t);
    if (id >= 0 && std::find(o.stop_ids.begin(), o.stop_ids.end(), id) == o.stop_ids.end()) o.stop_ids.push_back(id);
  }
  const std::string bos = tok->bos_id() >= 0 ? tok->token_text(tok->bos_id()) : "<bos>";
  const std::string eos = model.config().family == Family::Gemma3 ? "<end_of_turn>" : "<eos>";
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  extra["enable_thinking"] = thinking;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});

  const bool interactive = prompt.empty();
  const bool tty = ::isatty(0);
  std::string line;
  while (true) {
    std::string user = prompt;
    if (interactive) {
      if (tty) std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, line)) break;
      if (line == "/exit" || line == "/quit") break;
      if (line == "/reset") {
        messages = nlohmann::ordered_json::array();
        if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
        continue;
      }
      if (line.empty()) continue;
      user = line;
    }
    messages.push_back({{"role", "user"}, {"content", user}});
    // The whole conversation is re-rendered and re-prefilled each turn: exactly what the template
    // defines (a model's template may rewrite earlier turns, e.g. dropping old thoughts).
    const std::string text = tmpl.render(messages, true, extra, bos, eos);
    std::vector<int32_t> ids = tok->encode(text, false);
    if (int64_t(ids.size()) + 1 >= context) fail("chat: the conversation (", ids.size(), " tokens) exceeds --context ", context);
    KvCache cache(model, context);
    GenerateOptions turn = o;
    turn.max_new_tokens = std::min<int64_t>(o.max_new_tokens, context - int64_t(ids.size()));
    GenerateResult r = generate(dec, cache, tok.get(), ids, turn, [](const std::string& s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    });
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "[chat] %zu tokens, %.1f tok/s\n", r.tokens.size(),
                 r.tokens.size() > 1 ? double(r.tokens.size() - 1) / r.decode_seconds : 0.0);
    messages.push_back({{"role", "assistant"}, {"content", r.text}});
    if (!interactive) break;
  }
  return 0;
}
Command reg("chat", "chat with a model through its chat template (interactive or --prompt)", run);
}  // namespace
}  // namespace gt::cli
