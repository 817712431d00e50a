#include "gemmatune/cli/common.h"

#include <omp.h>

#include <cstdio>
#include <cstring>

#include "gemmatune/util/fs.h"

namespace gt::cli {

int threads_option(Args& a) {
  return int(a.integer("threads", 0, "worker threads for the one thread pool (0 = all cores)"));
}

void apply_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model_dir) {
  const std::string p = model_dir + "/tokenizer.json";
  if (!file_exists(p)) return nullptr;
  return std::make_unique<Tokenizer>(Tokenizer::from_file(p));
}

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

}  // namespace gt::cli
