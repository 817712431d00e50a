#include <cstdio>
#include <sstream>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/generate/generate.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/plan.h"
#include "gemmatune/util/error.h"

namespace gt::cli {
namespace {

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    try {
      size_t used = 0;
      ids.push_back(int32_t(std::stol(tok, &used)));
      if (used != tok.size()) throw 0;
    } catch (...) {
      fail("generate: --prompt-ids expects comma-separated integers, got '", tok, "'");
    }
  }
  return ids;
}

int run(int argc, char** argv) {
  Args a("generate", "Generate text from a prompt with a model folder, streaming tokens to stdout.", argc, argv);
  const std::string model_dir = a.required("model", "Hugging Face model folder or GGUF file");
  const std::string prompt = a.str("prompt", "", "prompt text (encoded with the folder's tokenizer.json, <bos> prepended)");
  const std::string prompt_ids = a.str("prompt-ids", "", "prompt as comma-separated token ids (instead of --prompt)");
  GenerateOptions o;
  o.max_new_tokens = a.integer("max-new-tokens", 128, "most tokens to generate");
  o.sampling = sampling_options(a);
  o.stop_strings = a.all("stop", "stop when the text contains this string (repeatable)");
  o.prefill_chunk = a.integer("prefill-chunk", 512, "prompt tokens per forward pass during prefill");
  const int64_t ctx = a.integer("context", 0, "KV cache size in tokens (0 = prompt + max-new-tokens)");
  const bool show_special = a.flag("show-special", "print special tokens in the output");
  const bool no_eos = a.flag("ignore-eos", "do not stop at the model's end-of-sequence tokens");
  const std::string adapter_dir = a.str("adapter", "", "LoRA adapter folder (PEFT format), applied unmerged");
  const double adapter_scale = a.real("adapter-scale", 1.0, "multiplier of the adapter's contribution");
  const int threads = threads_option(a);
  if (a.finish()) return 0;
  apply_threads(threads);
  o.skip_special_tokens = !show_special;

  Model model = Model::load(model_dir);
  auto tok = load_model_tokenizer(model_dir);
  std::vector<int32_t> ids;
  if (!prompt_ids.empty()) {
    ids = parse_ids(prompt_ids);
  } else {
    if (prompt.empty()) fail("generate: give --prompt TEXT or --prompt-ids IDS");
    if (!tok) fail("generate: ", model_dir, " has no tokenizer.json; pass --prompt-ids or add a tokenizer");
    ids = tok->encode(prompt, true);
  }
  if (!no_eos) o.stop_ids = model.config().eos_ids;
  const int64_t context = ctx > 0 ? ctx : int64_t(ids.size()) + o.max_new_tokens;
  if (int64_t(ids.size()) >= context) fail("generate: prompt of ", ids.size(), " tokens does not fit a context of ", context);
  PlanInput plan_in;
  plan_in.context = context;
  plan_in.chunk = o.prefill_chunk;
  check_fits(plan_memory(model, plan_in), "generate");
  KvCache cache(model, context);
  Decoder dec(model);
  std::unique_ptr<Adapter> adapter;
  if (!adapter_dir.empty()) {
    adapter = std::make_unique<Adapter>(Adapter::load_peft(adapter_dir, model));
    dec.set_lora(bind_adapter(*adapter, model, float(adapter_scale)));
  }
  GenerateResult r = generate(dec, cache, tok.get(), ids, o, [](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  });
  if (!tok) {
    for (size_t i = 0; i < r.tokens.size(); ++i) std::printf("%s%d", i ? "," : "", r.tokens[i]);
  }
  std::printf("\n");
  const double dec_tps = r.tokens.size() > 1 ? double(r.tokens.size() - 1) / r.decode_seconds : 0.0;
  std::fprintf(stderr, "[generate] prompt %lld tokens in %.2fs (%.1f tok/s), generated %zu tokens in %.2fs (%.1f tok/s), stop: %s\n",
               (long long)r.prompt_tokens, r.prefill_seconds, double(r.prompt_tokens) / r.prefill_seconds, r.tokens.size(),
               r.decode_seconds, dec_tps, std::string(stop_reason_name(r.stop_reason)).c_str());
  return 0;
}
Command reg("generate", "generate text from a prompt (KV-cached, streaming)", run);
}  // namespace
}  // namespace gt::cli
