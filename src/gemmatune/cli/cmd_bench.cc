// gemmatune bench: prefill and decode throughput of a model folder (or, with --train, LoRA
// training steps), with achieved GFLOP/s and GB/s next to this machine's peaks measured in the
// same run, interleaved with the work.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <map>
#include <random>
#include <ctime>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/dist/comm.h"
#include "gemmatune/kernels/gemm.h"
#include "gemmatune/kernels/linear.h"
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
// Under mpirun every rank runs its own batch and the LoRA gradients are summed across ranks as the
// trainer does (buckets started during the backward); reported per step: the allreduce alone (the
// same buckets reduced after a barrier, nothing to hide behind) and the part of it still exposed
// after the backward (the reducer's final wait): hidden = alone - exposed.
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
  dist::Comm& comm = dist::Comm::world();
  const bool root = comm.rank() == 0;
  if (root)
    std::fprintf(stderr, "[bench] training: LoRA r=%lld dropout %g on %zu modules (%lld parameters), %zu x %lld tokens, %s, %lld rounds\n",
               (long long)rank, dropout, ad.modules.size(), (long long)ad.num_parameters(), seqs.size(), (long long)plen,
               checkpointing ? "gradient checkpointing" : "no checkpointing", (long long)rounds);
  std::vector<std::vector<float>> grads;
  TrainExtras extras;  // LoRA dropout when lc.dropout > 0
  dec.forward_backward(chunks, mask, grads, 0, checkpointing, &extras);  // warm-up: workspaces reach their size
  // Data parallel: the trainer's reducer, tensors registered last layer first.
  std::unique_ptr<dist::GradientReducer> reducer;
  std::vector<std::vector<size_t>> layer_tensors(size_t(m.config().num_layers));
  if (comm.distributed()) {
    std::vector<std::pair<float*, size_t>> t;
    for (int64_t l = m.config().num_layers - 1; l >= 0; --l)
      for (size_t i = 0; i < ad.modules.size(); ++i)
        if (ad.modules[i].layer == l)
          for (size_t k : {2 * i, 2 * i + 1}) {
            layer_tensors[size_t(l)].push_back(t.size());
            t.push_back({grads[k].data(), grads[k].size()});
          }
    reducer = std::make_unique<dist::GradientReducer>(comm, std::move(t));
    extras.layer_grads_done = [&](int64_t l) {
      for (size_t k : layer_tensors[size_t(l)]) reducer->ready(k);
    };
  }
  std::vector<double> gemmv, gemmv_bf16, step_s, alone_s, exposed_s, skew_s;
  for (int64_t r = 0; r < rounds; ++r) {
    gemmv.push_back(perf::measure_sgemm_gflops(threads, 512, 2048, 2048, 0.5));
    gemmv_bf16.push_back(perf::measure_onednn_bf16_gflops(threads, 512, 2048, 2048, 0.5));
    for (auto& g : grads) std::fill(g.begin(), g.end(), 0.0f);
    comm.barrier();
    const double t0 = perf::now_seconds();
    extras.dropout_seed = uint64_t(r + 1);
    dec.forward_backward(chunks, mask, grads, 0, checkpointing, &extras);
    double exposed = reducer ? reducer->finish() : 0.0;
    double st = perf::now_seconds() - t0;
    double alone = 0;
    if (reducer) {
      comm.barrier();
      alone = reducer->reduce_all();
      // The step is the slowest rank's; the communication it exposes is what the *last* rank to
      // finish its backward still waits for (the others also wait for it: skew, not communication).
      double mx[2] = {st, alone}, mn[1] = {exposed};
      comm.allreduce_max(mx, 2);
      comm.allreduce_min(mn, 1);
      skew_s.push_back(exposed - mn[0]);
      st = mx[0], alone = mx[1], exposed = mn[0];
    }
    step_s.push_back(st);
    exposed_s.push_back(exposed);
    alone_s.push_back(alone);
    if (root)
      std::fprintf(stderr, "[bench] round %lld: oneDNN f32 %.0f / bf16 %.0f GFLOP/s, step %.2fs (%.1f tokens/s)%s\n", (long long)r + 1,
                   gemmv.back(), gemmv_bf16.back(), step_s.back(), double(tokens) * comm.size() / step_s.back(),
                   reducer ? str(", allreduce alone ", alone * 1e3, " ms, exposed ", exposed * 1e3, " ms; rank 0 waited ",
                                     (skew_s.back() + exposed) * 1e3, " ms").c_str() : "");
  }
  const double gemm_f32 = median(gemmv), gemm_b16 = median(gemmv_bf16), gemm_m = std::max(gemm_f32, gemm_b16);
  const double step_m = median(step_s), gflops = flops / step_m / 1e9;
  const double alone_m = median(alone_s), exposed_m = median(exposed_s);
  if (!root) return 0;
  const gemm::Selection& ksel = gemm::selection();
  nlohmann::json j = {{"model", dir},
                      {"threads", threads},
                      {"train", {{"rows", seqs.size()}, {"seq_len", plen}, {"lora_r", rank}, {"lora_dropout", dropout}, {"modules", ad.modules.size()},
                                 {"trainable_parameters", ad.num_parameters()}, {"grad_checkpointing", checkpointing},
                                 {"step_seconds", step_m}, {"tokens_per_s", double(tokens) / step_m},
                                 {"useful_gflop_per_token", flops / double(tokens) / 1e9}, {"gflops", gflops},
                                 {"mfu_vs_sgemm", gflops / gemm_f32}, {"mfu_vs_best_onednn", gflops / gemm_m}}},
                      {"data_parallel", {{"ranks", comm.size()}, {"global_tokens_per_s", double(tokens) * comm.size() / step_m},
                                         {"gradient_bytes", ad.num_parameters() * 4}, {"buckets", reducer ? reducer->buckets() : 0},
                                         {"allreduce_seconds", alone_m}, {"allreduce_exposed_seconds", exposed_m},
                                         {"allreduce_hidden_seconds", std::max(0.0, alone_m - exposed_m)},
                                         {"exposed_fraction_of_step", exposed_m / step_m},
                                         {"rank0_wait_for_slower_ranks_seconds", median(skew_s)}}},
                      {"machine", {{"sgemm_f32_gflops", gemm_f32}, {"onednn_bf16_gflops", gemm_b16}, {"best_onednn_gflops", gemm_m}}},
                      {"kernels", {{"f32", gemm::isa_name(ksel.f32)}, {"bf16_weights", gemm::isa_name(ksel.bf16)}, {"why", ksel.why}}},
                      {"memory", {{"peak_rss_bytes", peak_rss_bytes()}}}};
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("machine (measured, median): oneDNN matmul 512x2048x2048 f32 %.0f GFLOP/s, bf16 %.0f\n", gemm_f32, gemm_b16);
    std::printf("kernels  f32: %s, BF16 weights: %s (%s)\n", gemm::isa_name(ksel.f32), gemm::isa_name(ksel.bf16), ksel.why.c_str());
    std::printf("train    %zu x %lld tokens, r=%lld%s: %.2f s/step, %.1f tokens/s, %.3g GFLOP/token, %.3g GFLOP/s = %.0f%% MFU "
                "of the best oneDNN matmul rate (%.0f%% of f32)\n",
                seqs.size(), (long long)plen, (long long)rank, checkpointing ? ", checkpointing" : "", step_m,
                double(tokens) / step_m, flops / double(tokens) / 1e9, gflops, 100 * gflops / gemm_m, 100 * gflops / gemm_f32);
    std::printf("memory   weights %.2f GB (mapped), peak RSS %.2f GB\n", double(m.weight_bytes()) / 1e9,
                double(peak_rss_bytes()) / 1e9);
    if (comm.distributed())
      std::printf("ranks    %d x %d threads: %.1f tokens/s in all; allreduce of %.1f MB of gradients %.1f ms/step alone, "
                  "%.1f ms exposed after the backward (%.2f%% of the step), %.1f ms hidden\n",
                  comm.size(), threads, double(tokens) * comm.size() / step_m, double(ad.num_parameters()) * 4 / 1e6,
                  alone_m * 1e3, exposed_m * 1e3, 100 * exposed_m / step_m, std::max(0.0, alone_m - exposed_m) * 1e3);
  }
  return 0;
}

// The GEMM kernels at the model's own shapes and weights (m rows; forward and backward-input),
// every kernel this CPU runs, interleaved round by round with oneDNN's f32 and bf16 matmuls at the
// same shapes (weights reordered once: oneDNN's best case; its bf16 takes bf16 activations, ours
// convert f32 activations inside the timed call), plus the register-only peaks per ISA.
nlohmann::json bench_gemm(const Model& model, int64_t m, int64_t rounds, int threads, bool print) {
  namespace g = gemm;
  const g::Selection& sel = g::selection();
  nlohmann::json j;
  j["cpu"] = g::cpu_features().brand;
  j["cpu_flags"] = g::cpu_features().flags();
  j["selected"] = {{"f32", g::isa_name(sel.f32)}, {"bf16_weights", g::isa_name(sel.bf16)}, {"forced", sel.forced},
                   {"why", sel.why}};
  for (g::Isa i : g::kAllIsas)
    if (sel.probed[int(i)]) j["selected"]["probe_gflops"][g::isa_name(i)] = sel.probe_gflops[int(i)];
  if (print) {
    std::printf("cpu      %s\n         %s\n", g::cpu_features().brand.c_str(), g::cpu_features().flags().c_str());
    std::printf("kernels  f32: %s, BF16 weights: %s%s\n         %s\n", g::isa_name(sel.f32), g::isa_name(sel.bf16),
                sel.bf16_inputs() ? " (bf16 inputs, f32 accumulation)" : "", sel.why.c_str());
  }
  for (g::Isa i : g::kAllIsas) {
    if (!g::isa_supported(i)) continue;
    const double p1 = g::register_peak_gflops(i, 1), pt = g::register_peak_gflops(i, threads);
    j["register_peak_gflops"][g::isa_name(i)] = {{"1", p1}, {std::to_string(threads), pt}};
    if (print)
      std::printf("peak     %-11s %s register-only: %.0f GFLOP/s (1 thread), %.0f (%d threads)\n", g::isa_name(i),
                  i == g::Isa::Avx2 ? "ymm FMA      " : i == g::Isa::Avx512 ? "zmm FMA      " : "zmm vdpbf16ps",
                  p1, pt, threads);
  }
  const LayerWeights& l0 = model.weights().layers[0];
  Weight2D head = model.weights().lm_head;
  head.n = std::min<int64_t>(head.n, 16384);  // a slice of the LM head: same shape per column, 1/16 of the time
  struct Shape {
    const char* name;
    const Weight2D* w;
  };
  std::vector<Shape> shapes;
  // Private copies of the weights (anonymous memory, like oneDNN's reordered ones): the mapped
  // file's pages may be reclaimed under memory pressure, which would time the disk, not the GEMM.
  std::vector<std::vector<uint8_t>> copies;
  std::vector<Weight2D> owned;
  owned.reserve(6);
  for (Shape s : {Shape{"q", &l0.q}, Shape{"kv", &l0.k}, Shape{"o", &l0.o}, Shape{"up", &l0.up}, Shape{"down", &l0.down},
                  Shape{"lm_head[:16384]", &head}}) {
    if (s.w->empty()) continue;
    const uint8_t* src = static_cast<const uint8_t*>(s.w->data);
    copies.emplace_back(src, src + s.w->bytes());
    owned.push_back(*s.w);
    owned.back().data = copies.back().data();
    shapes.push_back({s.name, &owned.back()});
  }
  const bool bf16_ok = perf::SgemmProbe::bf16_available();
  std::vector<float> x, y;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  struct Row {
    std::string name;
    double flops = 0;
    std::map<std::string, std::vector<double>> v, cpu;  // wall-clock rates; 1 thread: also per CPU-second
  };
  // One thread: the rate per CPU-second of the calling thread too (oneDNN runs a 1-thread matmul on
  // the caller), which leaves out the time other tenants of the host held the core.
  auto thread_cpu = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  };
  std::vector<Row> rows;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  for (int dir = 0; dir < 2; ++dir)
    for (const Shape& s : shapes) {
      Row r;
      r.name = std::string(dir ? "bwd " : "fwd ") + s.name + " " + std::to_string(dir ? s.w->n : s.w->k) + "->" +
               std::to_string(dir ? s.w->k : s.w->n);
      r.flops = 2.0 * double(m) * double(s.w->n) * double(s.w->k);
      rows.push_back(r);
    }
  for (int64_t round = 0; round < rounds; ++round) {
    size_t ri = 0;
    for (int dir = 0; dir < 2; ++dir)
      for (const Shape& s : shapes) {
        Row& r = rows[ri++];
        const int64_t kin = dir ? s.w->n : s.w->k, nout = dir ? s.w->k : s.w->n;
        x.resize(size_t(m * kin));
        y.resize(size_t(m * nout));
        for (auto& e : x) e = u(rng);
        for (g::Isa i : g::kAllIsas) {
          if (!g::isa_supported(i)) continue;
          if (round == 0) {  // warm-up call (buffers)
            if (dir) linear_detail::gemm_backward_input_isa(i, x.data(), m, *s.w, y.data(), false);
            else linear_detail::gemm_forward_isa(i, x.data(), m, *s.w, y.data(), false, 0, 0);
          }
          const double c0 = thread_cpu(), t0 = perf::now_seconds();
          if (dir) linear_detail::gemm_backward_input_isa(i, x.data(), m, *s.w, y.data(), false);
          else linear_detail::gemm_forward_isa(i, x.data(), m, *s.w, y.data(), false, 0, 0);
          r.v[g::isa_name(i)].push_back(r.flops / (perf::now_seconds() - t0) / 1e9);
          r.cpu[g::isa_name(i)].push_back(r.flops / (thread_cpu() - c0) / 1e9);
        }
        for (int b = 0; b < (bf16_ok ? 2 : 1); ++b) {
          perf::SgemmProbe ref(m, kin, nout, b == 1);  // constructor: reorder + warm-up call
          const double c0 = thread_cpu();
          const double wall = ref.run_gflops();
          const char* key = b ? "onednn_bf16" : "onednn_f32";
          r.v[key].push_back(wall);
          r.cpu[key].push_back(r.flops / (thread_cpu() - c0) / 1e9);
        }
      }
    if (print) std::fprintf(stderr, "[bench] gemm round %lld of %lld done\n", (long long)round + 1, (long long)rounds);
  }
  omp_set_num_threads(saved);
  if (print) {
    std::printf("gemm     m=%lld, %d threads, the model's weights (%s), medians of %lld interleaved rounds (GFLOP/s);\n"
                "         ratio = kernel / best oneDNN (f32 or bf16) of the same rounds\n",
                (long long)m, threads, dtype_name(shapes[0].w->dtype), (long long)rounds);
    std::printf("  %-28s", "shape");
    for (g::Isa i : g::kAllIsas)
      if (g::isa_supported(i)) std::printf(" %11s", g::isa_name(i));
    std::printf(" %11s %11s %8s %s\n", "oneDNN f32", "oneDNN bf16", "selected", "ratio sel / each kernel");
  }
  const g::Isa chosen = g::kernel_for(shapes[0].w->dtype);
  // Tables: medians of the wall-clock rates; the best round of each (every variant had the same
  // rounds: on a shared host a round is only ever slowed down); at 1 thread, medians per CPU-second.
  for (int table = 0; table < (threads == 1 ? 3 : 2); ++table) {
  if (print && table > 0)
    std::printf("  %s\n", table == 1 ? "best round of each (wall clock):" : "medians per CPU-second of the thread:");
  for (Row& r : rows) {
    nlohmann::json jr;
    std::map<std::string, double> med;
    for (auto& [k, v] : table == 2 ? r.cpu : r.v)
      med[k] = table == 1 ? *std::max_element(v.begin(), v.end()) : median(v);
    const double best = std::max(med.count("onednn_f32") ? med["onednn_f32"] : 0.0,
                                 med.count("onednn_bf16") ? med["onednn_bf16"] : 0.0);
    for (auto& [k, v] : med) jr[k] = v;
    jr["best_onednn"] = best;
    jr["selected"] = g::isa_name(chosen);
    jr["selected_vs_best_onednn"] = med[g::isa_name(chosen)] / best;
    j[table == 0 ? "gemm" : table == 1 ? "gemm_best_round" : "gemm_per_cpu_second"][r.name] = jr;
    if (print) {
      std::printf("  %-28s", r.name.c_str());
      for (g::Isa i : g::kAllIsas)
        if (g::isa_supported(i)) std::printf(" %11.1f", med[g::isa_name(i)]);
      std::printf(" %11.1f %11.1f %8s", med["onednn_f32"], bf16_ok ? med["onednn_bf16"] : 0.0, g::isa_name(chosen));
      for (g::Isa i : g::kAllIsas)
        if (g::isa_supported(i)) std::printf(" %s %.0f%%", g::isa_name(i), 100 * med[g::isa_name(i)] / best);
      std::printf("\n");
    }
  }
  }
  j["gemm_m"] = m;
  return j;
}

int run(int argc, char** argv) {
  Args a("bench", "Measure prefill and decode (or LoRA training) throughput against this machine's measured peaks.", argc, argv);
  const std::string dir = a.required("model", "Hugging Face model folder or GGUF file");
  const int64_t plen = a.integer("prompt-len", 512, "prompt tokens per sequence (prefill)");
  const int64_t gen = a.integer("gen", 32, "tokens generated per sequence (decode)");
  const int64_t batch = a.integer("batch", 1, "sequences decoded together");
  const int64_t rounds = a.integer("rounds", 3, "interleaved rounds (medians are reported)");
  const bool as_json = a.flag("json", "print the results as JSON");
  const bool train = a.flag("train", "measure LoRA training steps (batch x prompt-len tokens) instead of prefill/decode");
  const bool gemm_only = a.flag("gemm", "measure the GEMM kernels at the model's shapes (m = prompt-len) against oneDNN f32/bf16 and the register peaks, instead of prefill/decode");
  const int64_t rank = a.integer("lora-r", 16, "--train: LoRA rank on the model's default targets (alpha = 2r)");
  const bool ckpt = a.flag("grad-checkpointing", "--train: recompute each layer in the backward pass");
  const double dropout = a.real("lora-dropout", 0.0, "--train: LoRA dropout probability");
  int threads = threads_option(a);
  if (a.finish()) return 0;
  if (threads <= 0) threads = dist::default_threads(dist::Comm::world());  // under mpirun: no oversubscription
  apply_threads(threads);
  if (threads <= 0) threads = omp_get_max_threads();
  if (plen <= 0 || gen <= 0 || batch <= 0 || rounds <= 0) fail("bench: --prompt-len, --gen, --batch and --rounds must be positive");

  Model m = Model::load(dir);
  Decoder dec(m);
  const int64_t V = m.vocab_rows(), H = m.config().hidden_size;
  std::mt19937 rng(1 + unsigned(dist::Comm::world().rank()));  // under mpirun: each rank its own batch
  std::uniform_int_distribution<int32_t> tokd(3, int32_t(std::min<int64_t>(m.config().vocab_size, 200000) - 1));
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
  for (auto& p : prompts) {
    p.resize(size_t(plen + gen));
    for (auto& t : p) t = tokd(rng);
    p[0] = 2;
  }
  if (train) return bench_train(m, prompts, plen, rounds, rank, dropout, ckpt, threads, as_json, dir);
  if (gemm_only) {
    nlohmann::json jg = bench_gemm(m, plen, rounds, threads, !as_json);
    jg["model"] = dir;
    jg["threads"] = threads;
    if (as_json) std::printf("%s\n", jg.dump(2).c_str());
    return 0;
  }
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

  std::vector<double> bw, gemmv, gemmv_bf16, pre_s, dec_s;
  size_t peak_rss = 0, kv_alloc = 0;
  std::vector<float> logits;
  for (int64_t r = 0; r < rounds; ++r) {
    bw.push_back(perf::measure_read_bandwidth_gbs(threads, 0.5));
    gemmv.push_back(perf::measure_sgemm_gflops(threads, 512, 2048, 2048, 0.5));
    gemmv_bf16.push_back(perf::measure_onednn_bf16_gflops(threads, 512, 2048, 2048, 0.5));
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
    std::fprintf(stderr, "[bench] round %lld: read %.1f GB/s, oneDNN f32 %.0f / bf16 %.0f GFLOP/s, prefill %.2fs, decode %.2fs\n",
                 (long long)r + 1, bw.back(), gemmv.back(), gemmv_bf16.back(), pre_s.back(), dec_s.back());
  }
  const double bw_m = median(bw), gemm_f32 = median(gemmv), gemm_b16 = median(gemmv_bf16), pre_m = median(pre_s),
               dec_m = median(dec_s);
  const double gemm_m = std::max(gemm_f32, gemm_b16);  // the best oneDNN matmul rate of the run
  const gemm::Selection& ksel = gemm::selection();
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
      {"machine", {{"read_bandwidth_gbs", bw_m}, {"sgemm_f32_gflops", gemm_f32}, {"onednn_bf16_gflops", gemm_b16},
                   {"best_onednn_gflops", gemm_m}}},
      {"kernels", {{"f32", gemm::isa_name(ksel.f32)}, {"bf16_weights", gemm::isa_name(ksel.bf16)}, {"why", ksel.why}}},
      {"prefill", {{"seconds", pre_m}, {"tokens_per_s", double(batch * plen) / pre_m}, {"gflops", pre_gflops},
                   {"fraction_of_sgemm_peak", pre_gflops / gemm_f32}, {"fraction_of_best_onednn", pre_gflops / gemm_m}}},
      {"decode", {{"seconds", dec_m}, {"tokens_per_s", double(batch * gen) / dec_m}, {"gbs", dec_gbs},
                  {"fraction_of_read_bandwidth", dec_gbs / bw_m}, {"gflops", decode_flops / dec_m / 1e9},
                  {"roofline_tokens_per_s", double(batch * gen) * bw_m * 1e9 / decode_bytes}}},
      {"memory", {{"rss_after_load_bytes", rss_before}, {"peak_rss_bytes", peak_rss}, {"kv_cache_bytes", kv_alloc}}}};
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("machine (measured, median): read bandwidth %.1f GB/s, oneDNN matmul 512x2048x2048 f32 %.0f GFLOP/s, bf16 %.0f\n",
                bw_m, gemm_f32, gemm_b16);
    std::printf("kernels  f32: %s, BF16 weights: %s (%s)\n", gemm::isa_name(ksel.f32), gemm::isa_name(ksel.bf16), ksel.why.c_str());
    std::printf("prefill  %lld x %lld tokens: %.2f s, %.1f tokens/s, %.0f GFLOP/s = %.0f%% of the best oneDNN matmul rate (%.0f%% of f32)\n",
                (long long)batch, (long long)plen, pre_m, double(batch * plen) / pre_m, pre_gflops, 100 * pre_gflops / gemm_m,
                100 * pre_gflops / gemm_f32);
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
