// gemmatune data: the SFT data pipeline from the command line, on the same code as training.
//   data sft --cases FILE --assets DIR [--assets DIR]...   one {"id", "got"} JSON line per case
//                                                          (sft_examples.jsonl format)
//   data preview --model DIR | --tokenizer FILE [--chat-template FILE], --data FILE...
//                                                          examples with trained tokens marked,
//                                                          and statistics
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/model/model_files.h"
#include "gemmatune/data/dataset.h"
#include "gemmatune/data/sft.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt::cli {
namespace {

using ojson = nlohmann::ordered_json;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }


// ---------------------------------------------------------------------------------------------
// data sft --cases

// The file `name` in the first of `dirs` that has it.
std::string find_asset(const std::vector<std::string>& dirs, const std::string& name) {
  GT_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "..",
           "asset name must be a plain file name, got \"", name, "\"");
  for (const auto& d : dirs)
    if (file_exists(d + "/" + name)) return d + "/" + name;
  std::string where;
  for (const auto& d : dirs) where += (where.empty() ? "" : ", ") + d;
  for (const auto& d : dirs)
    if (file_exists(d + "/" + name + ".xz"))
      fail(name, " is not in ", where, "; found ", d, "/", name, ".xz instead: unpack it (xz -dk) or add the directory that "
           "holds the unpacked file with another --assets (the build unpacks the test assets into "
           "build/tests/data/assets)");
  fail(name, " is not in ", where);
}

int sft_cases(const std::string& cases, const std::vector<std::string>& assets) {
  JsonlRecords records;
  records.add_file(cases);
  std::map<std::string, std::shared_ptr<Tokenizer>> toks;
  std::map<std::string, std::shared_ptr<ChatTemplate>> tmpls;
  std::map<std::string, std::string> load_errors;
  auto load = [&](const std::string& name, auto& cache, auto loader) {
    if (cache.count(name)) return cache[name];
    if (load_errors.count(name)) throw Error(load_errors[name]);
    try {
      cache[name] = loader(find_asset(assets, name));
    } catch (const Error& e) {
      load_errors[name] = e.what();
      throw;
    }
    return cache[name];
  };
  size_t n = 0, errors = 0;
  double t0 = now();
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string origin = records.origin(i);
    ojson out;
    out["id"] = nullptr;
    print_case(out, [&]() -> ojson {
      ojson row;
      try {
        row = ojson::parse(records.line(i));
      } catch (const nlohmann::json::exception& e) {
        fail(origin, ": malformed JSON: ", e.what());
      }
      if (row.is_object() && row.contains("id")) out["id"] = row["id"];
      GT_CHECK(row.is_object(), origin, ": expected a JSON object");
      for (const char* k : {"template", "tokenizer"})
        GT_CHECK(row.contains(k) && row[k].is_string(), origin, ": missing \"", k, "\" (a file name in --assets)");
      auto tok = load(row["tokenizer"].get<std::string>(), toks,
                      [](const std::string& p) { return std::make_shared<Tokenizer>(Tokenizer::from_file(p)); });
      auto tmpl = load(row["template"].get<std::string>(), tmpls, [](const std::string& p) {
        return std::make_shared<ChatTemplate>(ChatTemplate::from_string(read_file(p), p));
      });
      SftOptions so;
      so.mode = parse_sft_mode(row.value("mode", std::string("maxtext_default")));
      if (row.contains("extra") && !row["extra"].is_null()) so.template_vars = row["extra"];
      so.bos_token = row.value("bos_token", std::string("<bos>"));
      so.eos_token = row.value("eos_token", tok->eos_id() >= 0 ? tok->token_text(tok->eos_id()) : std::string("<eos>"));
      ConversationOptions co;
      co.allow_empty_answers = true;  // the goldens train an empty answer (sft-g4-parts-image-empty-answer)
      const SftBuilder builder(*tok, tmpl.get(), so);
      const SftExample ex = builder.build(to_conversation(row, co, origin));
      return ojson{{"input_ids", ex.ids}, {"loss_mask", ex.target_mask}};
    }, n, errors);
  }
  std::fflush(stdout);
  std::fprintf(stderr, "data sft: %zu cases, %zu built, %zu errors in %.2f s\n", n, n - errors, errors, now() - t0);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// data preview

// The example's text with its trained tokens marked: runs of tokens with the same mask are
// decoded together, trained runs wrapped in ANSI green or [[...]].
std::string highlight(const Tokenizer& tok, const SftExample& ex, bool color) {
  std::string out;
  size_t i = 0;
  while (i < ex.ids.size()) {
    size_t j = i;
    while (j < ex.ids.size() && ex.target_mask[j] == ex.target_mask[i]) ++j;
    const std::string text = tok.decode(std::vector<int32_t>(ex.ids.begin() + long(i), ex.ids.begin() + long(j)), false);
    if (ex.target_mask[i]) out += color ? "\x1b[1;32m" + text + "\x1b[0m" : "[[" + text + "]]";
    else out += text;
    i = j;
  }
  return out;
}

int preview(int argc, char** argv) {
  // "-n N" is spelled --examples N for the option parser.
  std::vector<std::string> words;
  for (int i = 0; i < argc; ++i) words.push_back(!std::strcmp(argv[i], "-n") ? "--examples" : argv[i]);
  std::vector<char*> av;
  for (auto& w : words) av.push_back(w.data());
  Args a("data preview",
         "Show how a dataset becomes training examples: the first examples with their trained tokens\n"
         "highlighted (ANSI colour on a terminal, [[brackets]] otherwise), then statistics over the whole\n"
         "data (examples, tokens, trained fraction, length histogram, truncations, skips).",
         int(av.size()), av.data());
  const std::string model = a.str("model", "", "model folder (tokenizer.json, chat template, tokenizer_config.json) or GGUF file");
  const std::string tok_path = a.str("tokenizer", "", "tokenizer.json (instead of --model)");
  const std::string tmpl_path = a.str("chat-template", "", "chat template .jinja file (overrides the model's)");
  const std::vector<std::string> data = a.all("data", "JSONL file or directory of .jsonl files (repeatable)");
  const int64_t n_show = a.integer("examples", 3, "examples to print (also -n N)");
  const std::string mode = a.str("mode", "keep_generation_prompt", "SFT mode: keep_generation_prompt | maxtext_default");
  const std::string vars = a.str("template-vars", "", "JSON object of chat template variables, e.g. '{\"enable_thinking\": true}'");
  const std::vector<std::string> fields = a.all("field", "column mapping CANONICAL=NAME, e.g. messages=conversation (repeatable)");
  const int64_t max_len = a.integer("max-len", 0, "maximum example length in tokens (0: none)");
  const std::string trunc = a.str("truncation", "drop", "longer examples: drop | truncate | fail");
  const std::string on_bad = a.str("on-bad-example", "skip", "bad rows: skip (list them) | fail");
  const std::string color_opt = a.str("color", "auto", "highlight with ANSI colour: auto | always | never");
  const int threads = threads_option(a);
  if (a.finish()) return 0;
  GT_CHECK(!data.empty() && !(data.size() == 1 && data[0].empty()), "data preview: missing --data FILE");
  GT_CHECK(!model.empty() || !tok_path.empty(), "data preview: give --model DIR, or --tokenizer FILE (and --chat-template FILE)");
  GT_CHECK(color_opt == "auto" || color_opt == "always" || color_opt == "never",
           "data preview: --color expects auto, always or never, got '", color_opt, "'");
  const bool color = color_opt == "always" || (color_opt == "auto" && isatty(fileno(stdout)));

  double t0 = now();
  std::unique_ptr<Tokenizer> tok;
  if (!tok_path.empty()) tok = std::make_unique<Tokenizer>(Tokenizer::from_file(tok_path));
  else tok = load_model_tokenizer(model);
  GT_CHECK(tok, "data preview: ", model, " has no tokenizer.json (give --tokenizer FILE)");
  std::unique_ptr<ChatTemplate> tmpl;
  if (!tmpl_path.empty() || !model.empty()) tmpl = std::make_unique<ChatTemplate>(open_model_chat_template(model, tmpl_path));
  const double load_s = now() - t0;

  SftOptions so;
  so.mode = parse_sft_mode(mode);
  set_special_tokens(*tok, model, so);
  if (!vars.empty()) {
    try {
      so.template_vars = ojson::parse(vars);
    } catch (const nlohmann::json::exception& e) {
      fail("data preview: --template-vars is not valid JSON: ", e.what());
    }
  }
  DataOptions dopt;
  for (const auto& f : fields)
    if (!f.empty()) dopt.conv.fields.add(f);
  dopt.max_len = max_len;
  dopt.truncation = parse_truncation(trunc);
  dopt.on_bad = parse_on_bad(on_bad);
  auto builder = std::make_shared<SftBuilder>(*tok, tmpl.get(), so);
  auto ds = SftDataset::open(data, builder, dopt);

  // The first examples, in file order.
  int64_t shown = 0;
  for (size_t i = 0; i < ds->size() && shown < n_show; ++i) {
    const SftExample* ex = ds->get(i);
    if (!ex) continue;
    ++shown;
    std::printf("=== %s: %zu tokens, %lld trained ===\n%s\n", ex->origin.c_str(), ex->ids.size(),
                (long long)ex->trained(), highlight(*tok, *ex, color).c_str());
  }
  double t1 = now();
  const bool tty = isatty(fileno(stderr));
  ds->prepare_all(threads > 0 ? threads : 0, [&](size_t done, size_t total) {
    if (tty) std::fprintf(stderr, "\rdata preview: prepared %zu / %zu records", done, total);
    if (tty && done == total) std::fprintf(stderr, "\n");
  });
  const double prep_s = now() - t1;
  const DataReport r = ds->report();

  std::printf("\n=== statistics (%s, mode %s) ===\n", tmpl ? tmpl->origin().c_str() : "no chat template", sft_mode_name(so.mode));
  std::printf("records     %zu in %zu file(s)\n", r.records, ds->records().files().size());
  std::printf("examples    %zu\n", r.examples);
  std::printf("tokens      %lld (mean %.1f, max %lld per example)\n", (long long)r.tokens,
              r.examples ? double(r.tokens) / double(r.examples) : 0.0, (long long)r.max_tokens);
  std::printf("trained     %lld tokens (%.1f%%)\n", (long long)r.trained_tokens,
              r.tokens ? 100.0 * double(r.trained_tokens) / double(r.tokens) : 0.0);
  std::printf("truncated   %zu\ndropped     %zu (longer than --max-len %lld)\nskipped     %zu (bad rows)\n", r.truncated,
              r.dropped, (long long)max_len, r.skipped);
  if (!r.length_hist.empty()) {
    std::printf("length histogram (tokens per example):\n");
    int64_t most = 0;
    for (const auto& [b, c] : r.length_hist) most = std::max(most, c);
    int64_t lo = 0;
    for (const auto& [b, c] : r.length_hist) {
      const int bar = int((40 * c + most - 1) / most);
      std::printf("  %7lld..%-7lld %8lld  %s\n", (long long)(lo + 1), (long long)b, (long long)c, std::string(size_t(bar), '#').c_str());
      lo = b;
    }
  }
  if (!r.issues.empty()) {
    std::printf("issues (%zu):\n", r.issues.size());
    size_t k = 0;
    for (const auto& is : r.issues) {
      if (++k > 50) {
        std::printf("  ... and %zu more\n", r.issues.size() - 50);
        break;
      }
      const char* kind = is.kind == DataIssue::Kind::Skipped ? "skipped" : is.kind == DataIssue::Kind::Dropped ? "dropped" : "truncated";
      std::printf("  %-9s %s\n", kind, is.message.c_str());
    }
  }
  std::fflush(stdout);
  std::fprintf(stderr, "data preview: %s; loaded in %.2f s, prepared in %.2f s (%.0f examples/s)\n",
               r.summary().c_str(), load_s, prep_s, prep_s > 0 ? double(r.prepared) / prep_s : 0.0);
  return 0;
}

int sft(int argc, char** argv) {
  Args a("data sft",
         "Build SFT examples (input_ids + loss_mask) for the cases of a JSONL file in the format of\n"
         "tests/data/assets/golden/sft_examples.jsonl, with the code training uses. Each case names its\n"
         "\"template\" and \"tokenizer\" files, looked up in the --assets directories in order (the repository\n"
         "keeps tokenizers xz-compressed: pass the directory the build unpacks them into as well, e.g.\n"
         "--assets tests/data/assets --assets build/tests/data/assets). Honours \"mode\", \"extra\",\n"
         "\"bos_token\" (default <bos>) and \"eos_token\". Prints one line per case, in order:\n"
         "{\"id\": ..., \"got\": {\"input_ids\": [...], \"loss_mask\": [...]}} or {\"id\": ..., \"got\": {\"error\": ...}}.\n"
         "loss_mask[i] = 1 means input_ids[i] is a trained target. Empty assistant answers are allowed here.",
         argc, argv);
  const std::string cases = a.required("cases", "JSONL file of cases");
  std::vector<std::string> assets = a.all("assets", "directory holding the templates and tokenizers (repeatable; default .)");
  if (a.finish()) return 0;
  assets.erase(std::remove(assets.begin(), assets.end(), std::string()), assets.end());
  if (assets.empty()) assets.push_back(".");
  return sft_cases(cases, assets);
}

int run(int argc, char** argv) {
  const bool help = argc >= 1 && (!std::strcmp(argv[0], "--help") || !std::strcmp(argv[0], "-h"));
  if (argc >= 1 && !std::strcmp(argv[0], "sft")) return sft(argc - 1, argv + 1);
  if (argc >= 1 && !std::strcmp(argv[0], "preview")) return preview(argc - 1, argv + 1);
  std::fprintf(help ? stdout : stderr,
               "usage: gemmatune data VERB [options]\n\n"
               "verbs:\n"
               "  preview   show training examples with their trained tokens, and dataset statistics\n"
               "  sft       build SFT examples for golden-format cases (input_ids + loss_mask per line)\n\n"
               "Run 'gemmatune data VERB --help' for a verb's options.\n");
  if (!help && argc >= 1) std::fprintf(stderr, "\ngemmatune data: unknown verb '%s'\n", argv[0]);
  return help ? 0 : 1;
}

Command reg("data", "SFT data: preview examples and statistics, build golden cases", run);

}  // namespace
}  // namespace gt::cli
