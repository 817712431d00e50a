// Helpers shared by the subcommands.
#pragma once
#include <memory>
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
// <model_dir>/tokenizer.json, or null when the folder has none.
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_dir);
// Resident set size (VmRSS) and peak (VmHWM) of this process in bytes.
size_t rss_bytes();
size_t peak_rss_bytes();

}  // namespace gt::cli
