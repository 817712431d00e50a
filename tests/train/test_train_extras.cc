// LoRA dropout and the MoE load-balance auxiliary loss: the kernels (mask statistics and
// determinism; the loss against hand-computed values and its gradient), their integration in
// Decoder::forward_backward (finite differences of the objective along each adapter tensor,
// recomputation under gradient checkpointing, "off" being bit-identical to absent), and the
// training loop (routing statistics and the aux loss in metrics.jsonl, exact resume with dropout).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>

#include "gemmatune/kernels/dropout.h"
#include "gemmatune/kernels/moe_balance.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/train/trainer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"
#include "train_util.h"

using namespace gt;

namespace {

using Grads = std::vector<std::vector<float>>;

std::string tmp(const std::string& n) { return test::scratch("extras_" + n); }

// An adapter with non-zero B (PEFT's zero B would hide every path through A).
Adapter busy_adapter(const Model& m, uint64_t seed) {
  LoraConfig lc = default_lora_config(m);
  lc.r = 2;
  Adapter a = Adapter::create(m, lc, seed);
  std::mt19937 g(static_cast<uint32_t>(seed));
  std::normal_distribution<float> d(0.0f, 0.05f);
  for (auto& mod : a.modules)
    for (auto& v : mod.B) v = d(g);
  return a;
}

struct Outcome {
  double ce = 0, aux = 0;  // CE mean over scored tokens, aux loss (scaled)
  Grads g;
};

Outcome run(Decoder& dec, const std::vector<SeqChunk>& ch, const std::vector<uint8_t>& mask, const TrainExtras* ex,
        bool ckpt = false) {
  Outcome r;
  auto res = dec.forward_backward(ch, mask, r.g, 0, ckpt, ex);
  r.ce = res.sum / double(res.tokens);
  r.aux = res.aux;
  return r;
}

double norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s);
}

// For each adapter tensor whose gradient g_i is not negligible, the central difference of the
// objective along d = g_i/|g_i| (that tensor only) must equal |g_i|. The objective returns
// nullopt where the function is not smooth at that point (an MoE routing decision flipped): the
// step is then halved. Returns the tensors checked.
int check_directional(Adapter& a, const Grads& g, const std::function<std::optional<double>()>& objective, double eps,
                      double rtol) {
  int checked = 0;
  double gmax = 0;
  for (const auto& t : g) gmax = std::max(gmax, norm(t));
  for (size_t i = 0; i < g.size(); ++i) {
    const double gn = norm(g[i]);
    if (gn < 1e-2 * gmax) continue;
    std::vector<float>& p = i % 2 ? a.modules[i / 2].B : a.modules[i / 2].A;
    const std::vector<float> p0 = p;
    std::optional<double> jp, jm;
    double h = eps;
    for (int tries = 0; tries < 6; ++tries, h /= 2) {
      for (size_t j = 0; j < p.size(); ++j) p[j] = p0[j] + float(h * g[i][j] / gn);
      jp = objective();
      for (size_t j = 0; j < p.size(); ++j) p[j] = p0[j] - float(h * g[i][j] / gn);
      jm = objective();
      if (jp && jm) break;
    }
    p = p0;
    if (!jp || !jm) continue;
    const double fd = (*jp - *jm) / (2 * h);
    EXPECT_NEAR(fd, gn, rtol * gn) << "tensor " << i << " (" << a.modules[i / 2].target << (i % 2 ? " B" : " A") << ")";
    ++checked;
  }
  return checked;
}

}  // namespace

// ---- kernels -------------------------------------------------------------------------------

TEST(Dropout, KeepsOneMinusPScaledAndIsAPureFunctionOfItsSeed) {
  const int64_t rows = 64, n = 1001;  // odd width: the last element of a row uses half a hash
  std::vector<float> x(static_cast<size_t>(rows * n), 1.0f), y(x.size()), y2(x.size()), y3(x.size());
  const double p = 0.3;
  dropout_apply(x.data(), y.data(), rows, n, p, 42, 7);
  int64_t kept = 0;
  for (float v : y) {
    if (v != 0.0f) {
      EXPECT_FLOAT_EQ(v, float(1.0 / 0.7));
      ++kept;
    }
  }
  const double frac = double(kept) / double(rows * n);
  EXPECT_NEAR(frac, 0.7, 0.01);  // 64k Bernoulli draws: sd 0.0018
  dropout_apply(x.data(), y2.data(), rows, n, p, 42, 7);
  EXPECT_EQ(y, y2);
  dropout_apply(x.data(), y3.data(), rows, n, p, 42, 8);  // another stream (module)
  EXPECT_NE(y, y3);
  dropout_apply(x.data(), y3.data(), rows, n, p, 43, 7);  // another seed (step)
  EXPECT_NE(y, y3);
  // In place, and a mask row depends only on its row index (the same whatever the row count).
  std::vector<float> z = x;
  dropout_apply(z.data(), z.data(), 3, n, p, 42, 7);
  EXPECT_TRUE(std::equal(z.begin(), z.begin() + 3 * n, y.begin()));
  // p = 0 is the identity.
  dropout_apply(x.data(), y3.data(), rows, n, 0.0, 42, 7);
  EXPECT_EQ(y3, x);
}

TEST(MoeBalance, MatchesHandComputedValuesAndGradient) {
  // E = 4 experts, K = 2, two rows (3 tokens, then 1 token).
  const int64_t E = 4, K = 2;
  const std::vector<float> probs = {0.4f, 0.3f, 0.2f, 0.1f,  //
                                    0.1f, 0.5f, 0.3f, 0.1f,  //
                                    0.25f, 0.25f, 0.25f, 0.25f,  //
                                    0.7f, 0.1f, 0.1f, 0.1f};
  const std::vector<int32_t> topk = {0, 1, 1, 2, 0, 1, 0, 1};
  const std::vector<int64_t> rows = {0, 3, 4};
  std::vector<double> coef;
  const double w = 0.01;
  const double v = moe_balance_forward(probs.data(), topk.data(), E, K, rows, w, coef);
  // Row 0: f = (2, 3, 1, 0)/3, P = (0.75, 1.05, 0.75, 0.45)/3; Σ f·P = (1.5 + 3.15 + 0.75)/9 = 0.6.
  // Row 1: f = (1, 1, 0, 0), P = (0.7, 0.1, 0.1, 0.1); Σ f·P = 0.8.
  // loss = w·E/B·(0.6 + 0.8) = 0.01·2·1.4 = 0.028.
  EXPECT_NEAR(v, 0.028, 1e-8);
  ASSERT_EQ(coef.size(), size_t(2 * E));
  EXPECT_NEAR(coef[1], w * E / 2 * 3.0 / 3.0, 1e-12);  // row 0, expert 1: f = 1
  // The loss is linear in probs for fixed routing: the gradient reproduces it exactly.
  std::vector<float> d(probs.size(), 0.0f);
  moe_balance_backward(coef, E, rows, 1.0, d.data());
  double lin = 0;
  for (size_t i = 0; i < d.size(); ++i) lin += double(d[i]) * probs[i];
  EXPECT_NEAR(lin, v, 1e-8);
  // And a finite difference along a random direction.
  std::mt19937 g(5);
  std::normal_distribution<float> nd;
  std::vector<float> dir(probs.size()), pp = probs;
  for (auto& x : dir) x = nd(g);
  for (size_t i = 0; i < pp.size(); ++i) pp[i] = probs[i] + 0.01f * dir[i];
  std::vector<double> c2;
  const double vp = moe_balance_forward(pp.data(), topk.data(), E, K, rows, w, c2);
  double dd = 0;
  for (size_t i = 0; i < d.size(); ++i) dd += double(d[i]) * dir[i];
  EXPECT_NEAR((vp - v) / 0.01, dd, 1e-5);
  // Perfectly balanced routing gives weight·K; the gradient is scaled by `scale`.
  const std::vector<float> uni(8, 0.25f);
  const std::vector<int32_t> bal = {0, 1, 2, 3};
  EXPECT_NEAR(moe_balance_forward(uni.data(), bal.data(), E, K, {0, 2}, 1.0, coef), double(K), 1e-6);
  std::vector<float> d2(8, 0.0f);
  moe_balance_backward(coef, E, {0, 2}, 0.5, d2.data());
  EXPECT_NEAR(d2[0], 0.5 * 1.0 * E * 0.5 / 2, 1e-7);  // scale · w·E/B·f / S = 0.5·4·0.5/2
  EXPECT_THROW(moe_balance_forward(uni.data(), bal.data(), E, K, {0, 0, 2}, 1.0, coef), Error);
}

// ---- decoder ----------------------------------------------------------------------------------

TEST(LoraDropout, GradientMatchesFiniteDifferencesWithTheSameMasks) {
  Model m = Model::load(test::fixture("gemma3_causal") + "/model");
  Adapter a = busy_adapter(m, 11);
  Decoder dec(m);
  dec.set_lora(bind_adapter(a, m));
  std::vector<int32_t> toks = {2, 10, 20, 30, 40, 50, 60, 70, 80};
  std::vector<uint8_t> mask = {0, 1, 1, 1, 1, 1, 1, 1, 0};
  std::vector<SeqChunk> ch = {{nullptr, toks.data(), 9}};
  TrainExtras ex;
  ex.dropout_seed = 1234;
  // Dropout 0 (the default): extras change nothing, bit for bit.
  const Outcome plain = run(dec, ch, mask, nullptr);
  EXPECT_EQ(run(dec, ch, mask, &ex).g, plain.g);
  a.config.dropout = 0.3;
  dec.set_lora(bind_adapter(a, m));  // the views carry lora_dropout
  const Outcome drop = run(dec, ch, mask, &ex);
  EXPECT_NE(drop.g, plain.g);
  EXPECT_NE(drop.ce, plain.ce);
  // Eval (loss) and inference never drop.
  EXPECT_NEAR(dec.loss(ch, mask).sum / 7.0, plain.ce, 1e-6);
  // The same seed gives the same masks: identical gradients, also when layers are recomputed.
  EXPECT_EQ(run(dec, ch, mask, &ex).g, drop.g);
  EXPECT_EQ(run(dec, ch, mask, &ex, true).g, drop.g);
  TrainExtras other = ex;
  other.dropout_seed = 99;
  EXPECT_NE(run(dec, ch, mask, &other).g, drop.g);
  const int n = check_directional(
      a, drop.g, [&]() -> std::optional<double> { return run(dec, ch, mask, &ex).ce; }, 1e-3, 2e-2);
  EXPECT_GE(n, 8);
}

TEST(MoeAuxLoss, GradientMatchesFiniteDifferencesAndRowsFollowTheBatch) {
  Model m = Model::load(test::fixture("gemma4_moe") + "/model");
  Adapter a = busy_adapter(m, 3);
  Decoder dec(m);
  dec.set_lora(bind_adapter(a, m));
  std::vector<int32_t> toks = {2, 11, 23, 35, 47, 59, 61, 73, 2, 85, 97, 109, 121};
  std::vector<uint8_t> mask = {0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0};
  std::vector<SeqChunk> ch = {{nullptr, toks.data(), 8}, {nullptr, toks.data() + 8, 5}};
  TrainExtras off;
  const Outcome plain = run(dec, ch, mask, nullptr);
  const Outcome zero = run(dec, ch, mask, &off);
  EXPECT_EQ(zero.g, plain.g);
  EXPECT_EQ(zero.aux, 0.0);
  TrainExtras on;
  on.moe_aux_weight = 1.0;  // large, so that its gradient is well above the CE's noise
  const Outcome with = run(dec, ch, mask, &on);
  EXPECT_EQ(with.ce, plain.ce);  // the CE is unchanged; only the gradient gains the aux term
  // Roughly balanced random routing: the loss is close to weight·K = 2 (never below... f·P ≥ 0).
  EXPECT_GT(with.aux, 0.5);
  EXPECT_LT(with.aux, 8.0);
  // Gradient of the aux loss alone, checked by finite differences of its value.
  Grads gaux = with.g;
  for (size_t i = 0; i < gaux.size(); ++i)
    for (size_t j = 0; j < gaux[i].size(); ++j) gaux[i][j] -= plain.g[i][j];
  // Routing is piecewise constant: a perturbation that changes any routing decision is not a
  // derivative; the counts of tokens per expert detect it.
  dec.reset_expert_stats();
  run(dec, ch, mask, &on);
  const auto routing = dec.expert_counts();
  auto aux_if_same_routing = [&]() -> std::optional<double> {
    dec.reset_expert_stats();
    const double v = run(dec, ch, mask, &on).aux;
    if (dec.expert_counts() != routing) return std::nullopt;
    return v;
  };
  const int n = check_directional(a, gaux, aux_if_same_routing, 1e-3, 3e-2);
  EXPECT_GE(n, 6);
  // Scale (1/grad_accum) scales value and gradient.
  TrainExtras half = on;
  half.moe_aux_scale = 0.5;
  EXPECT_NEAR(run(dec, ch, mask, &half).aux, 0.5 * with.aux, 1e-12);
  // Rows: both chunks as one packed row is a different loss from two rows.
  TrainExtras packed = on;
  packed.row_chunks = {2};
  const Outcome one_row = run(dec, ch, mask, &packed);
  EXPECT_GT(std::fabs(one_row.aux - with.aux), 1e-6);
  packed.row_chunks = {1, 1};
  EXPECT_EQ(run(dec, ch, mask, &packed).aux, with.aux);
  packed.row_chunks = {3};
  EXPECT_THROW(run(dec, ch, mask, &packed), Error);
  // Recomputed layers (gradient checkpointing) give the same value and gradient.
  const Outcome ck = run(dec, ch, mask, &on, true);
  EXPECT_EQ(ck.aux, with.aux);
  EXPECT_EQ(ck.g, with.g);
}

// ---- training loop ---------------------------------------------------------------------------

namespace {

std::string data_file() {
  static std::string p = test::write_chat_data(tmp("data.jsonl"));
  return p;
}

std::string make_model(const std::string& preset) { return test::make_chat_model(preset, tmp(preset), 4); }

TrainOptions opts() {
  TrainOptions o;
  o.data = {data_file()};
  o.max_len = 48;
  o.lora_r = 2;
  o.lora_alpha = 4;
  o.lr = 1e-2;
  o.log_every = 1;
  o.seed = 9;
  return o;
}

std::vector<nlohmann::json> metric_lines(const std::string& run_dir) {
  std::vector<nlohmann::json> v;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  return v;
}

}  // namespace

TEST(TrainExtras, MoeRunLogsRoutingAndTheAuxLoss) {
  const std::string model = make_model("gemma4-tiny-moe");
  TrainOptions o = opts();
  o.steps = 3;
  o.load_balance_loss_weight = 0.01;
  train(model, tmp("moe_run"), o);
  auto lines = metric_lines(tmp("moe_run"));
  ASSERT_EQ(lines.size(), 3u);
  for (const auto& l : lines) {
    ASSERT_TRUE(l.contains("routing")) << l.dump();
    const auto& r = l["routing"];
    EXPECT_EQ(r["per_layer_max_load_over_mean"].size(), 4u);  // 4 MoE layers
    EXPECT_GE(r["max_load_over_mean"].get<double>(), 1.0);
    EXPECT_GT(r["aux_loss"].get<double>(), 0.0);
    // weight·K = 0.02 when balanced; the random router is not far from it.
    EXPECT_LT(r["aux_loss"].get<double>(), 0.01 * 8);
    EXPECT_EQ(l["aux_loss"], r["aux_loss"]);
  }
  // Off by default: routing is still logged, the aux loss is not.
  o.load_balance_loss_weight = 0;
  train(model, tmp("moe_off"), o);
  auto off = metric_lines(tmp("moe_off"));
  ASSERT_FALSE(off.empty());
  EXPECT_TRUE(off[0].contains("routing"));
  EXPECT_FALSE(off[0].contains("aux_loss"));
  // Dropout with routed experts adapted is refused (PEFT's ParamWrapper has no dropout).
  o.lora_dropout = 0.1;
  EXPECT_THROW(train(model, tmp("moe_drop"), o), Error);
}

TEST(TrainExtras, DropoutRunResumesBitIdenticallyAndAuxNeedsMoe) {
  const std::string model = make_model("tiny");
  TrainOptions o = opts();
  o.steps = 4;
  o.lora_dropout = 0.2;
  o.grad_accum = 2;
  o.save_every = 2;
  train(model, tmp("d_full"), o);
  TrainOptions first = o;
  first.stop_after = 2;
  train(model, tmp("d_split"), first);
  TrainOptions rest = o;
  rest.resume = true;
  train(model, tmp("d_split"), rest);
  EXPECT_EQ(read_file(tmp("d_full") + "/adapter/adapter_model.safetensors"),
            read_file(tmp("d_split") + "/adapter/adapter_model.safetensors"));
  // The adapter records its dropout (PEFT's lora_dropout).
  auto cfg = nlohmann::json::parse(read_file(tmp("d_full") + "/adapter/adapter_config.json"));
  EXPECT_DOUBLE_EQ(cfg["lora_dropout"].get<double>(), 0.2);
  // A dropout run differs from a run without it.
  TrainOptions nod = o;
  nod.lora_dropout = 0;
  train(model, tmp("d_none"), nod);
  EXPECT_NE(read_file(tmp("d_full") + "/adapter/adapter_model.safetensors"),
            read_file(tmp("d_none") + "/adapter/adapter_model.safetensors"));
  TrainOptions bad = opts();
  bad.steps = 1;
  bad.load_balance_loss_weight = 0.01;
  try {
    train(model, tmp("d_aux"), bad);
    FAIL() << "aux loss on a dense model must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no MoE layers"), std::string::npos) << e.what();
  }
  bad.load_balance_loss_weight = 0;
  bad.lora_dropout = 1.0;
  EXPECT_THROW(train(model, tmp("d_p1"), bad), Error);
}
