// train/options and lr_at: option parsing and its errors (enum options list their allowed
// values), the YAML run config with file:line errors, and the learning-rate schedule.
#include "gemmatune/train/options.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>

#include "gemmatune/train/trainer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

using namespace gt;

namespace {
using test::contains;
using test::error_of;
}  // namespace

TEST(TrainOptions, SetParsesEveryKind) {
  TrainOptions o;
  o.set("lora_r", "8", "cli");
  o.set("lr", "0.001", "cli");
  o.set("pack", "no", "cli");
  o.set("schedule", "linear", "cli");
  o.set("sft_mode", "maxtext_default", "cli");
  o.set("truncation", "truncate", "cli");
  o.set("on_bad_example", "skip", "cli");
  o.set("lora_init", "gaussian", "cli");
  o.set("data", "a.jsonl,,b.jsonl", "cli");
  EXPECT_EQ(o.lora_r, 8);
  EXPECT_DOUBLE_EQ(o.lr, 0.001);
  EXPECT_FALSE(o.pack);
  EXPECT_EQ(o.schedule, LrSchedule::Linear);
  EXPECT_EQ(o.sft_mode, SftMode::MaxtextDefault);
  EXPECT_EQ(o.truncation, Truncation::Truncate);
  EXPECT_EQ(o.on_bad_example, OnBad::Skip);
  EXPECT_EQ(o.lora_init, LoraInit::Gaussian);
  EXPECT_EQ(o.data, (std::vector<std::string>{"a.jsonl", "b.jsonl"}));
  // values() writes them back as text (the run config record and the resume check).
  const auto v = o.values();
  EXPECT_EQ(v.at("schedule"), "linear");
  EXPECT_EQ(v.at("sft_mode"), "maxtext_default");
  EXPECT_EQ(v.at("data"), "a.jsonl,b.jsonl");
  EXPECT_EQ(v.at("lr"), "0.001");
  TrainOptions back;
  for (const auto& [k, s] : v) back.set(k, s, "values");
  EXPECT_EQ(back.values(), v);
}

TEST(TrainOptions, Errors) {
  TrainOptions o;
  const std::string e1 = error_of([&] { o.set("schedule", "cosin", "run.yaml:3"); });
  EXPECT_TRUE(contains(e1, "run.yaml:3") && contains(e1, "schedule") && contains(e1, "cosine | linear | constant")) << e1;
  for (const char* key : {"sft_mode", "truncation", "on_bad_example", "lora_init"}) {
    const std::string e = error_of([&] { o.set(key, "nonsense", "cli"); });
    EXPECT_TRUE(contains(e, "allowed:") && contains(e, "nonsense") && contains(e, key)) << e;
  }
  EXPECT_TRUE(contains(error_of([&] { o.set("sft_mode", "x", "cli"); }), "keep_generation_prompt | maxtext_default"));
  EXPECT_TRUE(contains(error_of([&] { o.set("truncation", "x", "cli"); }), "drop | truncate | fail"));
  EXPECT_TRUE(contains(error_of([&] { o.set("lora_r", "8.5", "cli"); }), "expects an integer"));
  EXPECT_TRUE(contains(error_of([&] { o.set("lr", "fast", "cli"); }), "expects a number"));
  EXPECT_TRUE(contains(error_of([&] { o.set("pack", "maybe", "cli"); }), "expects true or false"));
  EXPECT_TRUE(contains(error_of([&] { o.set("lora_rank", "8", "cli"); }), "unknown training option 'lora_rank'"));
}

TEST(TrainOptions, HelpShowsDefaultsAsWritten) {
  std::map<std::string, std::string> def;
  for (const auto& f : TrainOptions::fields()) def[f.name] = f.def;
  EXPECT_EQ(def["lr"], "0.0002");
  EXPECT_EQ(def["beta1"], "0.9");
  EXPECT_EQ(def["eps"], "1e-08");
  EXPECT_EQ(def["lora_r"], std::to_string(kDefaultLoraRank));
  EXPECT_EQ(def["schedule"], "cosine");
  for (const auto& f : TrainOptions::fields())
    if (f.name == "schedule") {
      EXPECT_TRUE(contains(f.help, "cosine | linear | constant")) << f.help;
    }
}

TEST(TrainOptions, Yaml) {
  const std::string dir = test::scratch("yaml");
  ::mkdir(dir.c_str(), 0755);
  const std::string good = dir + "/good.yaml";
  write_file_atomic(good, "lora_r: 4\nschedule: constant\ndata: [a.jsonl, b.jsonl]\neval_data:\n");
  TrainOptions o;
  load_train_yaml(good, o);
  EXPECT_EQ(o.lora_r, 4);
  EXPECT_EQ(o.schedule, LrSchedule::Constant);
  EXPECT_EQ(o.data, (std::vector<std::string>{"a.jsonl", "b.jsonl"}));
  EXPECT_EQ(o.eval_data, "");
  const std::string bad_value = dir + "/bad_value.yaml";
  write_file_atomic(bad_value, "lora_r: 4\n\nschedule: cosine_restarts\n");
  const std::string e = error_of([&] { load_train_yaml(bad_value, o); });
  EXPECT_TRUE(contains(e, bad_value + ":3") && contains(e, "allowed: cosine | linear | constant")) << e;
  const std::string unknown = dir + "/unknown.yaml";
  write_file_atomic(unknown, "lora_r: 4\nlearning_rate: 1\n");
  EXPECT_TRUE(contains(error_of([&] { load_train_yaml(unknown, o); }), unknown + ":2: unknown training option"));
  const std::string nested = dir + "/nested.yaml";
  write_file_atomic(nested, "lora:\n  r: 4\n");
  EXPECT_TRUE(contains(error_of([&] { load_train_yaml(nested, o); }), "must be a scalar or a list"));
  const std::string broken = dir + "/broken.yaml";
  write_file_atomic(broken, "lora_r: [4\n");
  EXPECT_TRUE(contains(error_of([&] { load_train_yaml(broken, o); }), broken + ":"));
  const std::string list = dir + "/list.yaml";
  write_file_atomic(list, "- a\n- b\n");
  EXPECT_TRUE(contains(error_of([&] { load_train_yaml(list, o); }), "must be a mapping"));
  EXPECT_TRUE(contains(error_of([&] { load_train_yaml(dir + "/missing.yaml", o); }), "cannot read the run config"));
}

TEST(LrSchedule, WarmupThenEachShape) {
  TrainOptions o;
  o.lr = 1.0;
  o.warmup_steps = 4;
  o.min_lr_ratio = 0.1;
  const int64_t total = 14;
  for (const LrSchedule s : {LrSchedule::Cosine, LrSchedule::Linear, LrSchedule::Constant}) {
    o.schedule = s;
    EXPECT_DOUBLE_EQ(lr_at(o, 0, total), 0.25);  // (step + 1) / warmup
    EXPECT_DOUBLE_EQ(lr_at(o, 3, total), 1.0);
    EXPECT_DOUBLE_EQ(lr_at(o, 4, total), 1.0);  // the peak right after warmup
  }
  o.schedule = LrSchedule::Constant;
  EXPECT_DOUBLE_EQ(lr_at(o, 13, total), 1.0);
  o.schedule = LrSchedule::Linear;
  EXPECT_NEAR(lr_at(o, 9, total), 0.1 + 0.9 * 0.5, 1e-12);  // halfway through the 10 decay steps
  EXPECT_NEAR(lr_at(o, 14, total), 0.1, 1e-12);
  o.schedule = LrSchedule::Cosine;
  EXPECT_NEAR(lr_at(o, 9, total), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(lr_at(o, 14, total), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(o, 6, total), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.2)), 1e-12);
  o.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(lr_at(o, 0, total), 1.0);
}
