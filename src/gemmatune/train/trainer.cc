#include "gemmatune/train/trainer.h"

#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/packing.h"
#include "gemmatune/data/sft.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/model/plan.h"
#include "gemmatune/train/adamw.h"
#include "gemmatune/train/checkpoint.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

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

struct Data {
  std::shared_ptr<const SftBuilder> builder;
  std::unique_ptr<SftDataset> set;
};

Data open_data(const std::vector<std::string>& paths, const Tokenizer& tok, const ChatTemplate* tmpl, const TrainOptions& o) {
  SftOptions so;
  so.mode = parse_sft_mode(o.sft_mode);
  Data d;
  d.builder = std::make_shared<SftBuilder>(tok, tmpl, so);
  DataOptions dopt;
  dopt.max_len = o.max_len;
  dopt.truncation = parse_truncation(o.truncation);
  dopt.on_bad = parse_on_bad(o.on_bad_example);
  d.set = SftDataset::open(paths, d.builder, dopt);
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

double evaluate(Decoder& dec, SftDataset& set, const TrainOptions& o) {
  LoaderOptions lo;
  lo.max_len = o.max_len;
  lo.batch_rows = o.batch_rows;
  lo.pack = o.pack;
  lo.shuffle = false;
  lo.epochs = 1;
  BatchLoader loader(set, lo);
  Batch b;
  double sum = 0;
  int64_t n = 0;
  std::vector<SeqChunk> chunks;
  std::vector<uint8_t> mask;
  while (loader.next(b)) {
    row_chunks(b.rows, chunks, mask);
    auto r = dec.loss(chunks, mask);
    sum += r.sum;
    n += r.tokens;
  }
  return n > 0 ? sum / double(n) : 0.0;
}

}  // namespace

double lr_at(const TrainOptions& o, int64_t step, int64_t total) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) return o.lr * double(step + 1) / double(o.warmup_steps);
  const double span = double(std::max<int64_t>(1, total - o.warmup_steps));
  const double prog = std::min(1.0, double(step - o.warmup_steps) / span);
  const double floor = o.lr * o.min_lr_ratio;
  if (o.schedule == "constant") return o.lr;
  if (o.schedule == "linear") return floor + (o.lr - floor) * (1.0 - prog);
  if (o.schedule == "cosine") return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * prog));
  fail("unknown schedule '", o.schedule, "' (cosine, linear or constant)");
}

TrainSummary train(const std::string& model_dir, const std::string& out_dir, const TrainOptions& o) {
  if (o.data.empty()) fail("train: no training data (--data FILE or data: in the run config)");
  if (!(o.lora_dropout >= 0.0 && o.lora_dropout < 1.0)) fail("train: lora_dropout must be in [0, 1), found ", o.lora_dropout);
  if (!(o.load_balance_loss_weight >= 0.0)) fail("train: load_balance_loss_weight must be >= 0, found ", o.load_balance_loss_weight);
  if (o.grad_accum < 1 || o.batch_rows < 1 || o.max_len < 2) fail("train: grad_accum, batch_rows must be >= 1 and max_len >= 2");
  if (o.threads > 0) omp_set_num_threads(int(o.threads));
  lr_at(o, 0, 1);  // validates the schedule name
  ::mkdir(out_dir.c_str(), 0755);
  if (!is_directory(out_dir)) fail("train: cannot create the output folder ", out_dir);

  Model model = Model::load(model_dir);
  const bool moe = model.config().enable_moe_block;
  if (o.load_balance_loss_weight > 0 && !moe)
    fail("train: load_balance_loss_weight is ", o.load_balance_loss_weight, " but ", model_dir, " has no MoE layers");
  const std::string tok_path = model_dir + "/tokenizer.json";
  if (!file_exists(tok_path)) fail("train: ", model_dir, " has no tokenizer.json");
  Tokenizer tok = Tokenizer::from_file(tok_path);
  std::unique_ptr<ChatTemplate> tmpl;
  try {
    tmpl = std::make_unique<ChatTemplate>(ChatTemplate::from_model_dir(model_dir, o.chat_template));
  } catch (const Error& e) {
    if (!o.chat_template.empty()) throw;
    std::fprintf(stderr, "[train] no chat template (%s): only plain-text data can be used\n", e.what());
  }

  // LoRA setup.
  LoraConfig lc = default_lora_config(model);
  lc.r = o.lora_r;
  lc.alpha = o.lora_alpha;
  lc.use_rslora = o.use_rslora;
  lc.dropout = o.lora_dropout;
  lc.init = o.lora_init;
  if (!o.target_modules.empty()) lc.target_modules = module_list(o.target_modules);
  if (!o.target_parameters.empty()) {
    lc.target_parameters.clear();
    for (const auto& p : module_list(o.target_parameters)) lc.target_parameters.push_back(p.get<std::string>());
  }
  if (!o.exclude_modules.empty()) lc.exclude_modules = module_list(o.exclude_modules);
  Adapter adapter = Adapter::create(model, lc, o.seed);
  for (const auto& w : adapter.warnings) std::fprintf(stderr, "[train] warning: %s\n", w.c_str());
  std::fprintf(stderr, "[train] LoRA r=%lld alpha=%g on %zu modules, %lld trainable parameters\n", (long long)lc.r, lc.alpha,
               adapter.modules.size(), (long long)adapter.num_parameters());
  for (size_t i = 0; i < adapter.modules.size(); ++i)
    if (i < 8 || i + 1 == adapter.modules.size())
      std::fprintf(stderr, "[train]   %s (r=%lld)\n", adapter.modules[i].target.c_str(), (long long)adapter.modules[i].r);
    else if (i == 8)
      std::fprintf(stderr, "[train]   ... %zu more\n", adapter.modules.size() - 9);

  // Data.
  Data train_data = open_data(o.data, tok, tmpl.get(), o);
  train_data.set->prepare_all(0);
  std::fprintf(stderr, "[train] data: %s\n", train_data.set->report().summary().c_str());
  for (const auto& is : train_data.set->report().issues) std::fprintf(stderr, "[train]   %s\n", is.message.c_str());
  Data eval_data;
  if (!o.eval_data.empty()) {
    eval_data = open_data({o.eval_data}, tok, tmpl.get(), o);
    eval_data.set->prepare_all(0);
  }
  LoaderOptions lo;
  lo.max_len = o.max_len;
  lo.batch_rows = o.batch_rows;
  lo.pack = o.pack;
  lo.seed = o.seed;
  int64_t batches_per_epoch = 0;
  {
    LoaderOptions count = lo;
    count.epochs = 1;
    BatchLoader c(*train_data.set, count);
    Batch b;
    while (c.next(b)) ++batches_per_epoch;
  }
  if (batches_per_epoch == 0) fail("train: the training data yields no batch");
  const int64_t total_steps =
      o.steps > 0 ? o.steps : std::max<int64_t>(1, (o.epochs * batches_per_epoch + o.grad_accum - 1) / o.grad_accum);

  PlanInput pin;
  pin.context = o.max_len;
  pin.chunk = o.max_len;
  pin.batch = o.batch_rows;
  pin.train = true;
  pin.lora_rank = o.lora_r;
  check_fits(plan_memory(model, pin), "train");

  AdamWConfig ac{o.beta1, o.beta2, o.eps, o.weight_decay};
  AdamW opt(ac);
  TrainerState st;
  st.options = o.values();
  st.options.erase("resume");
  st.options.erase("stop_after");
  st.options.erase("threads");
  st.model_fingerprint = model_fingerprint(model);
  BatchLoader loader(*train_data.set, lo);
  std::vector<std::pair<int64_t, double>> loss_hist, eval_hist;
  if (o.resume) {
    const std::string ck = latest_checkpoint(out_dir);
    if (ck.empty()) fail("train: --resume but ", out_dir, "/checkpoints has no complete checkpoint");
    TrainerState prev;
    load_checkpoint(ck, model, adapter, opt, prev);
    nlohmann::json mine = st.options;
    for (auto it = mine.begin(); it != mine.end(); ++it)
      if (prev.options.contains(it.key()) && prev.options[it.key()] != *it)
        fail("train: cannot resume ", ck, ": option ", it.key(), " was ", prev.options[it.key()].dump(), ", now ", it->dump());
    st.step = prev.step;
    st.tokens_seen = prev.tokens_seen;
    st.extra = prev.extra;
    loader.restore(prev.data_cursor);
    if (st.extra.contains("loss_history"))
      for (const auto& e : st.extra["loss_history"]) loss_hist.push_back({e[0].get<int64_t>(), e[1].get<double>()});
    if (st.extra.contains("eval_history"))
      for (const auto& e : st.extra["eval_history"]) eval_hist.push_back({e[0].get<int64_t>(), e[1].get<double>()});
    std::fprintf(stderr, "[train] resumed from %s at step %lld\n", ck.c_str(), (long long)st.step);
  }
  write_file_atomic(out_dir + "/run_config.json", nlohmann::json(o.values()).dump(2) + "\n");

  Decoder dec(model);
  dec.set_lora(bind_adapter(adapter, model));
  std::vector<std::vector<float>*> params;
  for (auto& m : adapter.modules) {
    params.push_back(&m.A);
    params.push_back(&m.B);
  }
  std::vector<std::vector<float>> grads;
  std::vector<SeqChunk> chunks;
  std::vector<uint8_t> mask;
  std::FILE* metrics = std::fopen((out_dir + "/metrics.jsonl").c_str(), o.resume ? "a" : "w");
  if (!metrics) fail("train: cannot write ", out_dir, "/metrics.jsonl");
  const bool tty = ::isatty(2);
  TrainSummary sum;
  const double t_start = now();
  double tokens_run = 0;
  int64_t steps_run = 0;
  std::vector<std::vector<int64_t>> routed;  // MoE: tokens per expert and layer since the last metrics line
  double aux_acc = 0;
  int64_t aux_steps = 0;
  TrainExtras extras;
  extras.moe_aux_weight = o.load_balance_loss_weight;
  extras.moe_aux_scale = 1.0 / double(o.grad_accum);

  // Batches come from the Prefetcher's thread, ahead of the model; the checkpoint records the
  // cursor after the last batch consumed (the loader itself is further ahead).
  Cursor consumed = loader.cursor();
  Prefetcher prefetch(loader, 4);
  auto checkpoint = [&]() {
    BatchLoader at(*train_data.set, lo);
    at.seek(consumed);
    st.data_cursor = at.save();
    nlohmann::json lh = nlohmann::json::array(), eh = nlohmann::json::array();
    for (const auto& [s, l] : loss_hist) lh.push_back({s, l});
    for (const auto& [s, l] : eval_hist) eh.push_back({s, l});
    st.extra["loss_history"] = lh;
    st.extra["eval_history"] = eh;
    save_checkpoint(out_dir, model, adapter, opt, st, o.keep_last);
    write_file_atomic(out_dir + "/loss.svg", loss_svg(loss_hist, eval_hist));
  };

  Batch batch;
  while (st.step < total_steps) {
    const double t0 = now();
    // Gather the micro-batches of this step first: the loss is normalised by the trained tokens
    // of the whole step, not by the number of micro-batches.
    std::vector<Batch> micro;
    int64_t trained = 0;
    for (int64_t a = 0; a < o.grad_accum; ++a) {
      if (!prefetch.next(batch)) fail("train: the data loader produced no batch");  // it runs without an epoch limit
      consumed = batch.next;
      trained += batch.trained();
      micro.push_back(batch);
    }
    for (auto& g : grads) std::fill(g.begin(), g.end(), 0.0f);
    double loss_sum = 0, aux = 0;
    int64_t toks = 0;
    dec.reset_expert_stats();
    for (size_t a = 0; a < micro.size(); ++a) {
      const Batch& mb = micro[a];
      row_chunks(mb.rows, chunks, mask, &extras.row_chunks);
      // Dropout masks depend on (seed, step, micro-batch) only: a resumed run draws the same ones.
      extras.dropout_seed = mix_seed(mix_seed(o.seed, uint64_t(st.step)), a);
      auto r = dec.forward_backward(chunks, mask, grads, double(std::max<int64_t>(trained, 1)), o.grad_checkpointing, &extras);
      loss_sum += r.sum;
      aux += r.aux;
      toks += mb.tokens();
    }
    if (moe) {
      const auto& ec = dec.expert_counts();
      if (routed.empty()) routed.assign(ec.size(), {});
      for (size_t l = 0; l < ec.size(); ++l) {
        if (routed[l].empty()) routed[l].assign(ec[l].size(), 0);
        for (size_t e = 0; e < ec[l].size(); ++e) routed[l][e] += ec[l][e];
      }
    }
    aux_acc += aux;
    ++aux_steps;
    const double loss = trained > 0 ? loss_sum / double(trained) : 0.0;
    double gn2 = 0;
    for (const auto& g : grads)
      for (float x : g) gn2 += double(x) * double(x);
    const double gnorm = std::sqrt(gn2);
    if (o.max_grad_norm > 0 && gnorm > o.max_grad_norm) {
      const float c = float(o.max_grad_norm / (gnorm + 1e-6));
      for (auto& g : grads)
        for (auto& x : g) x *= c;
    }
    const double lr = lr_at(o, st.step, total_steps);
    std::vector<std::vector<float>> before;
    const bool log_now = o.log_every > 0 && ((st.step + 1) % o.log_every == 0 || st.step + 1 == total_steps);
    if (log_now)
      for (auto* p : params) before.push_back(*p);
    opt.step(params, grads, lr);
    ++st.step;
    ++steps_run;
    st.tokens_seen += double(toks);
    tokens_run += double(toks);
    const double dt = now() - t0;
    if (steps_run == 1) sum.first_loss = loss;
    sum.last_loss = loss;
    loss_hist.push_back({st.step, loss});
    const double tps = tokens_run / (now() - t_start);
    const double eta = double(total_steps - st.step) * (now() - t_start) / double(steps_run);
    if (log_now) {
      nlohmann::json mod = nlohmann::json::object();
      for (size_t i = 0; i < adapter.modules.size(); ++i) {
        double ga = 0, gb = 0, ua = 0, ub = 0;
        for (float x : grads[2 * i]) ga += double(x) * x;
        for (float x : grads[2 * i + 1]) gb += double(x) * x;
        for (size_t j = 0; j < adapter.modules[i].A.size(); ++j) {
          const double d = double(adapter.modules[i].A[j]) - before[2 * i][j];
          ua += d * d;
        }
        for (size_t j = 0; j < adapter.modules[i].B.size(); ++j) {
          const double d = double(adapter.modules[i].B[j]) - before[2 * i + 1][j];
          ub += d * d;
        }
        mod[adapter.modules[i].target] = {{"grad_norm_A", std::sqrt(ga)}, {"grad_norm_B", std::sqrt(gb)},
                                          {"update_norm_A", std::sqrt(ua)}, {"update_norm_B", std::sqrt(ub)}};
      }
      nlohmann::json line = {{"step", st.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                             {"trained_tokens", trained}, {"tokens", toks}, {"step_seconds", dt}, {"tokens_per_s", tps},
                             {"epoch", consumed.epoch}, {"modules", mod}};
      std::string extra;
      if (moe) {
        // Routing since the previous metrics line; the aux loss is its mean per step.
        nlohmann::json rs = routing_stats(routed);
        if (o.load_balance_loss_weight > 0) {
          rs["aux_loss"] = aux_acc / double(std::max<int64_t>(aux_steps, 1));
          line["aux_loss"] = rs["aux_loss"];
        }
        char buf[96];
        std::snprintf(buf, sizeof buf, " | experts max/mean %.2f, %lld idle", rs["max_load_over_mean"].get<double>(),
                      (long long)rs["unused_experts"].get<int64_t>());
        extra = buf;
        if (o.load_balance_loss_weight > 0) {
          std::snprintf(buf, sizeof buf, " | aux %.4g", rs["aux_loss"].get<double>());
          extra += buf;
        }
        line["routing"] = rs;
        routed.clear();
      }
      aux_acc = 0;
      aux_steps = 0;
      std::fprintf(metrics, "%s\n", line.dump().c_str());
      std::fflush(metrics);
      std::fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.3g | grad %.3g | %.0f tok/s%s | ETA %s%s", tty ? "\r" : "",
                   (long long)st.step, (long long)total_steps, loss, lr, gnorm, tps, extra.c_str(), fmt_time(eta).c_str(),
                   tty ? "   " : "\n");
      std::fflush(stderr);
    }
    if (eval_data.set && o.eval_every > 0 && st.step % o.eval_every == 0) {
      const double el = evaluate(dec, *eval_data.set, o);
      eval_hist.push_back({st.step, el});
      std::fprintf(metrics, "%s\n", nlohmann::json({{"step", st.step}, {"eval_loss", el}}).dump().c_str());
      std::fprintf(stderr, "%s[train] step %lld eval loss %.4f\n", tty ? "\n" : "", (long long)st.step, el);
    }
    const bool stop = o.stop_after > 0 && steps_run >= o.stop_after;
    if ((o.save_every > 0 && st.step % o.save_every == 0) || stop || st.step == total_steps) checkpoint();
    if (stop) break;
  }
  if (tty) std::fprintf(stderr, "\n");
  std::fclose(metrics);
  // The "loss goes down, outputs don't change" failure: an adapter whose B never moved.
  for (const auto& m : adapter.modules) {
    double nb = 0;
    for (float x : m.B) nb += double(x) * x;
    if (nb == 0 && st.step > 0)
      std::fprintf(stderr, "[train] warning: %s: lora_B is still exactly zero after %lld steps: this adapter changes nothing\n",
                   m.target.c_str(), (long long)st.step);
  }
  if (eval_data.set) {
    sum.eval_loss = evaluate(dec, *eval_data.set, o);
    std::fprintf(stderr, "[train] eval loss %.4f\n", sum.eval_loss);
  }
  sum.steps = st.step;
  sum.tokens_per_s = tokens_run / std::max(1e-9, now() - t_start);
  if (st.step >= total_steps) {
    sum.adapter_dir = out_dir + "/adapter";
    adapter.save_peft(sum.adapter_dir, model_dir);
  }
  std::fprintf(stderr, "[train] %lld steps, loss %.4f -> %.4f, %.0f tokens/s%s%s\n", (long long)st.step, sum.first_loss,
               sum.last_loss, sum.tokens_per_s, sum.adapter_dir.empty() ? "" : ", adapter: ", sum.adapter_dir.c_str());
  return sum;
}

}  // namespace gt
