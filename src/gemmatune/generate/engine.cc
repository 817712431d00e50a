#include "gemmatune/generate/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "gemmatune/generate/text_stream.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/kv_cache.h"
#include "gemmatune/util/error.h"

namespace gt {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One adapter in the registry, with its views bound once per run-time scale (requests with the
// same adapter and scale share one views object, so the decoder groups them into one LoRA call).
struct AdapterEntry {
  std::shared_ptr<const Adapter> adapter;
  std::map<float, std::shared_ptr<const LoraViews>> views;
};

struct Seq {
  uint64_t id = 0;
  EngineRequest req;
  std::function<void(const EngineEvent&)> on_event;
  std::shared_ptr<const Adapter> adapter;   // keeps the tensors alive while the request runs
  std::shared_ptr<const LoraViews> views;   // null: the base model
  int64_t max_new = 0;                      // max_new_tokens clamped to the context
  int64_t kv_bytes = 0;                     // what admission reserved for this sequence
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StopTextStream> text;
  std::vector<int32_t> history;             // prompt + generated (repetition penalty)
  std::vector<int32_t> generated;
  int64_t prefilled = 0;                    // prompt tokens already in the cache
  int64_t chunk = 0;                        // tokens fed in the current step
  bool cancelled = false;
};

}  // namespace

struct Engine::Impl {
  const Model& model;
  const Tokenizer* tok;
  EngineOptions o;
  Decoder dec;
  int64_t kv_budget = 0;

  mutable std::mutex mu;  // guards everything below up to `th`
  std::condition_variable cv;
  bool stopping = false;
  uint64_t next_id = 1;
  std::map<std::string, AdapterEntry> adapters;
  std::deque<std::unique_ptr<Seq>> waiting;
  std::unordered_set<uint64_t> cancels;
  EngineStats st;
  std::deque<std::pair<double, int64_t>> window;  // (time, tokens generated) per step, last ~10 s

  std::vector<std::unique_ptr<Seq>> running;  // scheduler thread only
  std::thread th;

  Impl(const Model& m, const Tokenizer* t, EngineOptions opt) : model(m), tok(t), o(opt), dec(m) {}

  static void finish(Seq& s, EngineEvent ev) {
    s.views.reset();  // an unloaded adapter is freed now, not when the sequence is destroyed
    s.adapter.reset();
    ev.finished = true;
    ev.prompt_tokens = int64_t(s.req.prompt.size());
    ev.completion_tokens = int64_t(s.generated.size());
    if (s.on_event) s.on_event(ev);
  }
  static void finish_cancelled(Seq& s) {
    EngineEvent ev;
    ev.cancelled = true;
    if (s.text) ev.text = s.text->flush();
    finish(s, std::move(ev));
  }

  void loop();
  void step();
};

void Engine::Impl::loop() {
  for (;;) {
    std::vector<std::unique_ptr<Seq>> dropped;  // cancelled while waiting: finished outside the lock
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return stopping || !waiting.empty() || !running.empty() || !cancels.empty(); });
      if (stopping) break;
      if (!cancels.empty()) {
        for (auto& s : running)
          if (cancels.count(s->id)) s->cancelled = true;
        for (auto it = waiting.begin(); it != waiting.end();)
          if (cancels.count((*it)->id)) {
            dropped.push_back(std::move(*it));
            it = waiting.erase(it);
          } else {
            ++it;
          }
        cancels.clear();
      }
      // Free the cancelled running sequences' slots and memory before admitting.
      for (auto& s : running)
        if (s->cancelled) st.kv_bytes_used -= s->kv_bytes;
      for (auto& s : running)
        if (s->cancelled) dropped.push_back(std::move(s));
      running.erase(std::remove(running.begin(), running.end(), nullptr), running.end());
      // Admission: first come, first served, while a slot and the KV budget allow.
      while (!waiting.empty() && int64_t(running.size()) < o.max_seqs &&
             st.kv_bytes_used + waiting.front()->kv_bytes <= kv_budget) {
        std::unique_ptr<Seq> s = std::move(waiting.front());
        waiting.pop_front();
        st.kv_bytes_used += s->kv_bytes;
        running.push_back(std::move(s));
      }
      st.requests_running = int64_t(running.size());
      st.requests_waiting = int64_t(waiting.size());
    }
    for (auto& s : dropped) finish_cancelled(*s);
    dropped.clear();
    if (running.empty()) continue;
    step();
  }
  // Stopping: everything in flight ends as cancelled.
  std::vector<std::unique_ptr<Seq>> all;
  {
    std::lock_guard<std::mutex> lk(mu);
    for (auto& s : running) all.push_back(std::move(s));
    for (auto& s : waiting) all.push_back(std::move(s));
    running.clear();
    waiting.clear();
    st.kv_bytes_used = 0;
    st.requests_running = st.requests_waiting = 0;
  }
  for (auto& s : all) finish_cancelled(*s);
}

void Engine::Impl::step() {
  // Lazily create the per-sequence state on the scheduler thread.
  for (auto& s : running) {
    if (s->cache) continue;
    s->cache = std::make_unique<KvCache>(model, int64_t(s->req.prompt.size()) + s->max_new);
    s->sampler = std::make_unique<Sampler>(s->req.opt.sampling);
    s->text = std::make_unique<StopTextStream>(tok, s->req.opt.skip_special_tokens, s->req.opt.stop_strings);
    s->history = s->req.prompt;
  }
  // This step's tokens: one per decoding sequence; prompt chunks of prefilling sequences within a
  // budget of prefill_chunk prompt tokens per step, oldest request first.
  std::sort(running.begin(), running.end(), [](const auto& a, const auto& b) { return a->id < b->id; });
  int64_t budget = o.prefill_chunk;
  for (auto& s : running) {
    const int64_t P = int64_t(s->req.prompt.size());
    if (s->prefilled < P) {
      s->chunk = std::min(budget, P - s->prefilled);
      budget -= s->chunk;
    } else {
      s->chunk = 1;
    }
  }
  // Group the chunks by adapter (admission order within a group), so each adapter's rows are one
  // contiguous run of the batch and its LoRA product is one call.
  std::stable_sort(running.begin(), running.end(), [](const auto& a, const auto& b) {
    return std::less<const LoraViews*>()(a->views.get(), b->views.get());
  });
  std::vector<SeqChunk> chunks;
  std::vector<Seq*> in_step;
  for (auto& s : running) {
    if (s->chunk <= 0) continue;
    const int32_t* toks = s->prefilled < int64_t(s->req.prompt.size()) ? s->req.prompt.data() + s->prefilled
                                                                         : &s->generated.back();
    chunks.push_back({s->cache.get(), toks, s->chunk, s->views.get()});
    in_step.push_back(s.get());
  }
  std::vector<float> logits;
  std::string error;
  int64_t step_no = 0;
  {
    std::lock_guard<std::mutex> lk(mu);
    step_no = st.steps_total;
  }
  try {
    dec.forward(chunks, LogitsFor::Last, logits);
  } catch (const std::exception& e) {
    error = e.what();
  }
  const int64_t V = model.vocab_rows();
  int64_t new_tokens = 0, new_prompt = 0;
  std::vector<Seq*> done;
  for (size_t i = 0; i < in_step.size(); ++i) {
    Seq& s = *in_step[i];
    EngineEvent ev;
    if (!error.empty()) {
      ev.error = error;
      ev.stop_reason = StopReason::MaxTokens;
      finish(s, std::move(ev));
      done.push_back(&s);
      continue;
    }
    const int64_t P = int64_t(s.req.prompt.size());
    if (s.prefilled < P) {
      s.prefilled += s.chunk;
      new_prompt += s.chunk;
      if (s.prefilled < P) continue;  // more prompt to go: these logits are not used
    }
    ev.step = step_no;
    SampledLogprobs lp;
    const bool want_lp = s.req.top_logprobs >= 0;
    const int32_t next = s.sampler->sample(logits.data() + int64_t(i) * V, V, s.history, want_lp ? &lp : nullptr,
                                           want_lp ? s.req.top_logprobs : 0);
    const auto& stops = s.req.opt.stop_ids;
    bool finished = false;
    if (std::find(stops.begin(), stops.end(), next) != stops.end()) {
      ev.stop_reason = StopReason::Eos;
      finished = true;
    } else {
      s.generated.push_back(next);
      s.history.push_back(next);
      ++new_tokens;
      ev.tokens.push_back(next);
      if (want_lp) ev.logprobs.push_back({next, lp.logprob, std::move(lp.top)});
      ev.text = s.text->push(next);
      if (s.text->stopped()) {
        ev.stop_reason = StopReason::StopString;
        finished = true;
      } else if (int64_t(s.generated.size()) >= s.max_new) {
        ev.stop_reason = StopReason::MaxTokens;
        finished = true;
      } else if (s.cache->pos() >= s.cache->max_context()) {
        ev.stop_reason = StopReason::Context;
        finished = true;
      }
    }
    if (finished) {
      ev.text += s.text->flush();
      if (s.text->stopped()) ev.stop_reason = StopReason::StopString;
      finish(s, std::move(ev));
      done.push_back(&s);
    } else if (s.on_event) {
      s.on_event(ev);
    }
  }
  const double t = now();
  std::lock_guard<std::mutex> lk(mu);
  ++st.steps_total;
  st.last_batch_size = int64_t(in_step.size());
  st.generated_tokens_total += new_tokens;
  st.prompt_tokens_total += new_prompt;
  window.push_back({t, new_tokens});
  while (window.size() > 1 && window.front().first < t - 10) window.pop_front();
  int64_t sum = 0;
  for (const auto& w : window) sum += w.second;
  const double span = t - window.front().first;
  st.tokens_per_second = span > 0 ? double(sum - window.front().second) / span : 0;
  if (!done.empty()) {
    for (auto& s : running)
      if (std::find(done.begin(), done.end(), s.get()) != done.end()) {
        st.kv_bytes_used -= s->kv_bytes;
        s.reset();
      }
    running.erase(std::remove(running.begin(), running.end(), nullptr), running.end());
    st.requests_running = int64_t(running.size());
  }
}

Engine::Engine(const Model& model, const Tokenizer* tok, EngineOptions o) : impl_(std::make_unique<Impl>(model, tok, o)) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("engine: " + m); };
  if (o.max_seqs < 1) bad("max_seqs must be >= 1, got " + std::to_string(o.max_seqs));
  if (o.context < 2) bad("context must be >= 2, got " + std::to_string(o.context));
  if (o.max_queue < 0) bad("max_queue must be >= 0, got " + std::to_string(o.max_queue));
  if (o.prefill_chunk < 1) bad("prefill_chunk must be >= 1, got " + std::to_string(o.prefill_chunk));
  if (o.kv_budget_bytes < 0) bad("kv_budget_bytes must be >= 0, got " + std::to_string(o.kv_budget_bytes));
  impl_->kv_budget = o.kv_budget_bytes > 0 ? o.kv_budget_bytes
                                           : o.max_seqs * int64_t(KvCache::bytes_needed(model, o.context));
  impl_->st.kv_bytes_budget = impl_->kv_budget;
  impl_->th = std::thread([this] { impl_->loop(); });
}

Engine::~Engine() { stop(); }

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->th.joinable()) impl_->th.join();
}

uint64_t Engine::submit(EngineRequest r, std::function<void(const EngineEvent&)> on_event) {
  Impl& I = *impl_;
  auto bad = [](const std::string& m) { throw std::invalid_argument(m); };
  if (r.prompt.empty()) bad("the prompt is empty");
  const int64_t V = I.model.vocab_rows();
  for (int32_t id : r.prompt)
    if (id < 0 || id >= V) bad("prompt token id " + std::to_string(id) + " is outside the vocabulary (0.." + std::to_string(V - 1) + ")");
  const int64_t P = int64_t(r.prompt.size());
  if (P >= I.o.context)
    bad("the prompt (" + std::to_string(P) + " tokens) does not fit the context of " + std::to_string(I.o.context) +
        " tokens");
  if (r.opt.max_new_tokens < 1) bad("max_tokens must be >= 1, got " + std::to_string(r.opt.max_new_tokens));
  if (r.top_logprobs < -1 || r.top_logprobs > 20) bad("top_logprobs must be in 0..20, got " + std::to_string(r.top_logprobs));
  for (const auto& s : r.opt.stop_strings)
    if (s.empty()) bad("a stop string is empty");
  r.opt.sampling.frequency_penalty = r.frequency_penalty;
  r.opt.sampling.presence_penalty = r.presence_penalty;
  try {
    Sampler check(r.opt.sampling);
  } catch (const std::exception& e) {
    bad(e.what());
  }
  if (r.adapters.size() > 1)
    bad("a mix of several adapters in one request is not supported (got " + std::to_string(r.adapters.size()) +
        "); name one adapter");
  auto s = std::make_unique<Seq>();
  s->max_new = std::min(r.opt.max_new_tokens, I.o.context - P);
  s->kv_bytes = int64_t(KvCache::bytes_needed(I.model, P + s->max_new));
  if (s->kv_bytes > I.kv_budget)
    bad("the request needs " + std::to_string(s->kv_bytes) + " bytes of KV cache, more than the budget of " +
        std::to_string(I.kv_budget));
  s->on_event = std::move(on_event);
  std::unique_lock<std::mutex> lk(I.mu);
  if (I.stopping) throw std::runtime_error("engine: stopped, no new requests");
  if (!r.adapters.empty()) {
    const auto& [name, scale] = r.adapters[0];
    auto it = I.adapters.find(name);
    if (it == I.adapters.end()) bad("unknown adapter '" + name + "'");
    if (!(scale == scale) || std::abs(scale) > 1e6f) bad("adapter scale of '" + name + "' is not a usable number");
    AdapterEntry& e = it->second;
    auto& v = e.views[scale];
    if (!v) v = std::make_shared<const LoraViews>(bind_adapter(*e.adapter, I.model, scale));
    s->adapter = e.adapter;
    s->views = v;
  }
  if (int64_t(I.waiting.size()) >= I.o.max_queue) {
    ++I.st.requests_rejected;
    throw QueueFull("engine: the queue is full (" + std::to_string(I.o.max_queue) + " waiting requests)");
  }
  s->id = I.next_id++;
  s->req = std::move(r);
  const uint64_t id = s->id;
  I.waiting.push_back(std::move(s));
  ++I.st.requests_total;
  I.st.requests_waiting = int64_t(I.waiting.size());
  lk.unlock();
  I.cv.notify_all();
  return id;
}

void Engine::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->cancels.insert(id);
  }
  impl_->cv.notify_all();
}

void Engine::add_adapter(const std::string& name, std::shared_ptr<const Adapter> a) {
  if (name.empty()) throw std::invalid_argument("adapter name is empty");
  if (!a) throw std::invalid_argument("adapter '" + name + "' is null");
  AdapterEntry e;
  try {
    e.views[1.0f] = std::make_shared<const LoraViews>(bind_adapter(*a, impl_->model, 1.0f));
  } catch (const std::exception& ex) {
    throw std::invalid_argument("adapter '" + name + "' does not fit the model: " + ex.what());
  }
  e.adapter = std::move(a);
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->adapters[name] = std::move(e);
}

bool Engine::remove_adapter(const std::string& name) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->adapters.erase(name) > 0;  // running requests keep their shared_ptrs
}

std::vector<std::string> Engine::adapter_names() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  std::vector<std::string> n;
  for (const auto& [k, v] : impl_->adapters) n.push_back(k);
  return n;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->st;
}

const EngineOptions& Engine::options() const { return impl_->o; }

}  // namespace gt
