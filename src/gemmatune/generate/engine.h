// The serving engine: continuous batching of many generation requests over one base model, with
// per-request LoRA adapters. One scheduler thread steps every running sequence together (one
// Decoder::forward over all their chunks, so the weights are read once per step for the whole
// batch); new requests join between steps; long prompts are prefilled in chunks interleaved with
// the decode steps; sequences with different adapters (or none) share one step: the base GEMM runs
// once over the batch and the LoRA products are grouped per adapter (S-LoRA / Punica style).
// A KV-cache budget gates admission; a bounded queue refuses work beyond it (QueueFull).
//
// Thread safety: submit(), cancel(), the adapter registry and stats() may be called from any
// thread (the HTTP handlers); callbacks run on the scheduler thread and must not block for long
// (a server pushes the event into the request's own queue and returns).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemmatune/data/tokenizer.h"
#include "gemmatune/generate/generate.h"
#include "gemmatune/model/model.h"

namespace gt {

class Adapter;

struct EngineOptions {
  int64_t max_seqs = 8;          // sequences stepped together at most
  int64_t context = 4096;        // per-sequence context (prompt + generated): max_tokens is clamped to it
  int64_t kv_budget_bytes = 0;   // KV-cache bytes for all running sequences (0 = max_seqs full contexts)
  int64_t max_queue = 64;        // waiting requests beyond the running ones; more → QueueFull
  int64_t prefill_chunk = 256;   // prompt tokens of one sequence per step
};

// One generation request. `opt` carries sampling (seed included), max_new_tokens, stop ids and
// stop strings, as for generate().
struct EngineRequest {
  std::vector<int32_t> prompt;
  GenerateOptions opt;
  // Adapters by registry name with their scales ({} = the base model). More than one entry is a
  // llama.cpp-style mix; the engine may refuse mixes it does not support with std::invalid_argument.
  std::vector<std::pair<std::string, float>> adapters;
  float frequency_penalty = 0, presence_penalty = 0;  // OpenAI definitions, on the generated tokens
  int64_t top_logprobs = -1;                          // -1: no logprobs; 0..20: the chosen token's + that many
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely tokens and their logprobs
};

// What the engine reports to a request's callback: zero or more events with new text, then exactly
// one with `finished` set (also after cancel() or an error).
struct EngineEvent {
  std::string text;                    // newly final text (stop strings held back and never emitted)
  std::vector<int32_t> tokens;         // the token(s) generated this step
  std::vector<TokenLogprob> logprobs;  // one per token, when requested
  bool finished = false;
  StopReason stop_reason = StopReason::MaxTokens;
  bool cancelled = false;
  std::string error;                   // non-empty: the request failed (finished is set)
  int64_t prompt_tokens = 0, completion_tokens = 0;  // usage, filled on the finished event
  int64_t step = -1;                   // the engine step that sampled `tokens` (EngineStats::steps_total then)
};

struct QueueFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct EngineStats {
  int64_t requests_total = 0, requests_running = 0, requests_waiting = 0, requests_rejected = 0;
  int64_t prompt_tokens_total = 0, generated_tokens_total = 0, steps_total = 0;
  int64_t last_batch_size = 0;         // sequences in the latest step
  double tokens_per_second = 0;        // generated tokens/s over the recent window
  int64_t kv_bytes_used = 0, kv_bytes_budget = 0;
};

class Engine {
 public:
  // `model` and `tok` (may be null: no text, token ids only) must outlive the engine. Starts the
  // scheduler thread.
  Engine(const Model& model, const Tokenizer* tok, EngineOptions o);
  ~Engine();  // stops: cancels what is in flight (finished events with cancelled = true), joins
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; returns its id. Throws QueueFull when the queue is full, std::invalid_argument
  // for an unknown adapter or a prompt that does not fit the context. The adapters it names are kept
  // alive until the request ends, even if unloaded meanwhile.
  uint64_t submit(EngineRequest r, std::function<void(const EngineEvent&)> on_event);
  // Cancels a queued or running request (its slot and KV cache are freed before the next step).
  void cancel(uint64_t id);
  // Stops accepting requests, cancels everything in flight and joins the scheduler (idempotent).
  void stop();

  // Adapter registry. add: the adapter must match the model (bind it once to check); replaces a
  // same-named one for new requests. remove: false if unknown. names: sorted.
  void add_adapter(const std::string& name, std::shared_ptr<const Adapter> a);
  bool remove_adapter(const std::string& name);
  std::vector<std::string> adapter_names() const;

  EngineStats stats() const;
  const EngineOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gt
