// The one decoder loop shared by prefill, decoding, scoring and training. It runs a batch of
// sequence chunks (each with its own KV cache, or none) through every layer, driven by the
// LayerSpecs; it never branches on model names. LoRA views, when set (lora/ binds an adapter to
// the model and produces them), are applied unmerged inside every adapted projection by the
// kernels/lora_linear kernel (routed experts included, only for the experts a token uses).
// For training, the forward leaves per-layer activations (LayerActs) that backward() consumes.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "gemmatune/kernels/lora_linear.h"
#include "gemmatune/model/kv_cache.h"
#include "gemmatune/model/lora_views.h"
#include "gemmatune/model/model.h"
#include "gemmatune/model/proj.h"

namespace gt {

struct SeqChunk {
  KvCache* cache = nullptr;  // null: positions start at 0 and nothing is retained
  const int32_t* tokens = nullptr;
  int64_t n = 0;
  // Inference (forward / loss): this chunk's own LoRA views (must outlive the call); null = the
  // decoder-wide views (set_lora). A batch whose chunks use different views runs every base
  // product once over all rows and each adapter's LoRA product over its own rows only; chunks
  // with the same views next to each other form one group (order them by adapter for the
  // fewest LoRA calls). Training (forward_backward) takes only null here.
  const LoraViews* lora = nullptr;
};

enum class LogitsFor { All, Last, None };

// The final logit softcap the model applies (0 = none): Gemma 4 always; Gemma 3 only in
// *ForCausalLM (the multimodal class skips it).
float final_logit_softcap(const ModelConfig& c);

// What forward_backward adds for training beyond the cross-entropy.
struct TrainExtras {
  // LoRA dropout (the views' lora_dropout, on the input of every adapted Linear, as
  // PEFT does): the masks are drawn from this seed, so a step is reproducible and a recomputed
  // layer (gradient checkpointing) sees the same masks.
  uint64_t dropout_seed = 0;
  // MoE load-balance loss (MaxText's definition, kernels/moe_balance.h), meaned over the MoE
  // layers and added to the objective times moe_aux_scale (1/grad_accum: each micro-batch adds
  // its share). 0 = off.
  double moe_aux_weight = 0;
  double moe_aux_scale = 1;
  // Chunks per batch row, in order (a packed row is several chunks but one row of the loss);
  // empty: every chunk is a row.
  std::vector<int64_t> row_chunks;
  // Called during the backward pass once layer `layer`'s adapter gradients are final for this call
  // (layers finish last-first); data-parallel training starts their allreduce there.
  std::function<void(int64_t layer)> layer_grads_done;
};

// What one layer's forward leaves for its backward (all [T, ...] row-major, f32).
struct LayerActs {
  std::vector<float> h_in;              // residual stream entering the layer
  std::vector<float> a, rs_in;          // input_layernorm output and 1/rms
  std::vector<float> q0, rs_q, q;       // q_proj output, q_norm 1/rms, after norm + RoPE
  std::vector<float> k0, rs_k, k;       // k_proj output, k_norm 1/rms, after norm + RoPE
  std::vector<float> v0, rs_v, v;       // v_proj output (k0 when k_eq_v), v_norm 1/rms, value
  std::vector<float> att;               // attention output (o_proj input)
  std::vector<float> o0, rs_o;          // o_proj output, post_attention_layernorm 1/rms
  std::vector<float> h_mid;             // residual after attention
  std::vector<float> x, rs_x;           // pre_feedforward_layernorm output, 1/rms
  std::vector<float> g, u, act;         // gate, up, gelu(gate)*up
  std::vector<float> f0, rs_f0;         // down_proj output; post_feedforward_layernorm_1 1/rms (MoE)
  std::vector<float> f, rs_f;           // MLP (+MoE) output before post_feedforward_layernorm, its 1/rms
  std::vector<float> h_post;            // residual after the MLP
  std::vector<float> gp0, gp, p0, rs_p; // PLE gate pre-activation, gated input, projection, 1/rms
  // LoRA: t = x·Aᵀ per adapted Linear projection, indexed by proj_index(Proj::q_proj .. down_proj)
  std::array<std::vector<float>, kNumLinearProj> lt;
  // MoE
  std::vector<float> z, rs_z, probs;    // router input (scaled), scaleless-norm 1/rms, softmax [T, E]
  std::vector<int32_t> topk;            // [T, K] expert ids
  std::vector<float> topw;              // [T, K] final weights
  std::vector<float> x2, rs_x2;         // pre_feedforward_layernorm_2 output, 1/rms
  std::vector<float> moe, rs_moe;       // experts' weighted sum, post_feedforward_layernorm_2 1/rms
  std::vector<float> f1;                // post_feedforward_layernorm_1 output (MoE)
  std::vector<double> aux_coef;         // load-balance loss: dLoss/dP[row, expert]
};

class Decoder {
 public:
  explicit Decoder(const Model& m);

  // Applies these LoRA views (unmerged; lora/adapter.h bind_adapter makes them, its scale folded
  // in) in every forward from now on; LoraViews{} removes them. The viewed tensors must outlive
  // their use (the trainer updates them in place).
  void set_lora(LoraViews views);
  const LoraViews& lora_views() const { return lora_; }

  // Runs all chunks (their tokens concatenated) and advances their caches. Logits rows: every
  // token in order (All) or the last token of each chunk (Last); returns the number of rows and
  // fills `logits` with rows * vocab_rows floats.
  int64_t forward(const std::vector<SeqChunk>& chunks, LogitsFor mode, std::vector<float>& logits);

  // Training: forward over cache-less chunks keeping every layer's activations, then the mean
  // cross-entropy over the tokens t with loss_mask[t] = 1 (predicting tokens[t+1] of the same
  // chunk), computed in row chunks without materialising all logits, and the backward pass.
  // Gradients of the adapter's tensors are added into `grads` (by module slot, LoraView::slot:
  // grads[2*i] for A, grads[2*i+1] for B). loss_mask is over the concatenated tokens.
  // `loss_weight` scales the loss normalisation: the loss is sum(CE)/normaliser with
  // normaliser = loss_norm (> 0) or the number of scored tokens (loss_norm = 0).
  // Returns the summed cross-entropy (not divided) and the number of scored tokens.
  // With `extras`: LoRA dropout when the views have lora_dropout > 0, and the MoE load-balance
  // loss when extras->moe_aux_weight > 0 (its value, already scaled, in LossResult::aux; its
  // gradient flows through the router softmax into the residual stream).
  struct LossResult {
    double sum = 0;
    int64_t tokens = 0;
    double aux = 0;
  };
  LossResult forward_backward(const std::vector<SeqChunk>& chunks, const std::vector<uint8_t>& loss_mask,
                              std::vector<std::vector<float>>& grads, double loss_norm = 0, bool checkpointing = false,
                              const TrainExtras* extras = nullptr);
  // Loss only (no backward), same definition.
  LossResult loss(const std::vector<SeqChunk>& chunks, const std::vector<uint8_t>& loss_mask);

  // MoE routing statistics: tokens routed to each expert, per layer, since construction.
  const std::vector<std::vector<int64_t>>& expert_counts() const { return expert_counts_; }
  // Times each expert's weights were run (once per forward in which any token routed to it).
  const std::vector<std::vector<int64_t>>& expert_calls() const { return expert_calls_; }
  void reset_expert_stats();
  const Model& model() const { return m_; }

 private:
  void prepare(const std::vector<SeqChunk>& chunks, int64_t& T);
  void embed(int64_t T);
  void layer_forward(int64_t li, const std::vector<SeqChunk>& chunks, int64_t T, LayerActs& A, bool train);
  void attention_block(int64_t li, const std::vector<SeqChunk>& chunks, int64_t T, LayerActs& A, bool train);
  void mlp_block(int64_t li, int64_t T, LayerActs& A, bool train);
  void moe_block(int64_t li, int64_t T, LayerActs& A, float* out);
  // One routed expert's forward over the tokens routed to it (token index, slot), on the calling
  // thread (experts run in parallel): xin = those rows of x2, gu = gate_up·xin (+ LoRA), act =
  // gelu(gate)·up, y = down·act (+ LoRA). `save_t`: keep the LoRA products x·Aᵀ (t_gu, t_dn) for the
  // backward.
  struct ExpertScratch {
    std::vector<float> xin, gu, act, y, t_gu, t_dn;
    LoraScratch ws;
  };
  void expert_forward(int64_t li, int64_t e, const std::vector<std::pair<int64_t, int64_t>>& toks, const float* x2,
                      ExpertScratch& s, bool save_t) const;
  void ple_inputs(int64_t T);
  void final_rows(LogitsFor mode, const std::vector<SeqChunk>& chunks, int64_t T, float* x, int64_t& rows);
  // y = x·Wᵀ (+ the LoRA view's product when adapted); training (A non-null) keeps x·Aᵀ in A->lt.
  void project(int64_t li, Proj p, const Weight2D& w, const float* x, int64_t T, float* y, LayerActs* A);
  const LoraView& lora(int64_t layer, Proj p) const;
  // Per-chunk LoRA (SeqChunk::lora): runs of consecutive tokens with the same views; empty when no
  // chunk names its own views (then lora_ applies to every token, the single-adapter path).
  struct LoraSegment {
    const LoraViews* views = nullptr;
    int64_t t0 = 0, t1 = 0;
  };
  const LoraView& seg_lora(const LoraSegment& g, int64_t layer, Proj p) const;
  // Expert e's LoRA (fused-experts view `p`) over n gathered rows whose token indices are tok(r);
  // `ws` is the calling thread's scratch (experts run in parallel).
  template <class TokOf>
  void expert_lora(int64_t li, Proj p, int64_t e, const float* x, int64_t n, float* y, TokOf tok, LoraScratch& ws) const;
  const LoraDropout* dropout() const { return dropout_.p > 0 ? &dropout_ : nullptr; }
  float* grad(const LoraView& v, bool b, std::vector<std::vector<float>>& grads) const {
    return grads[size_t(2 * v.slot + (b ? 1 : 0))].data();
  }

  // backward pieces (model/backward.cc)
  void layer_backward(int64_t li, const std::vector<SeqChunk>& chunks, int64_t T, LayerActs& A, float* dh,
                      std::vector<std::vector<float>>& grads);
  void project_backward(int64_t li, Proj p, const Weight2D& w, const float* x, const LayerActs& A, const float* dy,
                        int64_t T, float* dx, bool accumulate, std::vector<std::vector<float>>& grads);
  void experts_backward(int64_t li, int64_t T, LayerActs& A, const float* dmoe, std::vector<float>& dx2,
                        std::vector<float>& dw, std::vector<std::vector<float>>& grads);
  void moe_backward(int64_t li, int64_t T, LayerActs& A, const float* dmoe, float* dh_mid,
                    std::vector<std::vector<float>>& grads);
  LossResult loss_and_grad(const float* h_final, int64_t T, const std::vector<SeqChunk>& chunks,
                           const std::vector<uint8_t>& mask, double norm, float* dh);
  void set_train_extras(const std::vector<SeqChunk>& chunks, const TrainExtras* extras);
  void size_grads(std::vector<std::vector<float>>& grads) const;

  const Model& m_;
  LoraViews lora_;
  LoraScratch lora_ws_;
  std::vector<LoraSegment> segs_;
  std::vector<int32_t> tok_seg_;  // per token: its index in segs_ (per-chunk LoRA only)
  std::vector<std::vector<int64_t>> expert_counts_, expert_calls_;
  // Workspace, grown as needed and reused across calls.
  std::vector<int32_t> ids_;
  std::vector<int64_t> pos_;
  std::vector<float> h_, ple_, tmp_, fin_;
  std::vector<float> moe_slots_;  // MoE: one output row per (token, slot), [T·K, H]
  LayerActs scratch_;
  std::vector<LayerActs> acts_;  // training: one per layer
  std::vector<std::vector<float>> kv_grad_k_, kv_grad_v_;  // backward: dL/dK, dL/dV per K/V-owning layer
  bool recomputing_ = false;     // gradient checkpointing re-runs a layer: do not count routing twice
  // Training extras of the forward_backward in progress (forward_backward sets and clears them).
  LoraDropout dropout_;
  double aux_weight_ = 0, aux_scale_ = 1, aux_sum_ = 0;  // aux_weight_ already divided by the MoE layer count
  std::vector<int64_t> aux_rows_;                        // token offsets of the batch rows
  // Per-layer K/V of the current chunk (also read by KV-shared layers).
  std::vector<std::vector<float>> new_k_, new_v_;
};

}  // namespace gt
