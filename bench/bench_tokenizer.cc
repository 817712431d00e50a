// Tokenizer speed: load time of tokenizer.json, single-thread encode MB/s and decode speed on a
// realistic mixed text (every golden text, repeated), streaming decode tokens/s.
//
// usage: bench_tokenizer [tokenizer.json] [tokenize.jsonl] [target MB] [plain text file]
//   defaults: <build dir>/tests/data/assets/gemma3_tokenizer.json,
//             <build dir>/../tests/data/assets/golden/tokenize.jsonl, 8 MB.
//   A plain text file (optional) is also encoded once, cold, with a freshly loaded tokenizer:
//   the per-thread word cache starts empty, so this is the speed on text never seen before.
// Rates are given against wall time and against this thread's CPU time: the development host
// is shared and noisy, and CPU time is the steadier of the two.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/data/tokenizer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

std::string dir_of(const char* argv0) {
  std::string s = argv0;
  size_t slash = s.rfind('/');
  return slash == std::string::npos ? "." : s.substr(0, slash);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string here = dir_of(argv[0]);
  std::string tok_path = argc > 1 ? argv[1] : here + "/tests/data/assets/gemma3_tokenizer.json";
  std::string cases = argc > 2 ? argv[2] : here + "/../tests/data/assets/golden/tokenize.jsonl";
  double target_mb = argc > 3 ? std::atof(argv[3]) : 8.0;
  std::string plain = argc > 4 ? argv[4] : "";
  try {
    // Load: median of 3.
    std::vector<double> loads;
    gt::Tokenizer tok = gt::Tokenizer::from_file(tok_path);
    for (int r = 0; r < 3; ++r) {
      double t0 = now();
      gt::Tokenizer t2 = gt::Tokenizer::from_file(tok_path);
      loads.push_back(now() - t0);
    }
    std::printf("load %s: %.3f s (median of 3; file read + parse + tables)\n", tok_path.c_str(), median(loads));

    // Corpus: the golden texts in order, as documents, repeated up to target_mb.
    std::vector<std::string> docs;
    std::string body = gt::read_file(cases);
    size_t unit = 0;
    for (size_t pos = 0; pos < body.size();) {
      size_t nl = body.find('\n', pos);
      if (nl == std::string::npos) nl = body.size();
      if (nl > pos) {
        auto row = nlohmann::json::parse(body.begin() + long(pos), body.begin() + long(nl));
        docs.push_back(row.at("text").get<std::string>());
        unit += docs.back().size();
      }
      pos = nl + 1;
    }
    std::vector<std::string> corpus;
    size_t bytes = 0;
    while (double(bytes) < target_mb * 1e6)
      for (const std::string& d : docs) {
        corpus.push_back(d);
        bytes += d.size();
      }
    // Also the whole corpus as one long text (long pieces between added tokens).
    std::string joined;
    for (const std::string& d : docs) joined += d + "\n";

    std::printf("corpus: %zu golden texts (%.1f KB), repeated to %.1f MB in %zu documents\n", docs.size(),
                double(unit) / 1e3, double(bytes) / 1e6, corpus.size());

    std::vector<double> rates, cpu_rates;
    size_t n_tokens = 0;
    for (int r = 0; r < 3; ++r) {
      n_tokens = 0;
      double t0 = now(), c0 = cpu_now();
      for (const std::string& d : corpus) n_tokens += tok.encode(d, false).size();
      rates.push_back(double(bytes) / 1e6 / (now() - t0));
      cpu_rates.push_back(double(bytes) / 1e6 / (cpu_now() - c0));
    }
    std::printf("encode (1 thread, per document): %.1f MB/s wall, %.1f MB/s CPU, median of 3 (%.2f M tokens, %.2f bytes/token)\n",
                median(rates), median(cpu_rates), double(n_tokens) / 1e6, double(bytes) / double(n_tokens));

    rates.clear();
    cpu_rates.clear();
    size_t jb = 0;
    for (int r = 0; r < 3; ++r) {
      double t0 = now(), c0 = cpu_now();
      jb = 0;
      while (double(jb) < target_mb * 1e6) {
        tok.encode(joined, false);
        jb += joined.size();
      }
      rates.push_back(double(jb) / 1e6 / (now() - t0));
      cpu_rates.push_back(double(jb) / 1e6 / (cpu_now() - c0));
    }
    std::printf("encode (1 thread, all texts as one %.0f KB document): %.1f MB/s wall, %.1f MB/s CPU, median of 3\n",
                double(joined.size()) / 1e3, median(rates), median(cpu_rates));

    if (!plain.empty()) {
      std::string text = gt::read_file(plain);
      gt::Tokenizer fresh = gt::Tokenizer::from_file(tok_path);  // empty word cache
      double t0 = now(), c0 = cpu_now();
      size_t n = fresh.encode(text, false).size();
      double wall = now() - t0, cpu = cpu_now() - c0;
      std::printf("encode (1 thread, cold cache) %s: %.1f MB, %.2f M tokens: %.1f MB/s wall, %.1f MB/s CPU\n",
                  plain.c_str(), double(text.size()) / 1e6, double(n) / 1e6, double(text.size()) / 1e6 / wall,
                  double(text.size()) / 1e6 / cpu);
    }

    // Decode and streaming decode of the encoded corpus.
    std::vector<std::vector<int32_t>> encoded;
    for (const std::string& d : docs) encoded.push_back(tok.encode(d, false));
    size_t dec_tokens = 0;
    double t0 = now();
    size_t out_bytes = 0;
    while (now() - t0 < 1.0)
      for (const auto& ids : encoded) {
        out_bytes += tok.decode(ids, false).size();
        dec_tokens += ids.size();
      }
    double dt = now() - t0;
    std::printf("decode: %.1f M tokens/s (%.1f MB/s of text)\n", double(dec_tokens) / 1e6 / dt,
                double(out_bytes) / 1e6 / dt);
    dec_tokens = 0;
    t0 = now();
    while (now() - t0 < 1.0)
      for (const auto& ids : encoded) {
        gt::StreamDecoder sd(tok, true);
        for (int32_t id : ids) out_bytes += sd.push(id).size();
        out_bytes += sd.flush().size();
        dec_tokens += ids.size();
      }
    dt = now() - t0;
    std::printf("stream decode: %.1f M tokens/s\n", double(dec_tokens) / 1e6 / dt);
  } catch (const gt::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
