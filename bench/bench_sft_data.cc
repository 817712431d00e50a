// SFT data preparation speed: N synthetic chat conversations (1-3 rounds, some with a system
// message, ~20-150 words per turn) written to a JSONL file, then read, rendered with the chat
// template, tokenized and masked (SftDataset::prepare_all) on one thread, then packed into
// batches (BatchLoader). Prints examples/s and tokens/s for each stage.
//
// usage: bench_sft_data [tokenizer.json] [template.jinja] [N] [mode] [threads]
//   defaults: build/tests/data/assets/gemma4_tokenizer_DERIVED.json,
//             tests/data/assets/gemma4_chat_template.jinja, 100000, keep_generation_prompt, 1
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/packing.h"
#include "gemmatune/data/sft.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU time of the calling thread: on a shared, loaded host this is the figure to compare.
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Rng {
  uint64_t s;
  uint64_t next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return s >> 33;
  }
  size_t below(size_t n) { return size_t(next() % n); }
};

const char* const kWords[] = {
    "the", "model", "answer", "question", "data", "value", "function", "returns", "because", "example",
    "Paris", "is", "a", "of", "and", "to", "in", "that", "it", "with", "for", "as", "on", "this", "we",
    "compute", "number", "prime", "list", "string", "error", "file", "line", "token", "train", "loss",
    "gradient", "matrix", "vector", "layer", "attention", "sequence", "memory", "thread", "cache",
    "however,", "therefore", "first,", "then", "finally.", "Why?", "Yes.", "No.", "42", "3.14", "x = 7;",
    "über", "café", "日本語", "données", "🙂", "(see above)", "e.g.", "i.e.", "etc.", "\n", "\n\n- item"};

std::string words(Rng& r, size_t lo, size_t hi) {
  const size_t n = lo + r.below(hi - lo + 1);
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += kWords[r.below(sizeof kWords / sizeof kWords[0])];
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string tok_path = argc > 1 ? argv[1] : "build/tests/data/assets/gemma4_tokenizer_DERIVED.json";
  const std::string tmpl_path = argc > 2 ? argv[2] : "tests/data/assets/gemma4_chat_template.jinja";
  const size_t n = argc > 3 ? size_t(std::atol(argv[3])) : 100000;
  const std::string mode = argc > 4 ? argv[4] : "keep_generation_prompt";
  const int threads = argc > 5 ? std::atoi(argv[5]) : 1;
  try {
    double t0 = now();
    const gt::Tokenizer tok = gt::Tokenizer::from_file(tok_path);
    const gt::ChatTemplate tmpl = gt::ChatTemplate::from_string(gt::read_file(tmpl_path), tmpl_path);
    std::printf("loaded %s and %s in %.2f s\n", tok_path.c_str(), tmpl_path.c_str(), now() - t0);

    // Synthetic conversations.
    const std::string path = (std::filesystem::temp_directory_path() / "gemmatune_bench_sft.jsonl").string();
    {
      Rng r{12345};
      std::string body;
      size_t rounds_total = 0;
      for (size_t i = 0; i < n; ++i) {
        nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
        if (r.below(4) == 0) msgs.push_back({{"role", "system"}, {"content", words(r, 5, 20)}});
        const size_t rounds = 1 + r.below(3);
        rounds_total += rounds;
        for (size_t k = 0; k < rounds; ++k) {
          msgs.push_back({{"role", "user"}, {"content", words(r, 10, 60)}});
          msgs.push_back({{"role", "assistant"}, {"content", words(r, 20, 150)}});
        }
        body += nlohmann::ordered_json{{"messages", msgs}}.dump() + "\n";
      }
      gt::write_file_atomic(path, body);
      std::printf("wrote %zu conversations (%zu rounds, %.1f MB) to %s\n", n, rounds_total, double(body.size()) / 1e6,
                  path.c_str());
    }

    gt::SftOptions so;
    so.mode = gt::parse_sft_mode(mode);
    auto builder = std::make_shared<gt::SftBuilder>(tok, &tmpl, so);
    gt::DataOptions dopt;
    dopt.max_len = 4096;
    t0 = now();
    auto ds = gt::SftDataset::open({path}, builder, dopt);
    const double read_s = now() - t0;
    t0 = now();
    const double c0 = cpu_now();
    ds->prepare_all(threads);
    const double prep_s = now() - t0, prep_cpu = cpu_now() - c0;
    const gt::DataReport rep = ds->report();
    std::printf("read %zu records in %.2f s\n", ds->size(), read_s);
    std::printf("prepare (%s, %d thread%s): %.2f s wall = %.0f examples/s, %.2f M tokens/s (%s)\n", mode.c_str(),
                threads, threads == 1 ? "" : "s", prep_s, double(rep.examples) / prep_s, double(rep.tokens) / prep_s / 1e6,
                rep.summary().c_str());
    if (threads == 1)
      std::printf("prepare CPU time: %.2f s = %.0f examples/s, %.2f M tokens/s per core\n", prep_cpu,
                  double(rep.examples) / prep_cpu, double(rep.tokens) / prep_cpu / 1e6);

    gt::LoaderOptions lo;
    lo.max_len = 4096;
    lo.batch_rows = 8;
    lo.seed = 1;
    lo.epochs = 1;
    gt::BatchLoader loader(*ds, lo);
    gt::Batch b;
    size_t batches = 0;
    int64_t tokens = 0;
    int64_t rows = 0;
    t0 = now();
    while (loader.next(b)) {
      ++batches;
      tokens += b.tokens();
      rows += int64_t(b.rows.size());
    }
    const double pack_s = now() - t0;
    std::printf("pack + batch (max_len %lld, %lld rows/batch): %zu batches in %.2f s = %.1f M tokens/s, rows %.1f%% full\n",
                (long long)lo.max_len, (long long)lo.batch_rows, batches, pack_s, double(tokens) / pack_s / 1e6,
                100.0 * double(tokens) / double(rows * lo.max_len));
    if (!std::getenv("GT_BENCH_KEEP")) std::filesystem::remove(path);
  } catch (const gt::Error& e) {
    std::fprintf(stderr, "bench_sft_data: %s\n", e.what());
    return 1;
  }
  return 0;
}
