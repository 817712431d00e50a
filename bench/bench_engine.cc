// Serving-engine benchmark (issue 12 targets): aggregate generated tokens/s of the continuous-
// batching engine for 1 stream vs 8 concurrent streams (target >= 5x), and for 8 streams over 4
// different LoRA adapters vs 8 streams of one adapter (target >= 85%). Greedy, random prompts.
// Scenarios are interleaved round by round (the host is shared and noisy); medians are printed.
//
// Usage: bench_engine MODEL_DIR   (e.g. gemmatune init-model --preset gemma3-1b --out /tmp/g1b --dtype bf16)
// Env: BENCH_THREADS (default 2), BENCH_ROUNDS (default 3), BENCH_GEN (tokens per stream, default 32),
//      BENCH_PROMPT (prompt tokens, default 16), BENCH_RANK (adapter rank, default 16).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "gemmatune/generate/engine.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/lora/targets.h"
#include "gemmatune/perf/machine.h"
#include "gemmatune/util/random.h"

using namespace gt;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int64_t env_int(const char* name, int64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : def;
}

struct Result {
  double aggregate = 0;  // generated tokens / (last finish - first submit)
  double decode = 0;     // tokens after each stream's first / (last finish - latest first token)
  double step_ms = 0;    // wall time per engine step while all streams decode
};

// Runs `streams` concurrent greedy requests; adapters[i % adapters.size()] ("" = base) for stream i.
Result run(Engine& eng, int streams, const std::vector<std::string>& adapters, int64_t prompt_len, int64_t gen,
           uint64_t salt) {
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<double> first(size_t(streams), 0), last(size_t(streams), 0);
  std::vector<int64_t> first_step(size_t(streams), -1), last_step(size_t(streams), -1);
  const int64_t V = 262144;
  const double t0 = now();
  for (int i = 0; i < streams; ++i) {
    EngineRequest r;
    uint64_t s = salt * 1000 + uint64_t(i);
    for (int64_t k = 0; k < prompt_len; ++k) r.prompt.push_back(int32_t(splitmix64(s) % uint64_t(V - 1000)) + 10);
    r.opt.sampling.temperature = 0;
    r.opt.max_new_tokens = gen;
    const std::string& a = adapters[size_t(i) % adapters.size()];
    if (!a.empty()) r.adapters = {{a, 1.0f}};
    eng.submit(r, [&, i](const EngineEvent& e) {
      std::lock_guard<std::mutex> lk(mu);
      if (!e.tokens.empty()) {
        if (first[size_t(i)] == 0) {
          first[size_t(i)] = now();
          first_step[size_t(i)] = e.step;
        }
        last[size_t(i)] = now();
        last_step[size_t(i)] = e.step;
      }
      if (e.finished) {
        if (!e.error.empty()) std::fprintf(stderr, "error: %s\n", e.error.c_str());
        ++done;
        cv.notify_all();
      }
    });
  }
  std::unique_lock<std::mutex> lk(mu);
  cv.wait(lk, [&] { return done == streams; });
  const double t_end = *std::max_element(last.begin(), last.end());
  const double t_first = *std::max_element(first.begin(), first.end());
  const int64_t s0 = *std::max_element(first_step.begin(), first_step.end());
  const int64_t s1 = *std::max_element(last_step.begin(), last_step.end());
  Result r;
  r.aggregate = double(streams * gen) / (t_end - t0);
  r.decode = double(streams * (gen - 1)) / (t_end - t_first);  // all streams decode over the same window
  r.step_ms = s1 > s0 ? 1000 * (t_end - t_first) / double(s1 - s0) : 0;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_engine MODEL_DIR\n");
    return 2;
  }
  const int threads = int(env_int("BENCH_THREADS", 2));
  const int rounds = int(env_int("BENCH_ROUNDS", 3));
  const int64_t gen = env_int("BENCH_GEN", 32), prompt = env_int("BENCH_PROMPT", 16), rank = env_int("BENCH_RANK", 16);
  omp_set_num_threads(threads);
  Model model = Model::load(argv[1]);
  EngineOptions eo;
  eo.max_seqs = 8;
  eo.context = prompt + gen + 8;
  Engine eng(model, nullptr, eo);
  LoraConfig lc = default_lora_config(model);
  lc.r = rank;
  lc.alpha = double(2 * rank);
  for (int a = 0; a < 4; ++a) {
    auto ad = std::make_shared<Adapter>(Adapter::create(model, lc, uint64_t(a + 1)));
    uint64_t s = uint64_t(a) * 77 + 5;
    for (auto& m : ad->modules)
      for (auto& b : m.B) b = float((double(splitmix64(s) >> 11) * 0x1.0p-53 * 2 - 1) * 0.01);
    std::string name = "a";
    name += std::to_string(a);  // (not "a" + ...: GCC 12 warns -Wrestrict on that)
    eng.add_adapter(name, ad);
  }
  std::printf("bench_engine: %s, %d threads, prompt %lld, %lld tokens per stream, adapters r=%lld on %s, %d rounds\n",
              argv[1], threads, (long long)prompt, (long long)gen, (long long)rank, "the default targets", rounds);
  struct Scenario {
    const char* name;
    int streams;
    std::vector<std::string> adapters;
  };
  const std::vector<Scenario> sc = {
      {"1 stream, base", 1, {""}},
      {"8 streams, base", 8, {""}},
      {"1 stream, 1 adapter", 1, {"a0"}},
      {"8 streams, 1 adapter", 8, {"a0"}},
      {"8 streams, 4 adapters", 8, {"a0", "a1", "a2", "a3"}},
  };
  std::map<std::string, std::vector<Result>> res;
  run(eng, 8, {"a0", "a1", "a2", "a3"}, prompt, 4, 999);  // warm-up (page in the weights)
  for (int r = 0; r < rounds; ++r)
    for (const auto& s : sc) {
      Result x = run(eng, s.streams, s.adapters, prompt, gen, uint64_t(r * 10 + 1));
      res[s.name].push_back(x);
      std::printf("  round %d  %-24s aggregate %7.2f tok/s  decode %7.2f tok/s  step %7.1f ms\n", r, s.name, x.aggregate,
                  x.decode, x.step_ms);
      std::fflush(stdout);
    }
  auto med = [&](const std::string& k, double Result::*f) {
    std::vector<double> v;
    for (const auto& x : res[k]) v.push_back(x.*f);
    return perf::median(v.data(), v.size());
  };
  // Ratios per round (same round = same host conditions), then medians.
  auto ratio = [&](const std::string& a, const std::string& b, double Result::*f) {
    std::vector<double> v;
    for (size_t i = 0; i < res[a].size(); ++i) v.push_back(res[a][i].*f / res[b][i].*f);
    return perf::median(v.data(), v.size());
  };
  std::printf("\nmedians over %d rounds:\n", rounds);
  for (const auto& s : sc)
    std::printf("  %-24s aggregate %7.2f tok/s  decode %7.2f tok/s  step %7.1f ms\n", s.name, med(s.name, &Result::aggregate),
                med(s.name, &Result::decode), med(s.name, &Result::step_ms));
  std::printf("  8 vs 1 stream (base):          aggregate %.2fx  decode %.2fx   (target >= 5x)\n",
              ratio("8 streams, base", "1 stream, base", &Result::aggregate),
              ratio("8 streams, base", "1 stream, base", &Result::decode));
  std::printf("  8 vs 1 stream (1 adapter):     aggregate %.2fx  decode %.2fx\n",
              ratio("8 streams, 1 adapter", "1 stream, 1 adapter", &Result::aggregate),
              ratio("8 streams, 1 adapter", "1 stream, 1 adapter", &Result::decode));
  std::printf("  4 adapters vs 1 (8 streams):   aggregate %.1f%%  decode %.1f%%  (target >= 85%%)\n",
              100 * ratio("8 streams, 4 adapters", "8 streams, 1 adapter", &Result::aggregate),
              100 * ratio("8 streams, 4 adapters", "8 streams, 1 adapter", &Result::decode));
  const EngineStats st = eng.stats();
  std::printf("  engine: %lld steps, %lld generated tokens\n", (long long)st.steps_total, (long long)st.generated_tokens_total);
  return 0;
}
