#include "gemmatune/cli/common.h"

#include <omp.h>

#include <cstdio>
#include <cstring>

#include "gemmatune/model/model_files.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt::cli {

int threads_option(Args& a) {
  return int(a.integer("threads", 0, "worker threads for the one thread pool (0 = all cores)"));
}

void apply_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
}

SamplingParams sampling_options(Args& a) {
  SamplingParams p;
  p.temperature = float(a.real("temperature", 1.0, "sampling temperature (0 = greedy)"));
  p.top_k = a.integer("top-k", 64, "keep the k most likely tokens (0 = off)");
  p.top_p = float(a.real("top-p", 0.95, "nucleus sampling mass (1 = off)"));
  p.min_p = float(a.real("min-p", 0.0, "drop tokens below min-p x the top probability (0 = off)"));
  p.repetition_penalty = float(a.real("repetition-penalty", 1.0, "penalty for tokens already seen (1 = off)"));
  p.seed = uint64_t(a.integer("seed", 0, "random seed"));
  if (a.flag("greedy", "greedy decoding (same as --temperature 0)")) p.temperature = 0.0f;
  return p;
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_dir) { return open_model_tokenizer(model_dir); }

static size_t status_field(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  size_t kb = 0;
  const size_t kl = std::strlen(key);
  while (std::fgets(line, sizeof line, f))
    if (!std::strncmp(line, key, kl)) {
      std::sscanf(line + kl, " %zu", &kb);
      break;
    }
  std::fclose(f);
  return kb * 1024;
}

size_t rss_bytes() { return status_field("VmRSS:"); }
size_t peak_rss_bytes() { return status_field("VmHWM:"); }

void print_case(nlohmann::ordered_json& out, const std::function<nlohmann::ordered_json()>& got, size_t& n,
                size_t& errors) {
  try {
    out["got"] = got();
  } catch (const Error& e) {
    out["got"] = nlohmann::ordered_json{{"error", e.what()}};
    ++errors;
  }
  std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  ++n;
}

}  // namespace gt::cli
