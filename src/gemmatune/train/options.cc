#include "gemmatune/train/options.h"

// yaml-cpp 0.7's node iterators trip GCC 12's -Wdangling-pointer (a known false positive in its headers).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cstdlib>
#include <functional>
#include <sstream>

#include "gemmatune/util/error.h"

namespace gt {

namespace {

struct Binding {
  const char* name;
  std::string help;
  std::function<void(TrainOptions&, const std::string&, const std::string&)> set;
  std::function<std::string(const TrainOptions&)> get;
  bool real = false;  // shown in --help as a person writes it (values() keeps 17 digits: resume compares them)
};

int64_t to_int(const std::string& v, const std::string& key, const std::string& origin) {
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) fail(origin, ": option ", key, " expects an integer, got '", v, "'");
  return x;
}
double to_real(const std::string& v, const std::string& key, const std::string& origin) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) fail(origin, ": option ", key, " expects a number, got '", v, "'");
  return x;
}
bool to_bool(const std::string& v, const std::string& key, const std::string& origin) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  fail(origin, ": option ", key, " expects true or false, got '", v, "'");
}
std::string real_str(double d) {
  std::ostringstream os;
  os.precision(17);
  os << d;
  return os.str();
}
// The shortest text that reads back as the same double: 0.0002, 0.9, 1e-08.
std::string real_short(const std::string& text) {
  const double d = std::strtod(text.c_str(), nullptr);
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::general);
  return std::string(buf, r.ptr);
}

#define GT_INT(field, help)                                                                                          \
  Binding {                                                                                                          \
    #field, help, [](TrainOptions& o, const std::string& v, const std::string& org) { o.field = to_int(v, #field, org); }, \
        [](const TrainOptions& o) { return std::to_string(o.field); }                                                \
  }
#define GT_REAL(field, help)                                                                                            \
  Binding {                                                                                                             \
    #field, help, [](TrainOptions& o, const std::string& v, const std::string& org) { o.field = to_real(v, #field, org); }, \
        [](const TrainOptions& o) { return real_str(o.field); }, true                                                   \
  }
#define GT_BOOL(field, help)                                                                                            \
  Binding {                                                                                                             \
    #field, help, [](TrainOptions& o, const std::string& v, const std::string& org) { o.field = to_bool(v, #field, org); }, \
        [](const TrainOptions& o) { return std::string(o.field ? "true" : "false"); }                                   \
  }
#define GT_STR(field, help)                                                                                   \
  Binding {                                                                                                   \
    #field, help, [](TrainOptions& o, const std::string& v, const std::string&) { o.field = v; },             \
        [](const TrainOptions& o) { return o.field; }                                                         \
  }

// An enum option: its names table gives the allowed values (help and errors) and the text form.
#define GT_ENUM(field, names, help)                                                                                   \
  Binding {                                                                                                           \
    #field, help + enum_choices(names),                                                                               \
        [](TrainOptions& o, const std::string& v, const std::string& org) {                                           \
          o.field = parse_enum(names, v, org + ": option " #field);                                                   \
        },                                                                                                            \
        [](const TrainOptions& o) { return std::string(enum_name(names, o.field)); }                                  \
  }

const std::vector<Binding>& bindings() {
  static const std::vector<Binding> b = {
      Binding{"data", "training data: JSONL files or directories, comma-separated",
              [](TrainOptions& o, const std::string& v, const std::string&) {
                o.data.clear();
                std::stringstream ss(v);
                std::string p;
                while (std::getline(ss, p, ','))
                  if (!p.empty()) o.data.push_back(p);
              },
              [](const TrainOptions& o) {
                std::string s;
                for (const auto& p : o.data) {
                  if (!s.empty()) s += ',';
                  s += p;
                }
                return s;
              }},
      GT_STR(eval_data, "held-out JSONL for the evaluation loss"),
      GT_STR(chat_template, "chat template file (none: the model folder's)"),
      GT_ENUM(sft_mode, kSftModeNames, std::string()),
      GT_ENUM(on_bad_example, kOnBadNames, std::string()),
      GT_ENUM(truncation, kTruncationNames, std::string("examples longer than max_len: ")),
      GT_INT(max_len, "tokens per packed row"),
      GT_INT(batch_rows, "rows per micro-batch"),
      GT_BOOL(pack, "pack several examples per row (attention never crosses them)"),
      GT_INT(lora_r, "LoRA rank"),
      GT_REAL(lora_alpha, "LoRA alpha (scaling alpha/r, or alpha/sqrt(r) with rsLoRA)"),
      GT_BOOL(use_rslora, "rank-stabilised LoRA scaling"),
      GT_REAL(lora_dropout, "LoRA dropout on the adapters' input, in [0, 1) (not with routed experts, as in PEFT)"),
      GT_STR(target_modules, "PEFT target_modules: empty = model default, 'a,b' list, 're:REGEX' full-match regex"),
      GT_STR(target_parameters, "PEFT target_parameters, comma-separated (MoE experts)"),
      GT_STR(exclude_modules, "PEFT exclude_modules, same forms as target_modules"),
      GT_ENUM(lora_init, kLoraInitNames, std::string("LoRA A initialisation (kaiming: PEFT's default): ")),
      GT_REAL(lr, "peak learning rate"),
      GT_REAL(beta1, "AdamW beta1"),
      GT_REAL(beta2, "AdamW beta2"),
      GT_REAL(eps, "AdamW epsilon"),
      GT_REAL(weight_decay, "AdamW decoupled weight decay"),
      GT_ENUM(schedule, kLrScheduleNames, std::string("after warmup: ")),
      GT_INT(warmup_steps, "linear warmup steps"),
      GT_REAL(min_lr_ratio, "final learning rate as a fraction of lr (cosine, linear)"),
      GT_REAL(max_grad_norm, "clip the global gradient norm to this (0 = off)"),
      GT_INT(grad_accum, "micro-batches per optimizer step (loss normalised by trained tokens)"),
      GT_REAL(load_balance_loss_weight, "MoE models: weight of the load-balance auxiliary loss (MaxText's; 0 = off)"),
      GT_INT(steps, "optimizer steps (0 = run `epochs` epochs)"),
      GT_INT(epochs, "epochs when steps = 0"),
      GT_INT(seed, "seed for LoRA init and data order"),
      GT_INT(log_every, "steps between metric lines"),
      GT_INT(eval_every, "steps between evaluations of eval_data (0 = at the end only)"),
      GT_INT(save_every, "steps between checkpoints (0 = at the end only)"),
      GT_INT(keep_last, "checkpoints to keep"),
      GT_BOOL(grad_checkpointing, "recompute each layer in the backward pass (less memory)"),
      GT_BOOL(resume, "continue from the latest checkpoint in the output folder"),
      GT_INT(threads, "worker threads per process (0 = all cores; under mpirun: the cores of this machine / its ranks)"),
      GT_INT(dist_check_every, "under mpirun: steps between checks that every rank holds the same adapter (0 = never)"),
      GT_INT(stop_after, "stop after this many steps of this run, with a checkpoint (0 = off)"),
  };
  return b;
}

}  // namespace

std::vector<TrainOptions::Field> TrainOptions::fields() {
  TrainOptions def;
  std::vector<Field> f;
  for (const auto& b : bindings()) f.push_back({b.name, b.help, b.real ? real_short(b.get(def)) : b.get(def)});
  return f;
}

void TrainOptions::set(const std::string& key, const std::string& value, const std::string& origin) {
  for (const auto& b : bindings())
    if (key == b.name) {
      b.set(*this, value, origin);
      return;
    }
  fail(origin, ": unknown training option '", key, "' (see gemmatune train --help)");
}

std::map<std::string, std::string> TrainOptions::values() const {
  std::map<std::string, std::string> m;
  for (const auto& b : bindings()) m[b.name] = b.get(*this);
  return m;
}

void load_train_yaml(const std::string& path, TrainOptions& o) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("cannot read the run config ", path);
  } catch (const YAML::Exception& e) {
    fail(path, ":", e.mark.line + 1, ": ", e.msg);
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) fail(path, ": the run config must be a mapping of option: value");
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string origin = path + ":" + std::to_string(it->first.Mark().line + 1);
    const YAML::Node& v = it->second;
    if (v.IsSequence()) {
      std::string joined;
      for (const auto& e : v) {
        if (!joined.empty()) joined += ',';
        joined += e.as<std::string>();
      }
      o.set(key, joined, origin);
    } else if (v.IsScalar()) {
      o.set(key, v.as<std::string>(), origin);
    } else if (v.IsNull()) {
      o.set(key, "", origin);
    } else {
      fail(origin, ": option ", key, " must be a scalar or a list");
    }
  }
}

}  // namespace gt

#pragma GCC diagnostic pop
