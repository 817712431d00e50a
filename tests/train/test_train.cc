// The training loop end to end on a tiny random Gemma 3 with the real tokenizer and template:
// the loss goes down, accumulation is normalised by trained tokens, a stopped-and-resumed run is
// bit-identical to an uninterrupted one, kill -9 during checkpointing never corrupts the latest
// checkpoint, and a checkpoint of another model or LoRA setup is refused.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "gemmatune/io/safetensors.h"
#include "gemmatune/kernels/gemm.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/train/checkpoint.h"
#include "gemmatune/train/trainer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"
#include "train_util.h"

using namespace gt;

namespace {

std::string tmp(const std::string& n) { return test::scratch("train_" + n); }

const std::string& tiny_model() {
  static std::string dir = test::make_chat_model("tiny", tmp("model"), 3);
  return dir;
}

const std::string& dataset() {
  static std::string p = test::write_chat_data(tmp("data.jsonl"));
  return p;
}

TrainOptions base_options() {
  TrainOptions o;
  o.data = {dataset()};
  o.max_len = 64;
  o.batch_rows = 1;
  o.lora_r = 4;
  o.lora_alpha = 8;
  o.lr = 5e-3;
  o.warmup_steps = 2;
  o.log_every = 1;
  o.seed = 7;
  return o;
}

std::vector<float> adapter_floats(const std::string& dir) {
  TensorStore s = TensorStore::open_file(dir + "/adapter_model.safetensors");
  std::vector<float> all;
  for (const auto& n : s.names()) {
    auto v = s.get(n).to_floats();
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

}  // namespace

TEST(Train, LossGoesDown) {
  // One example, memorised: the loss must fall far below its start.
  const std::string one = tmp("one.jsonl");
  write_file_atomic(one, R"({"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]})" "\n");
  TrainOptions o = base_options();
  o.data = {one};
  o.steps = 20;
  o.lr = 5e-2;
  o.warmup_steps = 0;
  o.schedule = LrSchedule::Constant;
  TrainSummary s = train(tiny_model(), tmp("down"), o);
  EXPECT_EQ(s.steps, 20);
  EXPECT_LT(s.last_loss, 0.1 * s.first_loss) << s.first_loss << " -> " << s.last_loss;
  EXPECT_TRUE(file_exists(tmp("down") + "/adapter/adapter_model.safetensors"));
  EXPECT_TRUE(file_exists(tmp("down") + "/metrics.jsonl"));
  EXPECT_NE(read_file(tmp("down") + "/loss.svg").find("<svg"), std::string::npos);
  // The trained adapter loads back (PEFT format) and changes the model's output.
  Model m = Model::load(tiny_model());
  Adapter a = Adapter::load_peft(tmp("down") + "/adapter", m);
  EXPECT_GT(a.num_parameters(), 0);
}

TEST(Train, ResumeIsBitIdentical) {
  TrainOptions o = base_options();
  o.steps = 6;
  o.grad_accum = 2;
  o.save_every = 2;
  std::system(("rm -rf '" + tmp("full") + "' '" + tmp("split") + "'").c_str());
  train(tiny_model(), tmp("full"), o);
  TrainOptions first = o;
  first.stop_after = 3;
  TrainSummary s1 = train(tiny_model(), tmp("split"), first);
  EXPECT_EQ(s1.steps, 3);
  EXPECT_TRUE(s1.adapter_dir.empty());
  TrainOptions second = o;
  second.resume = true;
  TrainSummary s2 = train(tiny_model(), tmp("split"), second);
  EXPECT_EQ(s2.steps, 6);
  auto a = adapter_floats(tmp("full") + "/adapter"), b = adapter_floats(tmp("split") + "/adapter");
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << "resumed run differs from the uninterrupted one";
}

TEST(Train, MismatchedCheckpointIsRefused) {
  TrainOptions o = base_options();
  o.steps = 2;
  std::system(("rm -rf '" + tmp("mismatch") + "'").c_str());
  train(tiny_model(), tmp("mismatch"), o);
  TrainOptions other = o;
  other.resume = true;
  other.steps = 4;
  other.lora_r = 8;
  try {
    train(tiny_model(), tmp("mismatch"), other);
    FAIL() << "a checkpoint with another LoRA rank was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not match"), std::string::npos) << e.what();
  }
  // A corrupt state file is refused with a message naming it.
  const std::string ck = latest_checkpoint(tmp("mismatch"));
  ASSERT_FALSE(ck.empty());
  write_file_atomic(ck + "/trainer_state.json", "{ truncated");
  TrainOptions again = o;
  again.resume = true;
  again.steps = 4;
  try {
    train(tiny_model(), tmp("mismatch"), again);
    FAIL() << "a corrupt checkpoint was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("trainer_state.json"), std::string::npos) << e.what();
  }
}

TEST(Train, KillDuringCheckpointKeepsTheLatestValid) {
  const std::string out = tmp("kill");
  std::system(("rm -rf '" + out + "'").c_str());
  tiny_model();
  // Kill the trainer (a separate process, checkpointing every step) at several moments.
  std::string before;  // the latest checkpoint before this round ("" sorts before every name)
  for (int round = 0; round < 4; ++round) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::string bin = test::binary();
      execl(bin.c_str(), bin.c_str(), "train", "--model", tiny_model().c_str(), "--out", out.c_str(), "--data",
            dataset().c_str(), "steps=200", "save_every=1", "max_len=64", "lora_r=4", "threads=1",
            round == 0 ? "resume=false" : "resume=true", static_cast<char*>(nullptr));
      _exit(127);
    }
    // Wait (bounded) until this run has written a checkpoint of its own, however fast or slow the
    // host, then kill it a little later each round: the kill lands at different moments of the
    // save-every-step cycle, including inside a checkpoint write.
    int st = 0;
    bool exited = false;
    for (int waited_ms = 0; waited_ms < 180000 && latest_checkpoint(out) <= before; waited_ms += 5) {
      if (waitpid(pid, &st, WNOHANG) == pid) {
        exited = true;
        break;
      }
      usleep(5000);
    }
    ASSERT_FALSE(exited) << "the trainer exited on its own in round " << round << " (status " << st << ")";
    usleep(useconds_t(20000 + 37000 * round));
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    const std::string ck = latest_checkpoint(out);
    before = ck;
    ASSERT_FALSE(ck.empty()) << "no complete checkpoint after round " << round;
    Model m = Model::load(tiny_model());
    LoraConfig lc = default_lora_config(m);
    lc.r = 4;
    lc.alpha = 32;
    Adapter a = Adapter::create(m, lc, 0);
    AdamW opt(AdamWConfig{});
    TrainerState ts;
    EXPECT_NO_THROW(load_checkpoint(ck, m, a, opt, ts)) << ck;
    EXPECT_GT(ts.step, 0);
  }
}

TEST(Train, AccumulationNormalisesByTrainedTokens) {
  Model m = Model::load(tiny_model());
  LoraConfig lc = default_lora_config(m);
  lc.r = 2;
  Adapter a = Adapter::create(m, lc, 1);
  for (auto& mod : a.modules)
    for (size_t i = 0; i < mod.B.size(); ++i) mod.B[i] = 0.01f * float(int(i % 7) - 3);
  Decoder dec(m);
  dec.set_lora(bind_adapter(a, m));
  std::vector<int32_t> r1 = {2, 100, 200, 300, 400, 500}, r2 = {2, 600, 700, 800};
  std::vector<uint8_t> m1 = {0, 1, 1, 1, 1, 0}, m2 = {1, 0, 1, 0};
  // One call over both rows...
  std::vector<std::vector<float>> g_all, g_acc;
  std::vector<uint8_t> both = m1;
  both.insert(both.end(), m2.begin(), m2.end());
  auto r = dec.forward_backward({{nullptr, r1.data(), 6}, {nullptr, r2.data(), 4}}, both, g_all);
  EXPECT_EQ(r.tokens, 6);
  // ...equals two micro-batches normalised by the 6 trained tokens of the whole step.
  dec.forward_backward({{nullptr, r1.data(), 6}}, m1, g_acc, 6.0);
  dec.forward_backward({{nullptr, r2.data(), 4}}, m2, g_acc, 6.0);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < g_all.size(); ++i)
    for (size_t j = 0; j < g_all[i].size(); ++j) {
      worst = std::max(worst, double(std::fabs(g_all[i][j] - g_acc[i][j])));
      scale = std::max(scale, double(std::fabs(g_all[i][j])));
    }
  EXPECT_GT(scale, 0);
  // With the bf16-input GEMM kernel (GEMMATUNE_KERNELS=avx512bf16, BF16 weights) the two ways differ in
  // the last f32 bits before the bf16 rounding of the GEMM inputs, which can then move an input by one
  // bf16 ulp (relative 2^-8): allow that much instead of f32 round-off.
  const bool b16 = gemm::bf16_inputs_for(m.weights().layers[0].q.dtype);
  EXPECT_LE(worst, (b16 ? 1.0 / 256 : 1e-5) * scale);
}

TEST(Train, CheckpointingAndPackingChangeNothing) {
  Model m = Model::load(test::fixture("gemma4_small") + "/model");  // KV sharing + PLE: the hardest case
  LoraConfig lc = default_lora_config(m);
  lc.r = 2;
  Adapter a = Adapter::create(m, lc, 5);
  for (auto& mod : a.modules)
    for (size_t i = 0; i < mod.B.size(); ++i) mod.B[i] = 0.02f * float(int(i % 5) - 2);
  Decoder dec(m);
  dec.set_lora(bind_adapter(a, m));
  std::vector<int32_t> e1 = {2, 10, 20, 30, 40, 50, 60}, e2 = {2, 70, 80, 90, 100};
  std::vector<uint8_t> m1 = {0, 1, 1, 1, 1, 1, 0}, m2 = {0, 1, 1, 1, 0};
  // A packed row = two segments run as separate chunks of one forward (positions restart, no
  // attention across them): its summed loss equals the examples' losses run one by one.
  std::vector<int32_t> row = e1;
  row.insert(row.end(), e2.begin(), e2.end());
  std::vector<uint8_t> mrow = m1;
  mrow.insert(mrow.end(), m2.begin(), m2.end());
  auto packed = dec.loss({{nullptr, row.data(), 7}, {nullptr, row.data() + 7, 5}}, mrow);
  auto l1 = dec.loss({{nullptr, e1.data(), 7}}, m1);
  auto l2 = dec.loss({{nullptr, e2.data(), 5}}, m2);
  EXPECT_EQ(packed.tokens, l1.tokens + l2.tokens);
  EXPECT_NEAR(packed.sum, l1.sum + l2.sum, 1e-4);
  // Without segments (one 12-token sequence) the loss differs: the test can see cross-talk.
  auto joined = dec.loss({{nullptr, row.data(), 12}}, mrow);
  EXPECT_GT(std::fabs(joined.sum - packed.sum), 1e-3);
  // Gradient checkpointing recomputes each layer in the backward pass: identical gradients.
  std::vector<std::vector<float>> g_plain, g_ckpt;
  dec.forward_backward({{nullptr, row.data(), 7}, {nullptr, row.data() + 7, 5}}, mrow, g_plain, 0, false);
  dec.forward_backward({{nullptr, row.data(), 7}, {nullptr, row.data() + 7, 5}}, mrow, g_ckpt, 0, true);
  ASSERT_EQ(g_plain.size(), g_ckpt.size());
  for (size_t i = 0; i < g_plain.size(); ++i) EXPECT_EQ(g_plain[i], g_ckpt[i]) << "tensor " << i;
}
