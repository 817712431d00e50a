// Helpers shared by the subcommands.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "gemmatune/cli/args.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/generate/sampler.h"

namespace gt::cli {

// Declares --threads and applies it to the one OpenMP pool (0 = all cores). Returns the count.
int threads_option(Args& a);
void apply_threads(int n);
// Declares the sampling options shared by generate and chat (--temperature, --top-k, --top-p,
// --min-p, --repetition-penalty, --seed, --greedy) and returns their values (Gemma's defaults).
SamplingParams sampling_options(Args& a);
// <model_dir>/tokenizer.json (or a GGUF file's vocabulary), or null when the folder has none.
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_dir);
// One case of a golden-format run (data sft, template render): out["got"] = got(), or
// {"error": message} when got() throws a gt::Error (counted in `errors`); prints `out` as one
// JSON line and counts it in `n`.
void print_case(nlohmann::ordered_json& out, const std::function<nlohmann::ordered_json()>& got, size_t& n,
                size_t& errors);
// Resident set size (VmRSS) and peak (VmHWM) of this process in bytes.
size_t rss_bytes();
size_t peak_rss_bytes();

}  // namespace gt::cli
