// The serving engine: continuous batching changes nothing (every sequence of a batched run of
// concurrent requests, with mixed adapters, yields exactly what generate() yields alone), chunked
// prefill interleaves with decoding, cancel / queue / KV-budget admission, stops, penalties,
// logprobs, seeded sampling, and adapter lifetime. Steps are counted, never timed.
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <map>
#include <set>
#include <mutex>

#include "gemmatune/generate/engine.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/lora/targets.h"
#include "gemmatune/model/kv_cache.h"
#include "gemmatune/model/presets.h"
#include "gemmatune/util/random.h"
#include "test_util.h"

using namespace gt;

namespace {

// Tiny random models (f32 weights: the batched and the lone run then use the same f32 kernels),
// written once per test binary.
const std::string& tiny_model(const std::string& preset, bool with_tokenizer) {
  static std::map<std::string, std::string> dirs;
  auto& d = dirs[preset + (with_tokenizer ? "_tok" : "")];
  if (d.empty()) {
    d = test::scratch("engine_" + preset + (with_tokenizer ? "_tok" : ""));
    InitOptions o;
    o.preset = preset;
    o.out_dir = d;
    o.seed = 5;
    o.dtype = "f32";
    if (with_tokenizer) o.tokenizer = test::unpacked("assets/gemma3_tokenizer.json");
    init_model(o);
  }
  return d;
}

// A LoRA adapter on every default target with random A and B (PEFT's init leaves B = 0, which
// would change nothing), large enough to change the greedy tokens.
std::shared_ptr<const Adapter> random_adapter(const Model& m, uint64_t seed, float b_range = 0.5f) {
  auto a = std::make_shared<Adapter>(Adapter::create(m, default_lora_config(m), seed));
  uint64_t st = seed * 7919 + 1;
  for (auto& mod : a->modules)
    for (auto& b : mod.B) b = float((double(splitmix64(st) >> 11) * 0x1.0p-53 * 2 - 1) * b_range);
  return a;
}

std::vector<int32_t> alone(const Model& m, const Tokenizer* tok, const LoraViews* views, const std::vector<int32_t>& prompt,
                           const GenerateOptions& opt, std::string* text = nullptr, StopReason* why = nullptr) {
  Decoder dec(m);
  if (views) dec.set_lora(*views);
  KvCache cache(m, int64_t(prompt.size()) + opt.max_new_tokens);
  GenerateResult r = generate(dec, cache, tok, prompt, opt, nullptr);
  if (text) *text = r.text;
  if (why) *why = r.stop_reason;
  return r.tokens;
}

std::vector<int32_t> prompt_of(int64_t n, int32_t salt, int64_t vocab) {
  std::vector<int32_t> p;
  for (int64_t i = 0; i < n; ++i) p.push_back(int32_t((i * 7919 + salt * 104729 + 3) % (vocab - 10)) + 2);
  return p;
}

// Collects the events of many requests; wait() blocks until all have finished.
struct Collector {
  struct Out {
    std::vector<int32_t> tokens;
    std::vector<int64_t> steps;
    std::vector<TokenLogprob> logprobs;
    std::string text;
    EngineEvent last;
    int events = 0;
    bool done = false;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::map<int, Out> out;
  std::map<int, std::function<void(const Out&)>> hooks;  // run after each event (scheduler thread)

  std::function<void(const EngineEvent&)> sink(int key) {
    {
      std::lock_guard<std::mutex> lk(mu);
      out[key];
    }
    return [this, key](const EngineEvent& e) {
      std::function<void(const Out&)> hook;
      Out copy;
      {
        std::lock_guard<std::mutex> lk(mu);
        Out& o = out[key];
        EXPECT_FALSE(o.done) << "an event after the finished one";
        ++o.events;
        for (int32_t t : e.tokens) {
          o.tokens.push_back(t);
          o.steps.push_back(e.step);
        }
        for (const auto& l : e.logprobs) o.logprobs.push_back(l);
        o.text += e.text;
        if (e.finished) {
          o.done = true;
          o.last = e;
        }
        if (hooks.count(key)) {
          hook = hooks[key];
          copy = o;
        }
      }
      if (hook) hook(copy);
      cv.notify_all();
    };
  }
  void wait() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] {
      for (auto& [k, o] : out)
        if (!o.done) return false;
      return true;
    });
  }
  Out get(int key) {
    std::lock_guard<std::mutex> lk(mu);
    return out[key];
  }
};

// The message of the exception `f` throws (any std::exception), or "(no error)".
std::string any_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

GenerateOptions greedy(int64_t max_new) {
  GenerateOptions g;
  g.sampling.temperature = 0;
  g.max_new_tokens = max_new;
  return g;
}

}  // namespace

// (a) N concurrent greedy requests, prompts of different lengths arriving at different steps, each
// yield exactly generate()'s tokens alone.
TEST(Engine, BatchedGreedyEqualsAlone) {
  Model m = Model::load(tiny_model("tiny", false));
  const int64_t V = m.vocab_rows();
  const std::vector<int64_t> lens = {3, 17, 40, 9, 1, 26};
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < lens.size(); ++i) prompts.push_back(prompt_of(lens[i], int32_t(i), V));
  EngineOptions eo;
  eo.max_seqs = 4;  // more requests than slots: some wait and join later
  eo.context = 128;
  eo.prefill_chunk = 8;
  Engine eng(m, nullptr, eo);
  Collector c;
  auto submit = [&](size_t i) {
    EngineRequest r;
    r.prompt = prompts[i];
    r.opt = greedy(12 + int64_t(i));
    eng.submit(r, c.sink(int(i)));
  };
  // Request 0 starts; each later one is submitted when the previous one has produced 2 tokens.
  for (size_t i = 0; i + 1 < lens.size(); ++i)
    c.hooks[int(i)] = [&, i, fired = std::make_shared<bool>(false)](const Collector::Out& o) {
      if (o.tokens.size() >= 2 && !*fired) {
        *fired = true;
        submit(i + 1);
      }
    };
  submit(0);
  // wait until the last one was submitted and everything ended
  for (;;) {
    c.wait();
    std::lock_guard<std::mutex> lk(c.mu);
    if (c.out.size() == lens.size()) break;
  }
  c.wait();
  int64_t max_batch = 0;
  for (size_t i = 0; i < lens.size(); ++i) {
    const auto o = c.get(int(i));
    EXPECT_EQ(o.tokens, alone(m, nullptr, nullptr, prompts[i], greedy(12 + int64_t(i)))) << "request " << i;
    EXPECT_EQ(o.last.stop_reason, StopReason::MaxTokens);
    EXPECT_EQ(o.last.prompt_tokens, lens[i]);
    EXPECT_EQ(o.last.completion_tokens, 12 + int64_t(i));
    EXPECT_FALSE(o.last.cancelled);
    EXPECT_TRUE(o.last.error.empty());
  }
  const EngineStats st = eng.stats();
  max_batch = st.last_batch_size;
  EXPECT_EQ(st.requests_total, int64_t(lens.size()));
  EXPECT_EQ(st.requests_running, 0);
  EXPECT_EQ(st.kv_bytes_used, 0);
  int64_t gen = 0, prompt = 0;
  for (size_t i = 0; i < lens.size(); ++i) gen += 12 + int64_t(i), prompt += lens[i];
  EXPECT_EQ(st.generated_tokens_total, gen);
  EXPECT_EQ(st.prompt_tokens_total, prompt);
  (void)max_batch;
  // Sequences really ran together: some step carried tokens of several requests.
  std::map<int64_t, int> per_step;
  for (size_t i = 0; i < lens.size(); ++i)
    for (int64_t s : c.get(int(i)).steps) ++per_step[s];
  int most = 0;
  for (auto& [s, n] : per_step) most = std::max(most, n);
  EXPECT_GE(most, 3);
  EXPECT_LE(most, eo.max_seqs);
}

// (b) Three different adapters plus the base, mixed in one batch (a MoE model: the experts' LoRA is
// grouped too), each equal to its run alone: tokens, and the chosen tokens' logprobs within f32
// tolerance.
TEST(Engine, MixedAdaptersEqualAlone) {
  for (const char* preset : {"tiny", "gemma4-tiny-moe"}) {
    SCOPED_TRACE(preset);
    Model m = Model::load(tiny_model(preset, false));
    const int64_t V = m.vocab_rows();
    std::vector<std::shared_ptr<const Adapter>> ads = {random_adapter(m, 1), random_adapter(m, 2), random_adapter(m, 3)};
    EngineOptions eo;
    eo.max_seqs = 8;
    eo.context = 96;
    eo.prefill_chunk = 64;
    Engine eng(m, nullptr, eo);
    for (size_t a = 0; a < ads.size(); ++a) eng.add_adapter("ad" + std::to_string(a), ads[a]);
    EXPECT_EQ(eng.adapter_names(), (std::vector<std::string>{"ad0", "ad1", "ad2"}));
    // 8 requests: adapter i % 4 (3 = base), interleaved so that groups are not contiguous by arrival.
    Collector c;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 8; ++i) {
      prompts.push_back(prompt_of(5 + 3 * i, i, V));
      EngineRequest r;
      r.prompt = prompts.back();
      r.opt = greedy(10);
      r.top_logprobs = 0;
      if (i % 4 != 3) r.adapters = {{"ad" + std::to_string(i % 4), 1.0f}};
      eng.submit(r, c.sink(i));
    }
    c.wait();
    std::set<std::vector<int32_t>> distinct;
    for (int i = 0; i < 8; ++i) {
      const auto o = c.get(i);
      std::unique_ptr<LoraViews> v;
      if (i % 4 != 3) v = std::make_unique<LoraViews>(bind_adapter(*ads[size_t(i % 4)], m, 1.0f));
      const auto ref = alone(m, nullptr, v.get(), prompts[size_t(i)], greedy(10));
      EXPECT_EQ(o.tokens, ref) << "request " << i;
      distinct.insert(o.tokens);
      // logprobs vs a lone engine run of the same request
      ASSERT_EQ(o.logprobs.size(), o.tokens.size());
      Engine solo(m, nullptr, eo);
      for (size_t a = 0; a < ads.size(); ++a) solo.add_adapter("ad" + std::to_string(a), ads[a]);
      Collector c1;
      EngineRequest r;
      r.prompt = prompts[size_t(i)];
      r.opt = greedy(10);
      r.top_logprobs = 0;
      if (i % 4 != 3) r.adapters = {{"ad" + std::to_string(i % 4), 1.0f}};
      solo.submit(r, c1.sink(0));
      c1.wait();
      const auto s = c1.get(0);
      ASSERT_EQ(s.logprobs.size(), o.logprobs.size());
      for (size_t k = 0; k < s.logprobs.size(); ++k) EXPECT_NEAR(s.logprobs[k].logprob, o.logprobs[k].logprob, 1e-4);
    }
    // The adapters really change the output (otherwise this test proves nothing).
    EXPECT_GE(distinct.size(), 3u);
  }
}

// (c) A long prompt is prefilled in chunks interleaved with the running stream's decode steps: the
// stream gets a token in every step while the prompt goes in, prefill_chunk tokens per step.
TEST(Engine, ChunkedPrefillDoesNotStallRunningStreams) {
  Model m = Model::load(tiny_model("tiny", false));
  const int64_t V = m.vocab_rows();
  EngineOptions eo;
  eo.max_seqs = 2;
  eo.context = 128;
  eo.prefill_chunk = 6;
  Engine eng(m, nullptr, eo);
  Collector c;
  const auto long_prompt = prompt_of(60, 9, V);
  int64_t submitted_at = -1;
  c.hooks[0] = [&](const Collector::Out& o) {
    if (o.tokens.size() == 3) {
      submitted_at = o.steps.back();
      EngineRequest r;
      r.prompt = long_prompt;
      r.opt = greedy(4);
      eng.submit(r, c.sink(1));
    }
  };
  EngineRequest r;
  r.prompt = prompt_of(4, 1, V);
  r.opt = greedy(30);
  eng.submit(r, c.sink(0));
  c.wait();
  while (c.get(1).events == 0 || !c.get(1).done) c.wait();
  const auto a = c.get(0), b = c.get(1);
  ASSERT_EQ(a.tokens.size(), 30u);
  // one token of stream 0 in each consecutive step: never stalled
  for (size_t i = 1; i < a.steps.size(); ++i) EXPECT_EQ(a.steps[i], a.steps[i - 1] + 1);
  // the long prompt took ceil(60 / 6) = 10 steps (its first token comes with the last chunk)
  ASSERT_FALSE(b.steps.empty());
  EXPECT_EQ(b.steps.front() - submitted_at, 10);
  EXPECT_EQ(b.tokens, alone(m, nullptr, nullptr, long_prompt, greedy(4)));
}

// (d) cancel frees the slot; QueueFull beyond max_queue; the KV budget makes a request wait.
TEST(Engine, CancelQueueFullAndKvBudget) {
  Model m = Model::load(tiny_model("tiny", false));
  const int64_t V = m.vocab_rows();
  {
    EngineOptions eo;
    eo.max_seqs = 1;
    eo.max_queue = 1;
    eo.context = 200;
    Engine eng(m, nullptr, eo);
    Collector c;
    std::mutex mu;
    std::condition_variable cv;
    bool running = false;
    c.hooks[0] = [&](const Collector::Out&) {
      std::lock_guard<std::mutex> lk(mu);
      running = true;
      cv.notify_all();
    };
    EngineRequest r;
    r.prompt = prompt_of(5, 1, V);
    r.opt = greedy(190);
    const uint64_t a = eng.submit(r, c.sink(0));
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return running; });
    }
    r.opt = greedy(5);
    eng.submit(r, c.sink(1));  // waits: the only slot is taken
    EXPECT_THROW(eng.submit(r, nullptr), QueueFull);
    EXPECT_EQ(eng.stats().requests_rejected, 1);
    eng.cancel(a);
    c.wait();
    const auto oa = c.get(0), ob = c.get(1);
    EXPECT_TRUE(oa.last.cancelled);
    EXPECT_LT(oa.tokens.size(), 190u);
    EXPECT_FALSE(ob.last.cancelled);
    EXPECT_EQ(ob.tokens.size(), 5u);
    EXPECT_EQ(ob.tokens, alone(m, nullptr, nullptr, r.prompt, greedy(5)));
    EXPECT_EQ(eng.stats().kv_bytes_used, 0);
  }
  {
    // Budget for exactly one request of this size: the second waits until the first ends.
    EngineOptions eo;
    eo.max_seqs = 4;
    eo.context = 64;
    const auto p = prompt_of(6, 2, V);
    eo.kv_budget_bytes = int64_t(KvCache::bytes_needed(m, 6 + 8));
    Engine eng(m, nullptr, eo);
    Collector c;
    EngineRequest r;
    r.prompt = p;
    r.opt = greedy(8);
    eng.submit(r, c.sink(0));
    eng.submit(r, c.sink(1));
    c.wait();
    const auto a = c.get(0), b = c.get(1);
    ASSERT_EQ(a.tokens.size(), 8u);
    ASSERT_EQ(b.tokens.size(), 8u);
    EXPECT_GT(b.steps.front(), a.steps.back());
    EXPECT_EQ(a.tokens, b.tokens);
    // A request that can never fit is refused outright.
    r.opt = greedy(40);
    EXPECT_TRUE(test::contains(any_error_of([&] { eng.submit(r, nullptr); }), "KV cache"));
  }
}

// Bad requests get std::invalid_argument with a clear message; stop() ends everything in flight.
TEST(Engine, InvalidRequestsAndStop) {
  Model m = Model::load(tiny_model("tiny", false));
  const int64_t V = m.vocab_rows();
  EngineOptions eo;
  eo.context = 32;
  Engine eng(m, nullptr, eo);
  auto err = [&](EngineRequest r) {
    try {
      eng.submit(r, nullptr);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no invalid_argument)");
  };
  EngineRequest ok;
  ok.prompt = prompt_of(4, 0, V);
  EngineRequest r = ok;
  r.prompt.clear();
  EXPECT_TRUE(test::contains(err(r), "empty"));
  r = ok;
  r.prompt = prompt_of(40, 0, V);
  EXPECT_TRUE(test::contains(err(r), "context"));
  r = ok;
  r.prompt[1] = int32_t(V);
  EXPECT_TRUE(test::contains(err(r), "vocabulary"));
  r = ok;
  r.adapters = {{"nope", 1.0f}};
  EXPECT_TRUE(test::contains(err(r), "unknown adapter 'nope'"));
  r = ok;
  r.adapters = {{"a", 1.0f}, {"b", 1.0f}};
  EXPECT_TRUE(test::contains(err(r), "mix of several adapters"));
  r = ok;
  r.frequency_penalty = 3;
  EXPECT_TRUE(test::contains(err(r), "frequency penalty"));
  r = ok;
  r.opt.sampling.top_p = 0;
  EXPECT_TRUE(test::contains(err(r), "top-p"));
  r = ok;
  r.opt.max_new_tokens = 0;
  EXPECT_TRUE(test::contains(err(r), "max_tokens"));
  r = ok;
  r.top_logprobs = 21;
  EXPECT_TRUE(test::contains(err(r), "top_logprobs"));
  // max_tokens is clamped to the context
  Collector c;
  r = ok;
  r.opt = greedy(1000);
  eng.submit(r, c.sink(0));
  c.wait();
  EXPECT_EQ(c.get(0).tokens.size(), size_t(32 - 4));
  // stop(): in-flight requests end with a cancelled finished event; later submits are refused
  EngineOptions big = eo;
  big.context = 4000;
  auto eng2 = std::make_unique<Engine>(m, nullptr, big);
  Collector c2;
  r.opt = greedy(3990);
  eng2->submit(r, c2.sink(0));
  eng2->submit(r, c2.sink(1));
  eng2->stop();
  c2.wait();
  EXPECT_TRUE(c2.get(0).last.cancelled || c2.get(0).tokens.size() == 3990u);
  EXPECT_TRUE(c2.get(1).last.cancelled || c2.get(1).tokens.size() == 3990u);
  EXPECT_THROW(eng2->submit(r, nullptr), std::runtime_error);
  eng2.reset();  // the destructor after stop() is fine
}

// (e) stop strings (held back, never emitted, same text as generate()), stop ids, seeded sampling.
TEST(Engine, StopsAndSeededSamplingMatchGenerate) {
  Model m = Model::load(tiny_model("tiny", true));
  Tokenizer tok = Tokenizer::from_file(tiny_model("tiny", true) + "/tokenizer.json");
  const auto prompt = tok.encode("The quick brown fox", true);
  EngineOptions eo;
  eo.context = 128;
  Engine eng(m, &tok, eo);
  // The greedy text alone, then a stop string taken from its middle.
  std::string full;
  const auto toks = alone(m, &tok, nullptr, prompt, greedy(24), &full);
  ASSERT_GE(full.size(), 8u);
  const std::string stop = full.substr(full.size() / 2, 3);
  for (int variant = 0; variant < 3; ++variant) {
    GenerateOptions g = greedy(24);
    if (variant == 0) g.stop_strings = {stop, "never-in-the-text"};
    if (variant == 1) g.stop_ids = {toks[5]};
    if (variant == 2) {
      g.sampling.temperature = 1.0f;
      g.sampling.top_k = 50;
      g.sampling.seed = 1234;
    }
    std::string text;
    StopReason why{};
    const auto ref = alone(m, &tok, nullptr, prompt, g, &text, &why);
    for (int rep = 0; rep < 2; ++rep) {
      Collector c;
      EngineRequest r;
      r.prompt = prompt;
      r.opt = g;
      eng.submit(r, c.sink(0));
      c.wait();
      const auto o = c.get(0);
      EXPECT_EQ(o.tokens, ref) << "variant " << variant;
      EXPECT_EQ(o.text, text) << "variant " << variant;
      EXPECT_EQ(o.last.stop_reason, why) << "variant " << variant;
      if (variant == 0) {
        EXPECT_EQ(why, StopReason::StopString);
        EXPECT_FALSE(test::contains(o.text, stop));
      }
      if (variant == 1) {
        EXPECT_EQ(why, StopReason::Eos);
      }
    }
  }
}

// (e) OpenAI penalties and logprobs in the sampler.
TEST(Engine, PenaltiesAndLogprobs) {
  const std::vector<float> logits = {1.0f, 0.9f, 0.0f, -1.0f};
  {
    SamplingParams p;
    p.temperature = 0;
    p.presence_penalty = 0.5f;
    Sampler s(p);
    EXPECT_EQ(s.sample(logits.data(), 4, {}), 0);
    EXPECT_EQ(s.sample(logits.data(), 4, {}), 1);  // 1 - 0.5 < 0.9
    EXPECT_EQ(s.sample(logits.data(), 4, {}), 0);  // both penalised once: 0.5 > 0.4
  }
  {
    SamplingParams p;
    p.temperature = 0;
    p.frequency_penalty = 0.06f;
    Sampler s(p);
    // token 0 wins until it has been sampled twice (1 - 2·0.06 = 0.88 < 0.9)
    EXPECT_EQ(s.sample(logits.data(), 4, {}), 0);
    EXPECT_EQ(s.sample(logits.data(), 4, {}), 0);
    EXPECT_EQ(s.sample(logits.data(), 4, {}), 1);
  }
  {
    SamplingParams p;
    p.temperature = 0.7f;
    p.seed = 3;
    Sampler s(p);
    SampledLogprobs lp;
    const int32_t t = s.sample(logits.data(), 4, {}, &lp, 3);
    double z = 0;
    for (float l : logits) z += std::exp(double(l));
    EXPECT_NEAR(lp.logprob, logits[size_t(t)] - std::log(z), 1e-5);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].first, 0);
    EXPECT_EQ(lp.top[1].first, 1);
    EXPECT_EQ(lp.top[2].first, 2);
    double sum = 0;
    for (size_t i = 0; i < lp.top.size(); ++i) {
      EXPECT_LE(lp.top[i].second, 0.0f);
      if (i) {
        EXPECT_LE(lp.top[i].second, lp.top[i - 1].second);
      }
      sum += std::exp(double(lp.top[i].second));
    }
    EXPECT_LE(sum, 1.0 + 1e-6);
  }
  EXPECT_THROW(Sampler(SamplingParams{.presence_penalty = -2.5f}), Error);
  // Through the engine: top_logprobs entries sorted, all <= 0, the chosen one among them when greedy.
  Model m = Model::load(tiny_model("tiny", false));
  EngineOptions eo;
  eo.context = 64;
  Engine eng(m, nullptr, eo);
  Collector c;
  EngineRequest r;
  r.prompt = prompt_of(7, 4, m.vocab_rows());
  r.opt = greedy(6);
  r.top_logprobs = 5;
  r.presence_penalty = 1.5f;
  r.frequency_penalty = 2.0f;
  eng.submit(r, c.sink(0));
  c.wait();
  const auto o = c.get(0);
  ASSERT_EQ(o.logprobs.size(), 6u);
  for (size_t k = 0; k < 6; ++k) {
    const auto& l = o.logprobs[k];
    EXPECT_EQ(l.token, o.tokens[k]);
    EXPECT_LE(l.logprob, 0.0f);
    ASSERT_EQ(l.top.size(), 5u);
    EXPECT_EQ(l.top[0].first, l.token);  // greedy picks the most likely (penalised) token
    EXPECT_FLOAT_EQ(l.top[0].second, l.logprob);
    for (size_t i = 1; i < 5; ++i) EXPECT_LE(l.top[i].second, l.top[i - 1].second);
  }
  // the same as generate() with these penalties, and not what comes without them
  GenerateOptions g = greedy(6);
  g.sampling.presence_penalty = 1.5f;
  g.sampling.frequency_penalty = 2.0f;
  EXPECT_EQ(o.tokens, alone(m, nullptr, nullptr, r.prompt, g));
  EXPECT_NE(o.tokens, alone(m, nullptr, nullptr, r.prompt, greedy(6)));
}

// (f) Unloading an adapter in use keeps it alive until its requests end; new requests cannot name it.
TEST(Engine, UnloadedAdapterLivesUntilItsRequestsEnd) {
  Model m = Model::load(tiny_model("tiny", false));
  EngineOptions eo;
  eo.context = 64;
  Engine eng(m, nullptr, eo);
  std::weak_ptr<const Adapter> weak;
  std::vector<int32_t> ref;
  const auto prompt = prompt_of(5, 8, m.vocab_rows());
  {
    auto a = random_adapter(m, 4);
    weak = a;
    const LoraViews v = bind_adapter(*a, m, 1.0f);
    ref = alone(m, nullptr, &v, prompt, greedy(12));
    eng.add_adapter("mine", a);
  }
  Collector c;
  bool removed = false, alive_after_remove = false;
  c.hooks[0] = [&](const Collector::Out& o) {
    if (o.tokens.size() == 2) {
      removed = eng.remove_adapter("mine");
      alive_after_remove = !weak.expired();
    }
  };
  EngineRequest r;
  r.prompt = prompt;
  r.opt = greedy(12);
  r.adapters = {{"mine", 1.0f}};
  eng.submit(r, c.sink(0));
  c.wait();
  EXPECT_TRUE(removed);
  EXPECT_TRUE(alive_after_remove);
  EXPECT_EQ(c.get(0).tokens, ref);
  EXPECT_TRUE(weak.expired());  // freed once the request ended
  EXPECT_FALSE(eng.remove_adapter("mine"));
  EXPECT_TRUE(test::contains(any_error_of([&] { eng.submit(r, nullptr); }), "unknown adapter"));
}
