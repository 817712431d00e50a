// Training options: one table gives every option its name, default and help text; values come
// from a YAML run config (--config run.yaml) overridden by key=value words on the command line.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gemmatune/data/sft.h"
#include "gemmatune/lora/targets.h"
#include "gemmatune/model/lora_views.h"
#include "gemmatune/util/enum_names.h"

namespace gt {

// The learning rate after warmup (lr_at in train/trainer.h).
enum class LrSchedule { Cosine, Linear, Constant };
inline constexpr std::array<EnumName<LrSchedule>, 3> kLrScheduleNames = {
    {{LrSchedule::Cosine, "cosine"}, {LrSchedule::Linear, "linear"}, {LrSchedule::Constant, "constant"}}};

struct TrainOptions {
  // data
  std::vector<std::string> data;  // JSONL files or directories
  std::string eval_data;
  std::string chat_template;      // template file (default: the model folder's)
  SftMode sft_mode = SftMode::KeepGenerationPrompt;
  OnBad on_bad_example = OnBad::Fail;
  Truncation truncation = Truncation::Drop;
  int64_t max_len = 1024;
  int64_t batch_rows = 1;
  bool pack = true;
  // LoRA
  int64_t lora_r = kDefaultLoraRank;
  double lora_alpha = kDefaultLoraAlpha;
  bool use_rslora = false;
  double lora_dropout = 0.0;
  std::string target_modules;     // empty: the model's default; "a,b,c": a PEFT list; "re:<regex>": a PEFT regex
  std::string target_parameters;  // comma list, e.g. experts.gate_up_proj,experts.down_proj
  std::string exclude_modules;    // same forms as target_modules
  LoraInit lora_init = LoraInit::Kaiming;
  // optimisation
  double lr = 2e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  LrSchedule schedule = LrSchedule::Cosine;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  double max_grad_norm = 1.0;       // 0: no clipping
  int64_t grad_accum = 1;
  double load_balance_loss_weight = 0.0;  // MoE load-balance auxiliary loss (MaxText's definition); 0 = off
  // loop
  int64_t steps = 0;                // 0: run `epochs` epochs
  int64_t epochs = 1;
  uint64_t seed = 0;
  int64_t log_every = 1;
  int64_t eval_every = 0;
  int64_t save_every = 0;           // 0: only at the end
  int64_t keep_last = 3;
  bool grad_checkpointing = false;
  bool resume = false;
  int64_t threads = 0;
  int64_t dist_check_every = 10;   // data-parallel runs: steps between cross-rank adapter checksums (0 = never)
  int64_t stop_after = 0;           // stop (with a checkpoint) after this many steps of this run; for tests and time-boxed runs

  // Names, defaults and help for --help and config validation.
  struct Field {
    std::string name, help, def;
  };
  static std::vector<Field> fields();
  // Sets one option from its text value; throws naming `origin` on an unknown key or bad value
  // (for an enum option, the message lists the allowed values).
  void set(const std::string& key, const std::string& value, const std::string& origin);
  // Every option as text (for the run folder's config record and resume checks).
  std::map<std::string, std::string> values() const;
};

// Reads a YAML mapping of option: value (nested mappings are flattened with '.' is not allowed:
// options are flat). Throws naming file:line for YAML errors and unknown keys.
void load_train_yaml(const std::string& path, TrainOptions& o);

}  // namespace gt
