#include "gemmatune/train/trainer.h"

#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/packing.h"
#include "gemmatune/data/sft.h"
#include "gemmatune/dist/comm.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/model/model_files.h"
#include "gemmatune/model/plan.h"
#include "gemmatune/train/adamw.h"
#include "gemmatune/train/checkpoint.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string fmt_time(double s) {
  char buf[32];
  if (s < 0 || !std::isfinite(s)) return "?";
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  return buf;
}

// A loss-curve plot as a small self-contained SVG.
std::string loss_svg(const std::vector<std::pair<int64_t, double>>& train, const std::vector<std::pair<int64_t, double>>& eval) {
  const double W = 640, H = 360, L = 60, R = 20, T = 20, B = 40;
  double xmax = 1, ymin = 1e300, ymax = -1e300;
  for (const auto* s : {&train, &eval})
    for (const auto& [x, y] : *s) {
      xmax = std::max(xmax, double(x));
      ymin = std::min(ymin, y);
      ymax = std::max(ymax, y);
    }
  if (ymin > ymax) ymin = 0, ymax = 1;
  if (ymax - ymin < 1e-9) ymax = ymin + 1;
  auto px = [&](double x) { return L + (W - L - R) * x / xmax; };
  auto py = [&](double y) { return T + (H - T - B) * (1 - (y - ymin) / (ymax - ymin)); };
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif' font-size='12'>\n";
  o << "<rect width='100%' height='100%' fill='white'/>\n";
  o << "<line x1='" << L << "' y1='" << H - B << "' x2='" << W - R << "' y2='" << H - B << "' stroke='black'/>\n";
  o << "<line x1='" << L << "' y1='" << T << "' x2='" << L << "' y2='" << H - B << "' stroke='black'/>\n";
  o << "<text x='" << W / 2 << "' y='" << H - 8 << "' text-anchor='middle'>step</text>\n";
  o << "<text x='14' y='" << H / 2 << "' transform='rotate(-90 14 " << H / 2 << ")' text-anchor='middle'>loss</text>\n";
  char buf[64];
  for (int i = 0; i <= 4; ++i) {
    const double y = ymin + (ymax - ymin) * i / 4;
    std::snprintf(buf, sizeof buf, "%.3g", y);
    o << "<text x='" << L - 6 << "' y='" << py(y) + 4 << "' text-anchor='end'>" << buf << "</text>\n";
    std::snprintf(buf, sizeof buf, "%.0f", xmax * i / 4);
    o << "<text x='" << px(xmax * i / 4) << "' y='" << H - B + 16 << "' text-anchor='middle'>" << buf << "</text>\n";
  }
  auto line = [&](const std::vector<std::pair<int64_t, double>>& s, const char* colour, const char* name, int row) {
    if (s.empty()) return;
    o << "<polyline fill='none' stroke='" << colour << "' stroke-width='1.5' points='";
    for (const auto& [x, y] : s) o << px(double(x)) << "," << py(y) << " ";
    o << "'/>\n<text x='" << W - R - 80 << "' y='" << T + 14 * row << "' fill='" << colour << "'>" << name << "</text>\n";
  };
  line(train, "#1f77b4", "train loss", 1);
  line(eval, "#d62728", "eval loss", 2);
  o << "</svg>\n";
  return o.str();
}

// TrainOptions, unpacked once into what each part of the engine takes.
struct RunSettings {
  LoraConfig lora;
  SftOptions sft;
  DataOptions data;
  LoaderOptions loader;
  LoaderOptions eval_loader;
  AdamWConfig adamw;
  TrainExtras extras;
};

nlohmann::json module_list(const std::string& s);

RunSettings unpack(const TrainOptions& o, const Model& model) {
  RunSettings r;
  r.lora = default_lora_config(model);
  r.lora.r = o.lora_r;
  r.lora.alpha = o.lora_alpha;
  r.lora.use_rslora = o.use_rslora;
  r.lora.dropout = o.lora_dropout;
  r.lora.init = o.lora_init;
  if (!o.target_modules.empty()) r.lora.target_modules = module_list(o.target_modules);
  if (!o.target_parameters.empty()) {
    r.lora.target_parameters.clear();
    for (const auto& p : module_list(o.target_parameters)) r.lora.target_parameters.push_back(p.get<std::string>());
  }
  if (!o.exclude_modules.empty()) r.lora.exclude_modules = module_list(o.exclude_modules);
  r.sft.mode = o.sft_mode;
  r.data.max_len = o.max_len;
  r.data.truncation = o.truncation;
  r.data.on_bad = o.on_bad_example;
  r.loader.max_len = o.max_len;
  r.loader.batch_rows = o.batch_rows;
  r.loader.pack = o.pack;
  r.loader.seed = o.seed;
  r.eval_loader = r.loader;
  r.eval_loader.seed = 0;
  r.eval_loader.shuffle = false;
  r.eval_loader.epochs = 1;
  r.adamw = AdamWConfig{o.beta1, o.beta2, o.eps, o.weight_decay};
  r.extras.moe_aux_weight = o.load_balance_loss_weight;
  r.extras.moe_aux_scale = 1.0 / double(o.grad_accum);
  return r;
}

nlohmann::json module_list(const std::string& s) {
  if (s.empty()) return nullptr;
  if (s.compare(0, 3, "re:") == 0) return s.substr(3);
  nlohmann::json l = nlohmann::json::array();
  std::stringstream ss(s);
  std::string p;
  while (std::getline(ss, p, ','))
    if (!p.empty()) l.push_back(p);
  return l;
}

struct Data {
  std::shared_ptr<const SftBuilder> builder;
  std::unique_ptr<SftDataset> set;
};

Data open_data(const std::vector<std::string>& paths, const Tokenizer& tok, const ChatTemplate* tmpl, const RunSettings& rs) {
  Data d;
  d.builder = std::make_shared<SftBuilder>(tok, tmpl, rs.sft);
  d.set = SftDataset::open(paths, d.builder, rs.data);
  return d;
}

// Runs one packed row set through the decoder: each segment is its own sequence chunk.
// per_row (optional) receives the number of chunks of each row.
void row_chunks(const std::vector<PackedRow>& rows, std::vector<SeqChunk>& chunks, std::vector<uint8_t>& mask,
                std::vector<int64_t>* per_row = nullptr) {
  chunks.clear();
  mask.clear();
  if (per_row) per_row->clear();
  for (const auto& r : rows) {
    for (const auto& s : r.segments) chunks.push_back({nullptr, r.ids.data() + s.offset, s.length});
    mask.insert(mask.end(), r.loss_mask.begin(), r.loss_mask.end());
    if (per_row) per_row->push_back(int64_t(r.segments.size()));
  }
}

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Routing statistics of MoE layers over an interval: tokens each expert received, per layer.
nlohmann::json routing_stats(const std::vector<std::vector<int64_t>>& counts) {
  nlohmann::json per_layer = nlohmann::json::array();
  double worst = 0, mean_ratio = 0, mean_cv = 0;
  int64_t unused = 0, layers = 0;
  for (const auto& c : counts) {
    if (c.empty()) continue;
    double total = 0, mx = 0;
    for (int64_t n : c) {
      total += double(n);
      mx = std::max(mx, double(n));
      unused += n == 0 ? 1 : 0;
    }
    const double mean = total / double(c.size());
    double var = 0;
    for (int64_t n : c) var += (double(n) - mean) * (double(n) - mean);
    const double ratio = mean > 0 ? mx / mean : 0, cv = mean > 0 ? std::sqrt(var / double(c.size())) / mean : 0;
    per_layer.push_back(ratio);
    worst = std::max(worst, ratio);
    mean_ratio += ratio;
    mean_cv += cv;
    ++layers;
  }
  if (layers == 0) return nullptr;
  return {{"max_load_over_mean", worst},
          {"mean_max_load_over_mean", mean_ratio / double(layers)},
          {"mean_load_cv", mean_cv / double(layers)},
          {"unused_experts", unused},
          {"per_layer_max_load_over_mean", per_layer}};
}

// Mean loss over the eval set, sharded: batch i is rank (i mod ranks)'s; sums reduced across ranks.
double evaluate(Decoder& dec, SftDataset& set, const LoaderOptions& lo, dist::Comm& comm) {
  BatchLoader loader(set, lo);
  Batch b;
  double sum = 0;
  int64_t n = 0;
  std::vector<SeqChunk> chunks;
  std::vector<uint8_t> mask;
  for (int64_t i = 0; loader.next(b); ++i) {
    if (i % comm.size() != comm.rank()) continue;
    row_chunks(b.rows, chunks, mask);
    auto r = dec.loss(chunks, mask);
    sum += r.sum;
    n += r.tokens;
  }
  comm.allreduce_sum(&sum, 1);
  comm.allreduce_sum(&n, 1);
  return n > 0 ? sum / double(n) : 0.0;
}

}  // namespace

double lr_at(const TrainOptions& o, int64_t step, int64_t total) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) return o.lr * double(step + 1) / double(o.warmup_steps);
  const double span = double(std::max<int64_t>(1, total - o.warmup_steps));
  const double prog = std::min(1.0, double(step - o.warmup_steps) / span);
  const double floor = o.lr * o.min_lr_ratio;
  switch (o.schedule) {
    case LrSchedule::Constant: return o.lr;
    case LrSchedule::Linear: return floor + (o.lr - floor) * (1.0 - prog);
    case LrSchedule::Cosine: return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * prog));
  }
  fail("lr_at: unknown schedule");
}

namespace {

void validate(const TrainOptions& o) {
  if (o.data.empty()) fail("train: no training data (--data FILE or data: in the run config)");
  if (!(o.lora_dropout >= 0.0 && o.lora_dropout < 1.0)) fail("train: lora_dropout must be in [0, 1), found ", o.lora_dropout);
  if (!(o.load_balance_loss_weight >= 0.0)) fail("train: load_balance_loss_weight must be >= 0, found ", o.load_balance_loss_weight);
  if (o.grad_accum < 1 || o.batch_rows < 1 || o.max_len < 2) fail("train: grad_accum, batch_rows must be >= 1 and max_len >= 2");
}

std::unique_ptr<ChatTemplate> open_template(const std::string& model_dir, const std::string& chat_template) {
  try {
    return std::make_unique<ChatTemplate>(open_model_chat_template(model_dir, chat_template));
  } catch (const Error& e) {
    if (!chat_template.empty()) throw;
    std::fprintf(stderr, "[train] no chat template (%s): only plain-text data can be used\n", e.what());
  }
  return nullptr;
}

void print_adapter(const Adapter& adapter, const LoraConfig& lc) {
  for (const auto& w : adapter.warnings) std::fprintf(stderr, "[train] warning: %s\n", w.c_str());
  std::fprintf(stderr, "[train] LoRA r=%lld alpha=%g on %zu modules, %lld trainable parameters\n", (long long)lc.r, lc.alpha,
               adapter.modules.size(), (long long)adapter.num_parameters());
  for (size_t i = 0; i < adapter.modules.size(); ++i)
    if (i < 8 || i + 1 == adapter.modules.size())
      std::fprintf(stderr, "[train]   %s (r=%lld)\n", adapter.modules[i].target.c_str(), (long long)adapter.modules[i].r);
    else if (i == 8)
      std::fprintf(stderr, "[train]   ... %zu more\n", adapter.modules.size() - 9);
}

int64_t count_batches(SftDataset& set, LoaderOptions lo) {
  lo.epochs = 1;
  BatchLoader c(set, lo);
  Batch b;
  int64_t n = 0;
  while (c.next(b)) ++n;
  return n;
}

// Sum of squares of each tensor's elements, and of the change between two versions of it.
double sum_sq(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return s;
}
double diff_sq(const std::vector<float>& now, const std::vector<float>& before) {
  double s = 0;
  for (size_t j = 0; j < now.size(); ++j) {
    const double d = double(now[j]) - before[j];
    s += d * d;
  }
  return s;
}

// One training run: set up (model, adapter, data, optimizer, resume), then the step loop; metrics
// and checkpoints on the way.
class Trainer {
 public:
  Trainer(const std::string& model_dir, const std::string& out_dir, const TrainOptions& o);
  TrainSummary run();

 private:
  struct StepResult {
    double loss = 0, aux = 0, gnorm = 0, lr = 0, seconds = 0;
    double comm_wait = 0;  // data-parallel: seconds waiting for the gradient allreduce after the backward
    int64_t trained = 0, tokens = 0;  // of the global batch (every rank's share)
  };
  void setup_data();
  void resume();
  StepResult step();
  void collect_routing();
  void log_metrics(const StepResult& r);
  nlohmann::json module_norms() const;
  std::string routing_line(nlohmann::json& line);
  void maybe_evaluate();
  void checkpoint();
  void finish(TrainSummary& sum);
  void setup_reducer();
  void check_agreement(const char* when);
  void broadcast_checkpoint();
  bool root() const { return comm_.rank() == 0; }
  int64_t micro_per_step() const { return o_.grad_accum * comm_.size(); }

  const std::string model_dir_, out_dir_;
  const TrainOptions& o_;
  dist::Comm& comm_ = dist::Comm::world();
  std::unique_ptr<dist::GradientReducer> reducer_;
  std::vector<std::vector<size_t>> layer_tensors_;  // reducer tensor indices of each layer's adapter gradients
  Model model_;
  bool moe_ = false;
  RunSettings rs_;
  std::optional<Tokenizer> tok_;
  std::unique_ptr<ChatTemplate> tmpl_;
  Adapter adapter_;
  Data train_data_, eval_data_;
  int64_t total_steps_ = 0;
  AdamW opt_;
  TrainerState st_;
  std::unique_ptr<BatchLoader> loader_;
  std::vector<std::pair<int64_t, double>> loss_hist_, eval_hist_;
  std::unique_ptr<Decoder> dec_;
  std::vector<std::vector<float>*> params_;
  std::vector<std::vector<float>> grads_, before_;
  std::vector<SeqChunk> chunks_;
  std::vector<uint8_t> mask_;
  std::FILE* metrics_ = nullptr;
  bool tty_ = false;
  double t_start_ = 0, tokens_run_ = 0;
  int64_t steps_run_ = 0;
  std::vector<std::vector<int64_t>> routed_;  // MoE: tokens per expert and layer since the last metrics line
  double aux_acc_ = 0;
  int64_t aux_steps_ = 0;
  Cursor consumed_;
  std::unique_ptr<Prefetcher> prefetch_;
  TrainSummary sum_;
};

Trainer::Trainer(const std::string& model_dir, const std::string& out_dir, const TrainOptions& o)
    : model_dir_(model_dir), out_dir_(out_dir), o_(o), model_(Model::load(model_dir)), opt_(AdamWConfig{}) {
  moe_ = model_.config().enable_moe_block;
  if (o.load_balance_loss_weight > 0 && !moe_)
    fail("train: load_balance_loss_weight is ", o.load_balance_loss_weight, " but ", model_dir, " has no MoE layers");
  rs_ = unpack(o, model_);
  // Every micro-batch of the global step (grad_accum on each of the ranks) adds its share.
  rs_.extras.moe_aux_scale = 1.0 / double(micro_per_step());
  auto tok = open_model_tokenizer(model_dir);
  if (!tok) fail("train: ", model_dir, " has no tokenizer.json");
  tok_.emplace(std::move(*tok));
  tmpl_ = open_template(model_dir, o.chat_template);
  adapter_ = Adapter::create(model_, rs_.lora, o.seed);
  if (root()) print_adapter(adapter_, rs_.lora);
  if (comm_.distributed()) {
    if (root()) std::fprintf(stderr, "[train] data parallel: %s, %d ranks x %lld micro-batches = %lld micro-batches per step\n",
                             comm_.describe().c_str(), comm_.size(), (long long)o.grad_accum, (long long)micro_per_step());
    if (!comm_.all_equal(std::hash<std::string>{}(model_fingerprint(model_))))
      fail("train: the ranks loaded different models (", model_dir, " differs between machines)");
  }
  setup_data();

  PlanInput pin;
  pin.context = o.max_len;
  pin.chunk = o.max_len;
  pin.batch = o.batch_rows;
  pin.train = true;
  pin.checkpointing = o.grad_checkpointing;
  pin.lora_rank = o.lora_r;
  pin.lora_params = adapter_.num_parameters();  // rank_pattern and the chosen targets included
  check_fits(plan_memory(model_, pin), "train");

  opt_ = AdamW(rs_.adamw);
  st_.options = o.values();
  st_.options.erase("resume");
  st_.options.erase("stop_after");
  st_.options.erase("threads");
  st_.model_fingerprint = model_fingerprint(model_);
  loader_ = std::make_unique<BatchLoader>(*train_data_.set, rs_.loader);
  st_.options.erase("dist_check_every");
  if (o.resume) resume();
  if (root()) write_file_atomic(out_dir + "/run_config.json", nlohmann::json(o.values()).dump(2) + "\n");

  dec_ = std::make_unique<Decoder>(model_);
  dec_->set_lora(bind_adapter(adapter_, model_));
  for (auto& m : adapter_.modules) {
    params_.push_back(&m.A);
    params_.push_back(&m.B);
  }
  setup_reducer();
  check_agreement("at the start");
  if (root()) {
    metrics_ = std::fopen((out_dir + "/metrics.jsonl").c_str(), o.resume ? "a" : "w");
    if (!metrics_) fail("train: cannot write ", out_dir, "/metrics.jsonl");
  }
  tty_ = root() && ::isatty(2);
}

// Data parallel: one gradient slot per adapter tensor (sized as the decoder sizes them), registered
// with the reducer in the order the backward pass finishes them: last layer first.
void Trainer::setup_reducer() {
  grads_.assign(2 * adapter_.modules.size(), {});
  for (size_t i = 0; i < adapter_.modules.size(); ++i) {
    grads_[2 * i].assign(adapter_.modules[i].A.size(), 0.0f);
    grads_[2 * i + 1].assign(adapter_.modules[i].B.size(), 0.0f);
  }
  if (!comm_.distributed()) return;
  const int64_t L = model_.config().num_layers;
  layer_tensors_.assign(size_t(L), {});
  std::vector<std::pair<float*, size_t>> tensors;
  for (int64_t l = L - 1; l >= 0; --l)
    for (size_t i = 0; i < adapter_.modules.size(); ++i) {
      if (adapter_.modules[i].layer != l) continue;
      for (size_t k : {2 * i, 2 * i + 1}) {
        layer_tensors_[size_t(l)].push_back(tensors.size());
        tensors.push_back({grads_[k].data(), grads_[k].size()});
      }
    }
  for (const auto& m : adapter_.modules)
    if (m.layer < 0 || m.layer >= L) fail("train: adapter module ", m.target, " has no decoder layer (", m.layer, ")");
  reducer_ = std::make_unique<dist::GradientReducer>(comm_, std::move(tensors));
}

// Every rank must hold the same adapter (same init, same reduced gradients, same AdamW): compare a
// checksum of its tensors and stop the run, loudly, when they differ.
void Trainer::check_agreement(const char* when) {
  if (!comm_.distributed()) return;
  std::vector<const std::vector<float>*> t;
  for (auto* p : params_) t.push_back(p);
  for (auto& m : opt_.m()) t.push_back(&m);
  for (auto& v : opt_.v()) t.push_back(&v);
  const uint64_t h = dist::checksum(t);
  if (!comm_.all_equal(h))
    fail("train: the ranks' adapters differ ", when, " (step ", st_.step, "; rank ", comm_.rank(), " checksum ", h,
         "): data-parallel replicas diverged, stopping");
}

void Trainer::setup_data() {
  train_data_ = open_data(o_.data, *tok_, tmpl_.get(), rs_);
  train_data_.set->prepare_all(0);
  if (root()) {
    std::fprintf(stderr, "[train] data: %s\n", train_data_.set->report().summary().c_str());
    for (const auto& is : train_data_.set->report().issues) std::fprintf(stderr, "[train]   %s\n", is.message.c_str());
  }
  if (!o_.eval_data.empty()) {
    eval_data_ = open_data({o_.eval_data}, *tok_, tmpl_.get(), rs_);
    eval_data_.set->prepare_all(0);
  }
  const int64_t batches_per_epoch = count_batches(*train_data_.set, rs_.loader);
  if (batches_per_epoch == 0) fail("train: the training data yields no batch");
  total_steps_ = o_.steps > 0 ? o_.steps
                              : std::max<int64_t>(1, (o_.epochs * batches_per_epoch + micro_per_step() - 1) / micro_per_step());
}

// Rank 0 reads the latest checkpoint (the run folder need not be shared between machines) and
// sends it to the others. The rank count, and grad_accum with it, may change: the checkpoint holds
// the global data cursor, and the next step takes the next ranks x grad_accum micro-batches from it.
void Trainer::resume() {
  std::string ck, state_json;
  TrainerState prev;
  if (root()) {
    try {
      ck = latest_checkpoint(out_dir_);
      if (ck.empty()) fail("train: --resume but ", out_dir_, "/checkpoints has no complete checkpoint");
      load_checkpoint(ck, model_, adapter_, opt_, prev);
    } catch (...) {
      if (!comm_.distributed()) throw;
      int64_t bad = 1;
      comm_.broadcast(&bad, sizeof bad);
      throw;
    }
    int64_t bad = 0;
    comm_.broadcast(&bad, sizeof bad);
  } else {
    int64_t bad = 0;
    comm_.broadcast(&bad, sizeof bad);
    if (bad) fail("train: rank 0 could not load the checkpoint to resume from");
  }
  if (comm_.distributed()) {
    if (root())
      state_json = nlohmann::json({{"ck", ck}, {"step", prev.step}, {"cursor", prev.data_cursor}, {"options", prev.options},
                                   {"tokens_seen", prev.tokens_seen}, {"extra", prev.extra}, {"adam_t", opt_.steps()}})
                       .dump();
    int64_t len = int64_t(state_json.size());
    comm_.broadcast(&len, sizeof len);
    state_json.resize(size_t(len));
    comm_.broadcast(state_json.data(), state_json.size());
    const nlohmann::json j = nlohmann::json::parse(state_json);
    ck = j["ck"].get<std::string>();
    prev.step = j["step"].get<int64_t>();
    prev.data_cursor = j["cursor"].get<std::string>();
    prev.options = j["options"];
    prev.tokens_seen = j["tokens_seen"].get<double>();
    prev.extra = j["extra"];
    opt_.set_steps(j["adam_t"].get<int64_t>());
    const size_t n = 2 * adapter_.modules.size();
    if (!root()) {
      opt_.m().assign(n, {});
      opt_.v().assign(n, {});
    }
    for (size_t i = 0; i < adapter_.modules.size(); ++i) {
      auto& m = adapter_.modules[i];
      for (size_t k : {2 * i, 2 * i + 1}) {
        std::vector<float>& p = k % 2 == 0 ? m.A : m.B;
        opt_.m()[k].resize(p.size());
        opt_.v()[k].resize(p.size());
        for (std::vector<float>* t : {&p, &opt_.m()[k], &opt_.v()[k]}) comm_.broadcast(t->data(), t->size() * sizeof(float));
      }
    }
  }
  nlohmann::json mine = st_.options;
  for (auto it = mine.begin(); it != mine.end(); ++it)
    if (prev.options.contains(it.key()) && prev.options[it.key()] != *it && it.key() != "grad_accum")
      fail("train: cannot resume ", ck, ": option ", it.key(), " was ", prev.options[it.key()].dump(), ", now ", it->dump());
  const int64_t prev_micro = prev.extra.value("micro_batches_per_step", int64_t(0));
  if (root() && prev_micro > 0 && prev_micro != micro_per_step())
    std::fprintf(stderr, "[train] note: the checkpoint's steps took %lld micro-batches (ranks x grad_accum), these take %lld: "
                 "the global batch changes from here\n", (long long)prev_micro, (long long)micro_per_step());
  st_.step = prev.step;
  st_.tokens_seen = prev.tokens_seen;
  st_.extra = prev.extra;
  loader_->restore(prev.data_cursor);
  if (st_.extra.contains("loss_history"))
    for (const auto& e : st_.extra["loss_history"]) loss_hist_.push_back({e[0].get<int64_t>(), e[1].get<double>()});
  if (st_.extra.contains("eval_history"))
    for (const auto& e : st_.extra["eval_history"]) eval_hist_.push_back({e[0].get<int64_t>(), e[1].get<double>()});
  if (root()) std::fprintf(stderr, "[train] resumed from %s at step %lld\n", ck.c_str(), (long long)st_.step);
}

// One optimizer step: its micro-batches (the loss is normalised by the trained tokens of the
// whole step, not by the number of micro-batches), clipping, AdamW.
//
// Data parallel (N ranks): the step takes the next N x grad_accum micro-batches from the global
// cursor; micro-batch j is rank (j mod N)'s. Every rank reads (not runs) all of them, so each knows
// the global trained-token count that normalises the loss without a message, and the cursor after
// the step. One rank's share, accumulated, is then summed across ranks by the reducer, bucket by
// bucket while the last micro-batch's backward still runs: the same gradient as one rank with
// grad_accum N x grad_accum, up to the order of the float sums.
Trainer::StepResult Trainer::step() {
  StepResult r;
  const double t0 = now();
  const int64_t N = comm_.size(), rank = comm_.rank();
  std::vector<std::pair<int64_t, Batch>> micro;  // (global micro-batch index, batch) of this rank
  Batch batch;
  for (int64_t j = 0; j < micro_per_step(); ++j) {
    if (!prefetch_->next(batch)) fail("train: the data loader produced no batch");  // it runs without an epoch limit
    consumed_ = batch.next;
    r.trained += batch.trained();
    r.tokens += batch.tokens();
    if (j % N == rank) micro.push_back({j, std::move(batch)});
  }
  for (auto& g : grads_) std::fill(g.begin(), g.end(), 0.0f);
  double loss_sum = 0;
  dec_->reset_expert_stats();
  for (size_t a = 0; a < micro.size(); ++a) {
    const Batch& mb = micro[a].second;
    row_chunks(mb.rows, chunks_, mask_, &rs_.extras.row_chunks);
    // Dropout masks depend on (seed, step, global micro-batch) only: a resumed run, or another rank
    // count, draws the same ones.
    rs_.extras.dropout_seed = mix_seed(mix_seed(o_.seed, uint64_t(st_.step)), uint64_t(micro[a].first));
    if (reducer_ && a + 1 == micro.size())
      rs_.extras.layer_grads_done = [this](int64_t l) {
        for (size_t t : layer_tensors_[size_t(l)]) reducer_->ready(t);
      };
    auto fb = dec_->forward_backward(chunks_, mask_, grads_, double(std::max<int64_t>(r.trained, 1)),
                                     o_.grad_checkpointing, &rs_.extras);
    rs_.extras.layer_grads_done = nullptr;
    loss_sum += fb.sum;
    r.aux += fb.aux;
  }
  if (reducer_) {
    r.comm_wait = reducer_->finish();
    double sums[2] = {loss_sum, r.aux};
    comm_.allreduce_sum(sums, 2);
    loss_sum = sums[0];
    r.aux = sums[1];
  }
  if (moe_) collect_routing();
  aux_acc_ += r.aux;
  ++aux_steps_;
  r.loss = r.trained > 0 ? loss_sum / double(r.trained) : 0.0;
  double gn2 = 0;
  for (const auto& g : grads_)
    for (float x : g) gn2 += double(x) * double(x);
  r.gnorm = std::sqrt(gn2);
  if (o_.max_grad_norm > 0 && r.gnorm > o_.max_grad_norm) {
    const float c = float(o_.max_grad_norm / (r.gnorm + 1e-6));
    for (auto& g : grads_)
      for (auto& x : g) x *= c;
  }
  r.lr = lr_at(o_, st_.step, total_steps_);
  before_.clear();
  if (o_.log_every > 0 && ((st_.step + 1) % o_.log_every == 0 || st_.step + 1 == total_steps_))
    for (auto* p : params_) before_.push_back(*p);
  opt_.step(params_, grads_, r.lr);
  ++st_.step;
  ++steps_run_;
  st_.tokens_seen += double(r.tokens);
  tokens_run_ += double(r.tokens);
  r.seconds = now() - t0;
  return r;
}

// This step's tokens per expert (summed over the ranks) into the interval's routing statistics.
void Trainer::collect_routing() {
  const auto& ec = dec_->expert_counts();
  std::vector<int64_t> flat;
  for (const auto& l : ec) flat.insert(flat.end(), l.begin(), l.end());
  comm_.allreduce_sum(flat.data(), flat.size());
  if (routed_.empty()) routed_.assign(ec.size(), {});
  size_t k = 0;
  for (size_t l = 0; l < ec.size(); ++l) {
    if (routed_[l].empty()) routed_[l].assign(ec[l].size(), 0);
    for (size_t e = 0; e < ec[l].size(); ++e) routed_[l][e] += flat[k++];
  }
}

// Per-module gradient and update norms (the update against the parameters before this step).
nlohmann::json Trainer::module_norms() const {
  nlohmann::json mod = nlohmann::json::object();
  for (size_t i = 0; i < adapter_.modules.size(); ++i) {
    const LoraModule& m = adapter_.modules[i];
    mod[m.target] = {{"grad_norm_A", std::sqrt(sum_sq(grads_[2 * i]))},
                     {"grad_norm_B", std::sqrt(sum_sq(grads_[2 * i + 1]))},
                     {"update_norm_A", std::sqrt(diff_sq(m.A, before_[2 * i]))},
                     {"update_norm_B", std::sqrt(diff_sq(m.B, before_[2 * i + 1]))}};
  }
  return mod;
}

// MoE routing since the previous metrics line (the aux loss is its mean per step): into the
// metrics line, and the progress bar's part.
std::string Trainer::routing_line(nlohmann::json& line) {
  nlohmann::json rs = routing_stats(routed_);
  if (o_.load_balance_loss_weight > 0) {
    rs["aux_loss"] = aux_acc_ / double(std::max<int64_t>(aux_steps_, 1));
    line["aux_loss"] = rs["aux_loss"];
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, " | experts max/mean %.2f, %lld idle", rs["max_load_over_mean"].get<double>(),
                (long long)rs["unused_experts"].get<int64_t>());
  std::string extra = buf;
  if (o_.load_balance_loss_weight > 0) {
    std::snprintf(buf, sizeof buf, " | aux %.4g", rs["aux_loss"].get<double>());
    extra += buf;
  }
  line["routing"] = rs;
  routed_.clear();
  return extra;
}

void Trainer::log_metrics(const StepResult& r) {
  const double tps = tokens_run_ / (now() - t_start_);
  const double eta = double(total_steps_ - st_.step) * (now() - t_start_) / double(steps_run_);
  if (before_.empty()) return;  // not a logging step
  if (!root()) {  // rank 0 alone writes metrics and the progress bar
    routed_.clear();
    aux_acc_ = 0;
    aux_steps_ = 0;
    return;
  }
  nlohmann::json line = {{"step", st_.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.gnorm},
                         {"trained_tokens", r.trained}, {"tokens", r.tokens}, {"step_seconds", r.seconds},
                         {"tokens_per_s", tps}, {"epoch", consumed_.epoch}, {"modules", module_norms()}};
  if (comm_.distributed()) {
    line["ranks"] = comm_.size();
    line["allreduce_wait_seconds"] = r.comm_wait;
  }
  const std::string extra = moe_ ? routing_line(line) : std::string();
  aux_acc_ = 0;
  aux_steps_ = 0;
  std::fprintf(metrics_, "%s\n", line.dump().c_str());
  std::fflush(metrics_);
  std::fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.3g | grad %.3g | %.0f tok/s%s | ETA %s%s", tty_ ? "\r" : "",
               (long long)st_.step, (long long)total_steps_, r.loss, r.lr, r.gnorm, tps, extra.c_str(),
               fmt_time(eta).c_str(), tty_ ? "   " : "\n");
  std::fflush(stderr);
}

void Trainer::maybe_evaluate() {
  if (!eval_data_.set || o_.eval_every <= 0 || st_.step % o_.eval_every != 0) return;
  const double el = evaluate(*dec_, *eval_data_.set, rs_.eval_loader, comm_);
  eval_hist_.push_back({st_.step, el});
  if (!root()) return;
  std::fprintf(metrics_, "%s\n", nlohmann::json({{"step", st_.step}, {"eval_loss", el}}).dump().c_str());
  std::fprintf(stderr, "%s[train] step %lld eval loss %.4f\n", tty_ ? "\n" : "", (long long)st_.step, el);
}

// The checkpoint records the cursor after the last batch consumed (the loader itself is further
// ahead: batches come from the Prefetcher's thread).
void Trainer::checkpoint() {
  BatchLoader at(*train_data_.set, rs_.loader);
  at.seek(consumed_);
  st_.data_cursor = at.save();
  nlohmann::json lh = nlohmann::json::array(), eh = nlohmann::json::array();
  for (const auto& [s, l] : loss_hist_) lh.push_back({s, l});
  for (const auto& [s, l] : eval_hist_) eh.push_back({s, l});
  st_.extra["loss_history"] = lh;
  st_.extra["eval_history"] = eh;
  st_.extra["ranks"] = comm_.size();
  st_.extra["micro_batches_per_step"] = micro_per_step();
  if (!root()) return;  // the replicas are identical: rank 0 alone writes
  save_checkpoint(out_dir_, model_, adapter_, opt_, st_, o_.keep_last);
  write_file_atomic(out_dir_ + "/loss.svg", loss_svg(loss_hist_, eval_hist_));
}

TrainSummary Trainer::run() {
  t_start_ = now();
  consumed_ = loader_->cursor();
  prefetch_ = std::make_unique<Prefetcher>(*loader_, 4);
  while (st_.step < total_steps_) {
    const StepResult r = step();
    if (steps_run_ == 1) sum_.first_loss = r.loss;
    sum_.last_loss = r.loss;
    loss_hist_.push_back({st_.step, r.loss});
    if (o_.dist_check_every > 0 && st_.step % o_.dist_check_every == 0) check_agreement("after an optimizer step");
    log_metrics(r);
    maybe_evaluate();
    const bool stop = o_.stop_after > 0 && steps_run_ >= o_.stop_after;
    if ((o_.save_every > 0 && st_.step % o_.save_every == 0) || stop || st_.step == total_steps_) checkpoint();
    if (stop) break;
  }
  prefetch_.reset();
  finish(sum_);
  return sum_;
}

void Trainer::finish(TrainSummary& sum) {
  if (tty_) std::fprintf(stderr, "\n");
  if (metrics_) std::fclose(metrics_);
  metrics_ = nullptr;
  check_agreement("at the end");
  // The "loss goes down, outputs don't change" failure: an adapter whose B never moved.
  for (const auto& m : adapter_.modules)
    if (root() && sum_sq(m.B) == 0 && st_.step > 0)
      std::fprintf(stderr, "[train] warning: %s: lora_B is still exactly zero after %lld steps: this adapter changes nothing\n",
                   m.target.c_str(), (long long)st_.step);
  if (eval_data_.set) {
    sum.eval_loss = evaluate(*dec_, *eval_data_.set, rs_.eval_loader, comm_);
    if (root()) std::fprintf(stderr, "[train] eval loss %.4f\n", sum.eval_loss);
  }
  sum.steps = st_.step;
  sum.tokens_per_s = tokens_run_ / std::max(1e-9, now() - t_start_);
  if (st_.step >= total_steps_) {
    sum.adapter_dir = out_dir_ + "/adapter";
    if (root()) adapter_.save_peft(sum.adapter_dir, model_dir_);
  }
  if (root())
    std::fprintf(stderr, "[train] %lld steps, loss %.4f -> %.4f, %.0f tokens/s%s%s\n", (long long)st_.step, sum.first_loss,
               sum.last_loss, sum.tokens_per_s, sum.adapter_dir.empty() ? "" : ", adapter: ", sum.adapter_dir.c_str());
}

}  // namespace

TrainSummary train(const std::string& model_dir, const std::string& out_dir, const TrainOptions& o) {
  validate(o);
  dist::Comm& comm = dist::Comm::world();
  if (o.threads > 0) omp_set_num_threads(int(o.threads));
  else if (const int t = dist::default_threads(comm); t > 0) omp_set_num_threads(t);
  if (comm.distributed() && comm.rank() == 0)
    std::fprintf(stderr, "[train] %d ranks (%d on this machine), %d threads per rank\n", comm.size(), comm.local_size(),
                 omp_get_max_threads());
  make_dirs(out_dir);
  return Trainer(model_dir, out_dir, o).run();
}

}  // namespace gt
