// gemmatune bench: prefill and decode throughput of a model folder (or, with --train, LoRA
// training steps), with achieved GFLOP/s and GB/s next to this machine's peaks measured in the
// same run, interleaved with the work.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/perf/machine.h"
#include "gemmatune/util/error.h"

namespace gt::cli {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Multiply-adds per token through the frozen linear layers (MoE: top-k experts), LM head excluded.
double linear_macs_per_token(const Model& m) {
  double macs = 0;
  for (size_t i = 0; i < m.weights().layers.size(); ++i) {
    const LayerWeights& l = m.weights().layers[i];
    for (const Weight2D* w : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down, &l.router, &l.ple_gate, &l.ple_proj})
      if (!w->empty()) macs += double(w->n) * double(w->k);
    if (!l.experts.empty())
      macs += double(m.config().top_k_experts) *
              (double(l.experts[0].gate_up.n * l.experts[0].gate_up.k) + double(l.experts[0].down.n * l.experts[0].down.k));
  }
  if (!m.weights().ple_model_proj.empty()) macs += double(m.weights().ple_model_proj.n * m.weights().ple_model_proj.k);
  return macs;
}

// Attention multiply-adds (QKᵀ and PV) for a query at `pos`, over all layers.
double attention_macs(const Model& m, int64_t pos) {
  double macs = 0;
  for (const LayerSpec& s : m.specs()) {
    const int64_t keys = s.window > 0 ? std::min(pos + 1, s.window) : pos + 1;
    macs += 2.0 * double(s.num_heads * s.head_dim) * double(keys);
  }
  return macs;
}

// Bytes of K/V read by one decode step of one sequence at `pos`.
double kv_bytes(const Model& m, int64_t pos) {
  double b = 0;
  for (const LayerSpec& s : m.specs()) {
    const int64_t keys = s.window > 0 ? std::min(pos + 1, s.window) : pos + 1;
    b += 2.0 * 4.0 * double(s.num_kv_heads * s.head_dim) * double(keys);
  }
  return b;
}

// LoRA training steps (forward + backward, every token scored) interleaved with the f32 GEMM probe.
// Useful FLOPs per token: forward 2N + activation gradients 2N (N: multiply-adds through the frozen
// projections and the LM head) + attention (2A forward, 4A backward; A: QKᵀ and PV multiply-adds).
int bench_train(const Model& m, const std::vector<std::vector<int32_t>>& seqs, int64_t plen, int64_t rounds, int64_t rank,
                double dropout, bool checkpointing, int threads, bool as_json, const std::string& dir) {
  LoraConfig lc = default_lora_config(m);
  lc.r = rank;
  lc.alpha = 2.0 * double(rank);
  lc.dropout = dropout;
  Adapter ad = Adapter::create(m, lc, 0);
  Decoder dec(m);
  dec.set_lora(bind_adapter(ad, m));
  std::vector<SeqChunk> chunks;
  std::vector<uint8_t> mask;
  for (const auto& p : seqs) {
    chunks.push_back({nullptr, p.data(), plen});
    for (int64_t t = 0; t < plen; ++t) mask.push_back(t + 1 < plen ? 1 : 0);
  }
  const int64_t tokens = int64_t(seqs.size()) * plen;
  const double head = double(m.vocab_rows()) * double(m.config().hidden_size);
  const double macs = linear_macs_per_token(m) + head;
  double attn = 0;
  for (int64_t t = 0; t < plen; ++t) attn += attention_macs(m, t);
  const double flops = double(seqs.size()) * (4.0 * macs * double(plen) + 6.0 * attn);
  std::fprintf(stderr, "[bench] training: LoRA r=%lld dropout %g on %zu modules (%lld parameters), %zu x %lld tokens, %s, %lld rounds\n",
               (long long)rank, dropout, ad.modules.size(), (long long)ad.num_parameters(), seqs.size(), (long long)plen,
               checkpointing ? "gradient checkpointing" : "no checkpointing", (long long)rounds);
  std::vector<std::vector<float>> grads;
  TrainExtras extras;  // LoRA dropout when lc.dropout > 0
  dec.forward_backward(chunks, mask, grads, 0, checkpointing, &extras);  // warm-up: workspaces reach their size
  std::vector<double> gemm, step_s;
  for (int64_t r = 0; r < rounds; ++r) {
    gemm.push_back(perf::measure_sgemm_gflops(threads, 512, 2048, 2048, 0.5));
    for (auto& g : grads) std::fill(g.begin(), g.end(), 0.0f);
    const double t0 = perf::now_seconds();
    extras.dropout_seed = uint64_t(r + 1);
    dec.forward_backward(chunks, mask, grads, 0, checkpointing, &extras);
    step_s.push_back(perf::now_seconds() - t0);
    std::fprintf(stderr, "[bench] round %lld: sgemm %.0f GFLOP/s, step %.2fs (%.1f tokens/s)\n", (long long)r + 1, gemm.back(),
                 step_s.back(), double(tokens) / step_s.back());
  }
  const double gemm_m = median(gemm), step_m = median(step_s), gflops = flops / step_m / 1e9;
  nlohmann::json j = {{"model", dir},
                      {"threads", threads},
                      {"train", {{"rows", seqs.size()}, {"seq_len", plen}, {"lora_r", rank}, {"lora_dropout", dropout}, {"modules", ad.modules.size()},
                                 {"trainable_parameters", ad.num_parameters()}, {"grad_checkpointing", checkpointing},
                                 {"step_seconds", step_m}, {"tokens_per_s", double(tokens) / step_m},
                                 {"useful_gflop_per_token", flops / double(tokens) / 1e9}, {"gflops", gflops},
                                 {"mfu_vs_sgemm", gflops / gemm_m}}},
                      {"machine", {{"sgemm_f32_gflops", gemm_m}}},
                      {"memory", {{"peak_rss_bytes", peak_rss_bytes()}}}};
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("machine (measured, median): f32 GEMM (oneDNN) %.0f GFLOP/s\n", gemm_m);
    std::printf("train    %zu x %lld tokens, r=%lld%s: %.2f s/step, %.1f tokens/s, %.3g GFLOP/token, %.3g GFLOP/s = %.0f%% MFU "
                "of the measured GEMM peak\n",
                seqs.size(), (long long)plen, (long long)rank, checkpointing ? ", checkpointing" : "", step_m,
                double(tokens) / step_m, flops / double(tokens) / 1e9, gflops, 100 * gflops / gemm_m);
    std::printf("memory   weights %.2f GB (mapped), peak RSS %.2f GB\n", double(m.weight_bytes()) / 1e9,
                double(peak_rss_bytes()) / 1e9);
  }
  return 0;
}

int run(int argc, char** argv) {
  Args a("bench", "Measure prefill and decode (or LoRA training) throughput against this machine's measured peaks.", argc, argv);
  const std::string dir = a.required("model", "Hugging Face model folder");
  const int64_t plen = a.integer("prompt-len", 512, "prompt tokens per sequence (prefill)");
  const int64_t gen = a.integer("gen", 32, "tokens generated per sequence (decode)");
  const int64_t batch = a.integer("batch", 1, "sequences decoded together");
  const int64_t rounds = a.integer("rounds", 3, "interleaved rounds (medians are reported)");
  const bool as_json = a.flag("json", "print the results as JSON");
  const bool train = a.flag("train", "measure LoRA training steps (batch x prompt-len tokens) instead of prefill/decode");
  const int64_t rank = a.integer("lora-r", 16, "--train: LoRA rank on the model's default targets (alpha = 2r)");
  const bool ckpt = a.flag("grad-checkpointing", "--train: recompute each layer in the backward pass");
  const double dropout = a.real("lora-dropout", 0.0, "--train: LoRA dropout probability");
  int threads = threads_option(a);
  if (a.finish()) return 0;
  apply_threads(threads);
  if (threads <= 0) threads = omp_get_max_threads();
  if (plen <= 0 || gen <= 0 || batch <= 0 || rounds <= 0) fail("bench: --prompt-len, --gen, --batch and --rounds must be positive");

  Model m = Model::load(dir);
  Decoder dec(m);
  const int64_t V = m.vocab_rows(), H = m.config().hidden_size;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> tokd(3, int32_t(std::min<int64_t>(m.config().vocab_size, 200000) - 1));
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
  for (auto& p : prompts) {
    p.resize(size_t(plen + gen));
    for (auto& t : p) t = tokd(rng);
    p[0] = 2;
  }
  if (train) return bench_train(m, prompts, plen, rounds, rank, dropout, ckpt, threads, as_json, dir);
  const size_t rss_before = rss_bytes();
  std::fprintf(stderr, "[bench] %s: %.2f GB of weights, %lld threads; %lld rounds of prefill %lldx%lld and decode %lldx%lld\n",
               dir.c_str(), double(m.weight_bytes()) / 1e9, (long long)threads, (long long)rounds, (long long)batch,
               (long long)plen, (long long)batch, (long long)gen);

  const double macs_tok = linear_macs_per_token(m);
  double prefill_flops = 0;
  for (int64_t t = 0; t < plen; ++t) prefill_flops += 2.0 * (macs_tok + attention_macs(m, t));
  prefill_flops = prefill_flops * double(batch) + 2.0 * double(batch) * double(V) * double(H);  // + LM head on the last token
  double decode_bytes = 0, decode_flops = 0;  // per step, all sequences
  for (int64_t s = 0; s < gen; ++s) {
    decode_bytes += double(m.decode_bytes_per_token()) + double(batch) * kv_bytes(m, plen + s);
    decode_flops += 2.0 * double(batch) * (macs_tok + attention_macs(m, plen + s) + double(V) * double(H));
  }

  std::vector<double> bw, gemm, pre_s, dec_s;
  size_t peak_rss = 0, kv_alloc = 0;
  std::vector<float> logits;
  for (int64_t r = 0; r < rounds; ++r) {
    bw.push_back(perf::measure_read_bandwidth_gbs(threads, 0.5));
    gemm.push_back(perf::measure_sgemm_gflops(threads, 512, 2048, 2048, 0.5));
    std::vector<KvCache> caches;
    for (int64_t b = 0; b < batch; ++b) caches.emplace_back(m, plen + gen);
    std::vector<SeqChunk> chunks;
    for (int64_t b = 0; b < batch; ++b) chunks.push_back({&caches[size_t(b)], prompts[size_t(b)].data(), plen});
    double t0 = perf::now_seconds();
    dec.forward(chunks, LogitsFor::Last, logits);
    double t1 = perf::now_seconds();
    for (int64_t s = 0; s < gen; ++s) {
      for (int64_t b = 0; b < batch; ++b) chunks[size_t(b)] = {&caches[size_t(b)], prompts[size_t(b)].data() + plen + s, 1};
      dec.forward(chunks, LogitsFor::Last, logits);
    }
    double t2 = perf::now_seconds();
    pre_s.push_back(t1 - t0);
    dec_s.push_back(t2 - t1);
    kv_alloc = 0;
    for (auto& c : caches) kv_alloc += c.bytes();
    peak_rss = std::max(peak_rss, rss_bytes());
    std::fprintf(stderr, "[bench] round %lld: read %.1f GB/s, sgemm %.0f GFLOP/s, prefill %.2fs, decode %.2fs\n", (long long)r + 1,
                 bw.back(), gemm.back(), pre_s.back(), dec_s.back());
  }
  const double bw_m = median(bw), gemm_m = median(gemm), pre_m = median(pre_s), dec_m = median(dec_s);
  const double pre_gflops = prefill_flops / pre_m / 1e9;
  const double dec_gbs = decode_bytes / dec_m / 1e9;
  nlohmann::json j = {
      {"model", dir},
      {"threads", threads},
      {"batch", batch},
      {"prompt_len", plen},
      {"gen", gen},
      {"weights_bytes", m.weight_bytes()},
      {"decode_weight_bytes_per_step", m.decode_bytes_per_token()},
      {"machine", {{"read_bandwidth_gbs", bw_m}, {"sgemm_f32_gflops", gemm_m}}},
      {"prefill", {{"seconds", pre_m}, {"tokens_per_s", double(batch * plen) / pre_m}, {"gflops", pre_gflops},
                   {"fraction_of_sgemm_peak", pre_gflops / gemm_m}}},
      {"decode", {{"seconds", dec_m}, {"tokens_per_s", double(batch * gen) / dec_m}, {"gbs", dec_gbs},
                  {"fraction_of_read_bandwidth", dec_gbs / bw_m}, {"gflops", decode_flops / dec_m / 1e9},
                  {"roofline_tokens_per_s", double(batch * gen) * bw_m * 1e9 / decode_bytes}}},
      {"memory", {{"rss_after_load_bytes", rss_before}, {"peak_rss_bytes", peak_rss}, {"kv_cache_bytes", kv_alloc}}}};
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("machine (measured, median): read bandwidth %.1f GB/s, f32 GEMM (oneDNN) %.0f GFLOP/s\n", bw_m, gemm_m);
    std::printf("prefill  %lld x %lld tokens: %.2f s, %.1f tokens/s, %.0f GFLOP/s = %.0f%% of the measured GEMM peak\n",
                (long long)batch, (long long)plen, pre_m, double(batch * plen) / pre_m, pre_gflops, 100 * pre_gflops / gemm_m);
    std::printf("decode   %lld x %lld tokens: %.2f s, %.2f tokens/s, %.1f GB/s of weights+KV = %.0f%% of read bandwidth (roofline %.2f tokens/s)\n",
                (long long)batch, (long long)gen, dec_m, double(batch * gen) / dec_m, dec_gbs, 100 * dec_gbs / bw_m,
                double(batch * gen) * bw_m * 1e9 / decode_bytes);
    std::printf("memory   weights %.2f GB (mapped), KV cache %.1f MB, peak RSS %.2f GB\n", double(m.weight_bytes()) / 1e9,
                double(kv_alloc) / 1e6, double(peak_rss) / 1e9);
  }
  return 0;
}
Command reg("bench", "measure prefill/decode (or --train) throughput against the machine's measured peaks", run);
}  // namespace
}  // namespace gt::cli
