// Data-parallel training end to end: `mpirun -np N gemmatune train` against the same run on one
// process. N ranks with grad_accum a must give the adapter of one rank with grad_accum N·a (the
// same global batch) up to the reordering of float sums (bounds derived in docs/DISTRIBUTED.md),
// on a dense and an MoE model with the load-balance loss on; a run resumed with another rank count
// continues the same global batches; a rank killed with kill -9 mid-run ends the whole job,
// non-zero, within a bounded time, and the last checkpoint resumes; replicas that disagree stop the
// run. Each run is a few seconds (tiny models, OMP_NUM_THREADS=1). Without MPI in the build, or
// without mpirun, the tests skip.
#include <gtest/gtest.h>
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/train/checkpoint.h"
#include "gemmatune/train/trainer.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"
#include "train_util.h"

using namespace gt;

namespace {

std::string tmp(const std::string& n) { return test::scratch("dist_train_" + n); }

#ifdef GEMMATUNE_MPIEXEC
const char* kMpiexec = GEMMATUNE_MPIEXEC;
#else
const char* kMpiexec = "";
#endif

#define SKIP_WITHOUT_MPI()                                                                          \
  do {                                                                                              \
    if (std::string(kMpiexec).empty() || ::access(kMpiexec, X_OK) != 0)                             \
      GTEST_SKIP() << "built without MPI (or no mpirun): data-parallel runs are not tested here";   \
  } while (0)

// Twelve examples of different lengths: packed batches of max_len 48 differ in their trained-token
// counts, so a wrong normalisation (per rank instead of global) shows.
std::string data_file() {
  static std::string p = [] {
    const std::string path = tmp("data.jsonl");
    std::ofstream o(path);
    const char* q[] = {"What is the capital of France?", "Name a primary colour.", "Say hi.", "Count to three.",
                       "What is two plus two?", "Spell cat.", "Which is larger, 3 or 7?", "Name a fruit.",
                       "What colour is the sky on a clear day?", "Give me one word.", "Is water wet?", "Say bye."};
    const char* a[] = {"Paris.", "Blue.", "Hi!", "One, two, three.", "Four.", "C, A, T.", "Seven is larger.", "Apple.",
                       "Blue, usually.", "Word.", "Yes, it is.", "Bye!"};
    for (int i = 0; i < 12; ++i)
      o << R"({"messages": [{"role": "user", "content": ")" << q[i] << R"("}, {"role": "assistant", "content": ")" << a[i]
        << R"("}]})" << "\n";
    return path;
  }();
  return p;
}

const std::string& dense_model() {
  static std::string d = test::make_chat_model("tiny", tmp("dense"), 5);
  return d;
}
const std::string& moe_model() {
  static std::string d = test::make_chat_model("gemma4-tiny-moe", tmp("moe"), 6);
  return d;
}

// key=value words of a run (the in-process reference takes the same ones through TrainOptions::set).
std::vector<std::string> run_words(bool moe, int64_t steps, int64_t accum) {
  std::vector<std::string> w = {"max_len=48", "batch_rows=1", "lora_r=2", "lora_alpha=4", "lr=1e-2", "warmup_steps=1",
                                "seed=3", "log_every=1", "dist_check_every=1", "max_grad_norm=0.5",
                                "steps=" + std::to_string(steps), "grad_accum=" + std::to_string(accum)};
  if (moe) w.push_back("load_balance_loss_weight=0.01");
  return w;
}

// The reference runs in this process on one thread, like each rank (OMP_NUM_THREADS=1).
TrainOptions options_of(const std::vector<std::string>& words) {
  TrainOptions o;
  o.data = {data_file()};
  o.threads = 1;
  for (const auto& kv : words) {
    const auto eq = kv.find('=');
    o.set(kv.substr(0, eq), kv.substr(eq + 1), "test");
  }
  return o;
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

// The mpirun command line of `gemmatune train` on np ranks (root allowed, more ranks than cores
// allowed, one thread per rank, the test's precision mode forwarded).
std::string mpirun_train(int np, const std::string& model, const std::string& out, const std::vector<std::string>& words,
                         const std::string& extra = "") {
  std::string cmd = std::string(kMpiexec) + " -np " + std::to_string(np) +
                    " --oversubscribe --mca btl self,vader,tcp -x OMP_NUM_THREADS=1 -x GEMMATUNE_PRECISION " + extra + " " +
                    quote(GEMMATUNE_BINARY) + " train --model " + quote(model) + " --out " + quote(out) + " --data " +
                    quote(data_file());
  for (const auto& w : words) cmd += " " + w;
  return cmd;
}

void allow_root() {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  ::setenv("OMP_NUM_THREADS", "1", 1);
  if (!std::getenv("GEMMATUNE_PRECISION")) ::setenv("GEMMATUNE_PRECISION", "f32", 1);
}

int run_shell(const std::string& cmd) {
  allow_root();
  const int rc = std::system(("timeout -k 5 180 " + cmd + " > '" + tmp("last_run.log") + "' 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

std::string last_log() { return read_file(tmp("last_run.log")); }

std::vector<std::pair<std::string, std::vector<float>>> adapter_tensors(const std::string& dir) {
  TensorStore s = TensorStore::open_file(dir + "/adapter_model.safetensors");
  std::vector<std::pair<std::string, std::vector<float>>> all;
  for (const auto& n : s.names()) all.push_back({n, s.get(n).to_floats()});
  return all;
}

std::vector<nlohmann::json> metric_lines(const std::string& run_dir) {
  std::vector<nlohmann::json> v;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line.find("\"loss\"") != std::string::npos) v.push_back(nlohmann::json::parse(line));
  return v;
}

// The tolerances derived in docs/DISTRIBUTED.md ("Equivalence: how close is the same"): per-step
// loss, gradient norm and aux loss to kLossRel relative; the adapter, as a whole, to kMoveRel of
// how far training moved it (‖θ_N − θ_1‖₂ ≤ kMoveRel·‖B_1‖₂: lora_B starts at zero, so ‖B‖ is the
// distance travelled); each entry within kEntryLr·(sum of the learning rates) (AdamW moves an entry
// by at most about lr per step, so this bounds the few ill-conditioned entries).
constexpr double kLossRel = 1e-5, kMoveRel = 1e-4, kEntryLr = 0.01;

void expect_same_run(const std::string& ref, const std::string& dist, const std::string& what, double lr_sum) {
  const auto a = adapter_tensors(ref + "/adapter"), b = adapter_tensors(dist + "/adapter");
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0, diff2 = 0, moved2 = 0;
  for (size_t t = 0; t < a.size(); ++t) {
    ASSERT_EQ(a[t].first, b[t].first) << what;
    ASSERT_EQ(a[t].second.size(), b[t].second.size()) << what;
    const bool is_b = a[t].first.find("lora_B") != std::string::npos;
    for (size_t j = 0; j < a[t].second.size(); ++j) {
      const double x = a[t].second[j], d = std::fabs(x - double(b[t].second[j]));
      worst = std::max(worst, d);
      diff2 += d * d;
      if (is_b) moved2 += x * x;
      ASSERT_LE(d, kEntryLr * lr_sum) << what << ": " << a[t].first << " entry " << j << ": " << x << " vs " << b[t].second[j];
    }
  }
  // The comparison means something only if training moved the adapter.
  ASSERT_GT(moved2, 0.0) << what;
  EXPECT_LE(std::sqrt(diff2), kMoveRel * std::sqrt(moved2)) << what;
  const auto la = metric_lines(ref), lb = metric_lines(dist);
  ASSERT_EQ(la.size(), lb.size()) << what;
  for (size_t s = 0; s < la.size(); ++s) {
    EXPECT_EQ(la[s]["step"], lb[s]["step"]) << what;
    EXPECT_EQ(la[s]["trained_tokens"], lb[s]["trained_tokens"]) << what << " step " << s;
    for (const char* k : {"loss", "grad_norm"}) {
      const double x = la[s][k].get<double>(), y = lb[s][k].get<double>();
      EXPECT_NEAR(x, y, kLossRel * std::fabs(x)) << what << ": " << k << " at step " << s;
    }
    if (la[s].contains("aux_loss")) {
      const double x = la[s]["aux_loss"].get<double>(), y = lb[s]["aux_loss"].get<double>();
      EXPECT_NEAR(x, y, kLossRel * std::fabs(x)) << what << ": aux_loss at step " << s;
      // Routing counts are integers summed over the ranks: exactly the single run's.
      EXPECT_EQ(la[s]["routing"]["unused_experts"], lb[s]["routing"]["unused_experts"]) << what;
      EXPECT_DOUBLE_EQ(la[s]["routing"]["max_load_over_mean"].get<double>(),
                       lb[s]["routing"]["max_load_over_mean"].get<double>()) << what;
    }
  }
  std::printf("[%s] adapter difference: largest entry %.3g, norm %.3g of the distance travelled %.3g (ratio %.2g)\n",
              what.c_str(), worst, std::sqrt(diff2), std::sqrt(moved2), std::sqrt(diff2 / moved2));
}

// Sum of the learning rates of the runs' steps (lr 1e-2, one warmup step, cosine to 0).
constexpr double kLrSum3 = 1e-2 * (1 + 1 + 0.5), kLrSum4 = 1e-2 * (1 + 1 + 0.75 + 0.25);

void equivalence(bool moe) {
  const std::string& model = moe ? moe_model() : dense_model();
  const std::string tag = moe ? "moe" : "dense";
  const int64_t steps = 3;
  for (int np : {1, 2, 3}) {
    // Reference: one process, grad_accum np (in this test process).
    const std::string ref = tmp(tag + "_ref" + std::to_string(np));
    std::system(("rm -rf " + quote(ref)).c_str());
    train(model, ref, options_of(run_words(moe, steps, np)));
    const std::string out = tmp(tag + "_np" + std::to_string(np));
    std::system(("rm -rf " + quote(out)).c_str());
    ASSERT_EQ(run_shell(mpirun_train(np, model, out, run_words(moe, steps, 1))), 0) << last_log();
    if (np > 1) {
      EXPECT_NE(last_log().find("data parallel"), std::string::npos) << last_log();
      const auto lines = metric_lines(out);
      ASSERT_FALSE(lines.empty());
      EXPECT_EQ(lines[0]["ranks"], np);
    }
    expect_same_run(ref, out, tag + " np=" + std::to_string(np), kLrSum3);
  }
}

}  // namespace

TEST(DistTrain, DenseRanksEqualGradAccumulation) {
  SKIP_WITHOUT_MPI();
  equivalence(false);
}

TEST(DistTrain, MoeWithLoadBalanceRanksEqualGradAccumulation) {
  SKIP_WITHOUT_MPI();
  equivalence(true);
}

// 2 ranks x grad_accum 3 for two steps, then resumed on 3 ranks x grad_accum 2 (the same global
// batch of 6 micro-batches): the adapter of one process with grad_accum 6 for all four steps.
TEST(DistTrain, ResumeOnAnotherRankCountContinuesTheGlobalBatches) {
  SKIP_WITHOUT_MPI();
  const std::string ref = tmp("resume_ref"), out = tmp("resume_run");
  std::system(("rm -rf " + quote(ref) + " " + quote(out)).c_str());
  train(dense_model(), ref, options_of(run_words(false, 4, 6)));
  auto first = run_words(false, 4, 3);
  first.push_back("stop_after=2");
  ASSERT_EQ(run_shell(mpirun_train(2, dense_model(), out, first)), 0) << last_log();
  ASSERT_TRUE(file_exists(out + "/checkpoints/step-00000002/trainer_state.json"));
  EXPECT_FALSE(file_exists(out + "/adapter/adapter_model.safetensors"));
  const auto st = nlohmann::json::parse(read_file(out + "/checkpoints/step-00000002/trainer_state.json"));
  EXPECT_NE(st.dump().find("\"ranks\":2"), std::string::npos) << st.dump();
  ASSERT_EQ(run_shell(mpirun_train(3, dense_model(), out, run_words(false, 4, 2), "") + " --resume"), 0) << last_log();
  EXPECT_NE(last_log().find("resumed from"), std::string::npos) << last_log();
  expect_same_run(ref, out, "2 ranks then 3 ranks", kLrSum4);
}

namespace {

// Processes whose environment holds `tag` (the ranks of one mpirun of this test).
std::vector<std::pair<pid_t, int>> ranks_with_tag(const std::string& tag) {
  std::vector<std::pair<pid_t, int>> found;
  DIR* d = ::opendir("/proc");
  if (!d) return found;
  while (dirent* e = ::readdir(d)) {
    const pid_t pid = pid_t(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream in("/proc/" + std::string(e->d_name) + "/environ", std::ios::binary);
    std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (env.find("GEMMATUNE_FAULT_TAG=" + tag) == std::string::npos) continue;
    const auto p = env.find("OMPI_COMM_WORLD_RANK=");
    if (p == std::string::npos) continue;
    found.push_back({pid, std::atoi(env.c_str() + p + 21)});
  }
  ::closedir(d);
  return found;
}

}  // namespace

// kill -9 of rank 1 while the run is mid-training: mpirun and rank 0 end, non-zero, within a
// bounded time (no rank left waiting in an allreduce); the newest checkpoint is complete and a
// --resume run continues from it.
TEST(DistTrain, KilledRankEndsTheJobAndTheRunResumes) {
  SKIP_WITHOUT_MPI();
  allow_root();
  const std::string out = tmp("fault");
  std::system(("rm -rf " + quote(out)).c_str());
  const std::string tag = std::to_string(::getpid());
  ::setenv("GEMMATUNE_FAULT_TAG", tag.c_str(), 1);
  auto words = run_words(false, 100000, 1);
  words.push_back("save_every=1");
  words.push_back("keep_last=2");
  const std::string cmd = mpirun_train(2, dense_model(), out, words, "-x GEMMATUNE_FAULT_TAG") + " > '" + tmp("fault.log") + "' 2>&1";
  const pid_t job = ::fork();
  ASSERT_GE(job, 0);
  if (job == 0) {
    ::setpgid(0, 0);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    ::_exit(127);
  }
  ::setpgid(job, job);
  using clk = std::chrono::steady_clock;
  auto kill_job = [&] { ::kill(-job, SIGKILL); ::waitpid(job, nullptr, 0); };
  // Wait for a few checkpoints (training is under way), then kill rank 1.
  const auto t0 = clk::now();
  auto latest_step = [&]() -> int64_t {
    const std::string ck = latest_checkpoint(out);
    return ck.empty() ? 0 : std::atoll(ck.c_str() + ck.rfind("step-") + 5);
  };
  while (latest_step() < 3) {
    if (clk::now() - t0 > std::chrono::seconds(120) || ::waitpid(job, nullptr, WNOHANG) == job) {
      kill_job();
      FAIL() << "the run did not reach step 3:\n" << read_file(tmp("fault.log"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto ranks = ranks_with_tag(tag);
  pid_t victim = 0;
  for (auto [pid, r] : ranks)
    if (r == 1) victim = pid;
  if (victim == 0) kill_job();
  ASSERT_NE(victim, 0) << "rank 1 not found among " << ranks.size() << " tagged processes";
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const auto t_kill = clk::now();
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(job, &status, WNOHANG)) == 0 && clk::now() - t_kill < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done != job) {
    kill_job();
    FAIL() << "mpirun still running 60 s after rank 1 was killed (a hang):\n" << read_file(tmp("fault.log"));
  }
  const double secs = std::chrono::duration<double>(clk::now() - t_kill).count();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << "status " << status;
  // No rank survives the job.
  for (int i = 0; i < 100 && !ranks_with_tag(tag).empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(ranks_with_tag(tag).empty()) << "a rank outlived the job";
  std::printf("job ended %.2f s after kill -9 of rank 1\n", secs);
  ::unsetenv("GEMMATUNE_FAULT_TAG");

  // The newest checkpoint is complete; resuming (on 2 ranks, two more steps) continues from it.
  const std::string ck = latest_checkpoint(out);
  ASSERT_FALSE(ck.empty());
  const int64_t at = nlohmann::json::parse(read_file(ck + "/trainer_state.json"))["step"].get<int64_t>();
  EXPECT_GE(at, 3);
  auto again = words;
  again.push_back("stop_after=2");
  ASSERT_EQ(run_shell(mpirun_train(2, dense_model(), out, again) + " --resume"), 0) << last_log();
  EXPECT_NE(last_log().find("resumed from " + ck), std::string::npos) << last_log();
  EXPECT_EQ(latest_checkpoint(out), out + "/checkpoints/" + [&] {
    char b[32];
    std::snprintf(b, sizeof b, "step-%08lld", (long long)(at + 2));
    return std::string(b);
  }());
}

// Replicas that disagree are caught, loudly: rank 1 started with another seed (so another LoRA
// initialisation; MPMD launch) fails the adapter checksum at the start, and the job ends non-zero.
TEST(DistTrain, DifferingReplicasStopTheRun) {
  SKIP_WITHOUT_MPI();
  const std::string out = tmp("diverge");
  std::system(("rm -rf " + quote(out)).c_str());
  auto words = run_words(false, 3, 1);
  std::string rank0 = mpirun_train(1, dense_model(), out, words);
  words.push_back("seed=4");  // the later seed= wins
  std::string rank1 = quote(GEMMATUNE_BINARY) + " train --model " + quote(dense_model()) + " --out " + quote(out) +
                      " --data " + quote(data_file());
  for (const auto& w : words) rank1 += " " + w;
  const int rc = run_shell(rank0 + " : -np 1 -x OMP_NUM_THREADS=1 " + rank1);
  EXPECT_NE(rc, 0) << last_log();
  EXPECT_NE(last_log().find("adapters differ at the start"), std::string::npos) << last_log();
  EXPECT_FALSE(file_exists(out + "/adapter/adapter_model.safetensors"));
}
