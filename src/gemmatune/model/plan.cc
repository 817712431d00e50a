#include "gemmatune/model/plan.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "gemmatune/kernels/cross_entropy.h"
#include "gemmatune/model/kv_cache.h"
#include "gemmatune/quant/blocks.h"
#include "gemmatune/util/error.h"

namespace gt {

namespace {
std::string gb(size_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", double(b) / 1e9);
  return buf;
}
}  // namespace

// Bytes of w once quantized to q by the policy (its stored bytes when q is Dense, w is already in
// blocks, or the policy keeps it; Q4_K's Q4_0 fallback counted where k % 256 != 0).
size_t planned_bytes(const Weight2D& w, WFormat q) {
  if (q == WFormat::Dense || w.quantized() || w.empty()) return w.bytes();
  std::string name = w.name;
  std::vector<int64_t> shape = {w.n, w.k};
  if (const auto b = name.find('['); b != std::string::npos) {  // one expert of a 3-D tensor
    name = name.substr(0, b);
    shape = {1, w.n, w.k};
  }
  if (!quant::quantize_policy(name, shape)) return w.bytes();
  return size_t(w.n) * wformat_row_bytes(quantized_format(q, w.k), DType::U8, w.k);
}

MemoryPlan plan_memory(const Model& m, const PlanInput& in) {
  const ModelConfig& c = m.config();
  const ModelWeights& w = m.weights();
  MemoryPlan p;
  p.weights_total = m.weight_bytes();
  if (in.quantize != WFormat::Dense) {  // replace the policy's tensors by their block size
    auto swap = [&](const Weight2D& x) { p.weights_total = p.weights_total - x.bytes() + planned_bytes(x, in.quantize); };
    swap(w.embed);
    if (w.lm_head.data != w.embed.data) swap(w.lm_head);
    for (const auto& l : w.layers) {
      for (const Weight2D* x : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
        if (!x->empty()) swap(*x);
      for (const auto& e : l.experts) swap(e.gate_up), swap(e.down);
    }
  }
  // The per-layer-embedding table is read one row per token: it stays mapped, mostly cold.
  p.weights_cold = w.ple_embed.empty() ? 0 : w.ple_embed.bytes();
  p.weights_resident = p.weights_total - p.weights_cold;
  // Tensors stored but never read (e.g. k/v of KV-shared layers) are not resident either.
  const WFormat q = in.quantize;
  size_t used = planned_bytes(w.embed, q) + (w.lm_head.data == w.embed.data ? 0 : planned_bytes(w.lm_head, q)) +
                w.ple_model_proj.bytes();
  for (const auto& l : w.layers) {
    for (const Weight2D* x : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down, &l.router, &l.ple_gate, &l.ple_proj})
      if (!x->empty()) used += planned_bytes(*x, q);
    for (const auto& e : l.experts) used += planned_bytes(e.gate_up, q) + planned_bytes(e.down, q);
  }
  p.weights_resident = std::min(p.weights_resident, used + size_t(c.num_layers) * size_t(c.hidden_size) * 64);

  // Training runs without a KV cache (forward_backward attends within the sequence).
  p.kv_cache = in.train ? 0 : KvCache::bytes_needed(m, in.context) * size_t(in.batch);

  // Decoder workspace for T tokens (see model/decoder.h), f32.
  const int64_t T = std::min(in.chunk, in.context) * in.batch;
  int64_t max_q = 0, max_i = 0, kv_all = 0;
  for (const LayerSpec& s : m.specs()) {
    max_q = std::max(max_q, s.num_heads * s.head_dim);
    max_i = std::max(max_i, s.intermediate);
    // Inference keeps every layer's chunk K/V until the cache commit; training does not.
    if (s.kv_donor < 0 && !in.train) kv_all += 2 * s.num_kv_heads * s.head_dim;
  }
  if (c.enable_moe_block) max_i = std::max(max_i, 2 * c.moe_intermediate_size);
  int64_t floats = T * (6 * c.hidden_size + 2 * max_q + 3 * max_i + kv_all + c.num_layers * c.hidden_size_per_layer_input);
  const int64_t logit_rows = in.train ? 0 : in.batch;  // training computes the loss in vocabulary chunks
  floats += logit_rows * m.vocab_rows();
  p.activations = size_t(floats) * 4;
  if (in.train) {
    // Saved activations for the backward pass (~ every layer's inputs), and a loss chunk.
    const size_t per_layer = size_t(T) * size_t(4 * c.hidden_size + 2 * max_q + 3 * max_i) * 4;
    if (in.checkpointing)  // layer inputs [T, H] for every layer + one layer's saved activations
      p.activations += size_t(T) * size_t(c.num_layers) * size_t(c.hidden_size) * 4 + per_layer;
    else
      p.activations += size_t(c.num_layers) * per_layer;
    p.activations += size_t(std::min<int64_t>(T, kLossChunkRows)) * size_t(m.vocab_rows()) * 4;  // the loss's logit chunk
    // MoE: the routed rows of the layer being differentiated ([T * top_k, H] slots, and each
    // expert's gathered input, gate/up and activation rows).
    if (c.enable_moe_block)
      p.activations += size_t(T) * size_t(c.top_k_experts) * size_t(2 * c.hidden_size + 3 * c.moe_intermediate_size) * 4;
    size_t lora_params = size_t(std::max<int64_t>(in.lora_params, 0));
    if (in.lora_params <= 0)
      for (const auto& l : w.layers)
        for (const Weight2D* x : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
          if (!x->empty()) lora_params += size_t(in.lora_rank) * size_t(x->n + x->k);
    if (in.lora_params <= 0)  // the default targets include the routed experts (one A/B pair each)
      for (const auto& l : w.layers)
        for (const auto& e : l.experts)
          lora_params += size_t(in.lora_rank) * size_t(e.gate_up.n + e.gate_up.k + e.down.n + e.down.k);
    p.lora = lora_params * 4 * 4;  // parameter, gradient, Adam m and v (f32)
  }
  p.runtime = size_t(64) << 20;
  return p;
}

std::string MemoryPlan::report() const {
  std::string s;
  s += "weights (checkpoint)   " + gb(weights_total) + "\n";
  s += "  resident             " + gb(weights_resident) + "\n";
  s += "  mapped, cold         " + gb(weights_cold) + " (per-layer embedding rows are read on lookup)\n";
  s += "KV cache               " + gb(kv_cache) + "\n";
  s += "activations            " + gb(activations) + "\n";
  if (lora) s += "LoRA + AdamW state     " + gb(lora) + "\n";
  s += "runtime                " + gb(runtime) + "\n";
  s += "total (resident)       " + gb(total()) + "\n";
  return s;
}

size_t available_memory() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  size_t kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (!std::strncmp(line, "MemAvailable:", 13)) {
      std::sscanf(line + 13, " %zu", &kb);
      break;
    }
  std::fclose(f);
  return kb * 1024;
}

void check_fits(const MemoryPlan& p, const std::string& what) {
  const size_t avail = available_memory();
  if (avail > 0 && p.total() > avail)
    fail(what, " needs about ", gb(p.total()), " of memory but only ", gb(avail), " is available:\n", p.report(),
         "reduce --context or --batch, or use a smaller model");
}

}  // namespace gt
