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
#include "gemmatune/model/model_files.h"
#include "gemmatune/generate/chat_session.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/plan.h"
#include "gemmatune/util/error.h"

namespace gt::cli {
namespace {

// Streams a reply to stdout, holding back leading whitespace: a reply that is whitespace only
// (e.g. an untrained model's) is shown escaped and labelled, not as blank lines.
class VisibleReply {
 public:
  void push(const std::string& s) {
    if (shown_) return write(s);
    held_ += s;
    if (held_.find_first_not_of(" \t\r\n") == std::string::npos) return;
    shown_ = true;
    write(held_);
  }
  void finish(size_t tokens) {
    if (!shown_ && tokens > 0) {
      std::string esc;
      for (char c : held_) esc += c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : std::string(1, c);
      if (esc.size() > 80) esc = esc.substr(0, 80) + "...";
      std::printf("[blank reply: %zu tokens, no visible text: \"%s\"]", tokens, esc.c_str());
    }
    std::printf("\n");
    std::fflush(stdout);
  }

 private:
  void write(const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }
  std::string held_;
  bool shown_ = false;
};

int run(int argc, char** argv) {
  Args a("chat", "Chat with a model using its own chat template (interactive, or one shot with --prompt).", argc, argv);
  const std::string model_dir = a.required("model", "Hugging Face model folder (with tokenizer.json and a chat template) or GGUF file");
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
  ChatTemplate tmpl = open_model_chat_template(model_dir, tmpl_file);
  PlanInput pin;
  pin.context = context;
  check_fits(plan_memory(model, pin), "chat");
  Decoder dec(model);
  std::unique_ptr<Adapter> adapter;
  if (!adapter_dir.empty()) {
    adapter = std::make_unique<Adapter>(Adapter::load_peft(adapter_dir, model));
    dec.set_lora(bind_adapter(*adapter, model, float(adapter_scale)));
  }
  ChatOptions co;
  co.system = system;
  co.thinking = thinking;
  co.context = context;
  co.generate = o;
  ChatSession session(dec, *tok, tmpl, co);

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
        session.reset();
        continue;
      }
      if (line.empty()) continue;
      user = line;
    }
    VisibleReply out;
    bool thought = false;
    GenerateResult r = session.reply(user, [&](const std::string& s) { out.push(s); },
                                     [&](const std::string& s) {  // Gemma 4 thought: to stderr, labelled
                                       if (!thought) std::fprintf(stderr, "[thought] ");
                                       thought = true;
                                       std::fwrite(s.data(), 1, s.size(), stderr);
                                     });
    if (thought) std::fprintf(stderr, "\n[/thought]\n");
    out.finish(r.tokens.size());
    std::fprintf(stderr, "[chat] %zu tokens, %.1f tok/s\n", r.tokens.size(),
                 r.tokens.size() > 1 ? double(r.tokens.size() - 1) / r.decode_seconds : 0.0);
    if (!interactive) break;
  }
  return 0;
}
Command reg("chat", "chat with a model through its chat template (interactive or --prompt)", run);
}  // namespace
}  // namespace gt::cli
