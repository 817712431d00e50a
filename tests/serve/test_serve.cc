// The HTTP server end to end, in process: a tiny random Gemma 3 (real tokenizer and chat template)
// with a random LoRA adapter, served on an ephemeral loopback port and driven with httplib's
// client. Every endpoint, SSE framing, each error code, adapters per request and at run time, the
// API key, the queue limit and cancellation on disconnect.
#include <gtest/gtest.h>
#include <httplib.h>

#include <future>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/generate/engine.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/presets.h"
#include "gemmatune/serve/server.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

using namespace gt;
using json = nlohmann::json;

namespace {

struct Assets {
  std::string model_dir, adapter_root;
};

// The tiny model and, under adapter_root/fr, an adapter whose random B (not PEFT's zero init)
// changes the model's answers.
const Assets& assets() {
  static Assets a = [] {
    Assets s;
    s.model_dir = test::scratch("serve_tiny");
    InitOptions o;
    o.preset = "tiny";
    o.out_dir = s.model_dir;
    o.seed = 5;
    o.tokenizer = test::unpacked("assets/gemma3_tokenizer.json");
    o.chat_template = test::data("assets/gemma3_chat_template.jinja");
    init_model(o);
    Model m = Model::load(s.model_dir);
    LoraConfig c;
    c.r = 4;
    c.alpha = 8;
    Adapter ad = Adapter::create(m, c, 3);
    std::mt19937 rng(9);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    for (LoraModule& mod : ad.modules)
      for (float& b : mod.B) b = nd(rng);
    s.adapter_root = test::scratch("serve_adapters");
    ad.save_peft(s.adapter_root + "/fr", "tiny");
    return s;
  }();
  return a;
}

// A model, an engine and a server on an ephemeral port, serving in a thread.
struct Running {
  Model model;
  Tokenizer tok;
  ChatTemplate tmpl;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<serve::Server> server;
  std::thread thread;
  int port = 0;

  Running(EngineOptions eo, serve::ServerOptions so)
      : model(Model::load(assets().model_dir)),
        tok(Tokenizer::from_file(assets().model_dir + "/tokenizer.json")),
        tmpl(ChatTemplate::from_model_dir(assets().model_dir)) {
    engine = std::make_unique<Engine>(model, &tok, eo);
    so.host = "127.0.0.1";
    so.port = 0;
    so.model_name = "tiny";
    so.adapter_dir = assets().adapter_root;
    server = std::make_unique<serve::Server>(model, tok, &tmpl, *engine, so);
    server->load_adapter("fr", assets().adapter_root + "/fr");
    port = server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~Running() {
    server->stop();
    thread.join();
  }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    if (!key.empty()) c.set_bearer_token_auth(key);
    return c;
  }
};

EngineOptions small_engine() {
  EngineOptions e;
  e.max_seqs = 4;
  e.context = 256;
  e.max_queue = 16;
  e.prefill_chunk = 64;
  return e;
}

// One server shared by the tests that need no special configuration.
Running& shared() {
  static Running r(small_engine(), serve::ServerOptions{});
  return r;
}

const std::string kQuestion = R"([{"role":"user","content":"What is the capital of France?"}])";

std::string chat_body(const std::string& model, int max_tokens, const std::string& extra = "") {
  return R"({"model":")" + model + R"(","messages":)" + kQuestion + R"(,"temperature":0,"max_tokens":)" + std::to_string(max_tokens) +
         (extra.empty() ? "" : "," + extra) + "}";
}

struct Reply {
  int status = 0;
  json body;
  std::string raw;
  std::string retry_after;
};

Reply post(const httplib::Client& cc, const std::string& path, const std::string& body) {
  auto& c = const_cast<httplib::Client&>(cc);
  auto res = c.Post(path.c_str(), body, "application/json");
  Reply r;
  if (!res) return r;
  r.status = res->status;
  r.raw = res->body;
  r.retry_after = res->get_header_value("Retry-After");
  if (res->get_header_value("Content-Type").rfind("application/json", 0) == 0) r.body = json::parse(res->body);
  return r;
}

Reply get(const httplib::Client& cc, const std::string& path) {
  auto& c = const_cast<httplib::Client&>(cc);
  auto res = c.Get(path.c_str());
  Reply r;
  if (!res) return r;
  r.status = res->status;
  r.raw = res->body;
  if (res->get_header_value("Content-Type").rfind("application/json", 0) == 0) r.body = json::parse(res->body);
  return r;
}

// OpenAI's error shape with the given status and type.
void expect_error(const Reply& r, int status, const std::string& type) {
  EXPECT_EQ(r.status, status) << r.raw;
  ASSERT_TRUE(r.body.is_object()) << r.raw;
  ASSERT_TRUE(r.body.contains("error")) << r.raw;
  const json& e = r.body["error"];
  EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << r.raw;
  EXPECT_EQ(e["type"], type) << r.raw;
  EXPECT_TRUE(e.contains("param") && e.contains("code")) << r.raw;
}

std::string content_of(const Reply& r) { return r.body["choices"][0]["message"]["content"].get<std::string>(); }

// The SSE events of a stream body: each "data: X\n\n" gives X; anything else fails.
std::vector<std::string> sse_events(const std::string& raw) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < raw.size()) {
    const size_t end = raw.find("\n\n", at);
    EXPECT_NE(end, std::string::npos) << "an event does not end with a blank line: " << raw.substr(at);
    if (end == std::string::npos) break;
    const std::string ev = raw.substr(at, end - at);
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    out.push_back(ev.substr(6));
    at = end + 2;
  }
  return out;
}

}  // namespace

TEST(Serve, HealthPageAndModels) {
  auto c = shared().client();
  Reply h = get(c, "/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.body["status"], "ok");
  Reply page = get(c, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_TRUE(test::contains(page.raw, "<title>gemmatune</title>"));
  EXPECT_TRUE(test::contains(page.raw, "/v1/chat/completions"));
  Reply m = get(c, "/v1/models");
  ASSERT_EQ(m.status, 200) << m.raw;
  EXPECT_EQ(m.body["object"], "list");
  ASSERT_GE(m.body["data"].size(), 2u);
  EXPECT_EQ(m.body["data"][0]["id"], "tiny");
  EXPECT_EQ(m.body["data"][0]["max_model_len"], 256);
  bool fr = false;
  for (const json& d : m.body["data"]) fr |= d["id"] == "fr" && d["parent"] == "tiny";
  EXPECT_TRUE(fr) << m.raw;
  Reply metrics = get(c, "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_TRUE(test::contains(metrics.raw, "# TYPE gemmatune_requests_total counter"));
  EXPECT_TRUE(test::contains(metrics.raw, "\ngemmatune_adapters_loaded "));
  expect_error(get(c, "/v1/nothing"), 404, "not_found_error");
}

TEST(Serve, ChatCompletionAndItsStreamAgree) {
  auto c = shared().client();
  Reply r = post(c, "/v1/chat/completions", chat_body("tiny", 12));
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_EQ(r.body["model"], "tiny");
  EXPECT_EQ(r.body["choices"][0]["message"]["role"], "assistant");
  const std::string content = content_of(r);
  const std::string finish = r.body["choices"][0]["finish_reason"];
  const json& u = r.body["usage"];
  EXPECT_GT(u["prompt_tokens"].get<int>(), 5);
  EXPECT_LE(u["completion_tokens"].get<int>(), 12);
  EXPECT_EQ(u["total_tokens"], u["prompt_tokens"].get<int>() + u["completion_tokens"].get<int>());
  EXPECT_TRUE(finish == "length" ? u["completion_tokens"] == 12 : finish == "stop") << finish;

  Reply s = post(c, "/v1/chat/completions", chat_body("tiny", 12, R"("stream":true,"stream_options":{"include_usage":true})"));
  ASSERT_EQ(s.status, 200) << s.raw;
  const std::vector<std::string> ev = sse_events(s.raw);
  ASSERT_GE(ev.size(), 4u);
  EXPECT_EQ(ev.back(), "[DONE]");
  const json first = json::parse(ev[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string streamed, stream_finish;
  json usage;
  for (size_t i = 0; i + 1 < ev.size(); ++i) {
    const json j = json::parse(ev[i]);
    EXPECT_EQ(j["id"], first["id"]);
    if (j.contains("usage") && j["usage"].is_object()) {
      EXPECT_EQ(i + 2, ev.size()) << "usage comes last, before [DONE]";
      EXPECT_TRUE(j["choices"].empty());
      usage = j["usage"];
      continue;
    }
    const json& ch = j["choices"][0];
    if (ch["delta"].contains("content")) streamed += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) stream_finish = ch["finish_reason"];
  }
  EXPECT_EQ(streamed, content);
  EXPECT_EQ(stream_finish, finish);
  EXPECT_EQ(usage, u);
}

TEST(Serve, Completions) {
  auto c = shared().client();
  Reply t = post(c, "/v1/completions", R"({"prompt":"The capital of France is","max_tokens":6,"temperature":0})");
  ASSERT_EQ(t.status, 200) << t.raw;
  EXPECT_EQ(t.body["object"], "text_completion");
  const std::string text = t.body["choices"][0]["text"];
  // The same prompt as token ids (bos + the text, as the server encodes it) gives the same text.
  const std::vector<int32_t> ids = shared().tok.encode("The capital of France is", true);
  Reply i = post(c, "/v1/completions", json{{"prompt", ids}, {"max_tokens", 6}, {"temperature", 0}}.dump());
  ASSERT_EQ(i.status, 200) << i.raw;
  EXPECT_EQ(i.body["choices"][0]["text"], text);
  EXPECT_EQ(i.body["usage"]["prompt_tokens"], int(ids.size()));
  // Streamed: "text" pieces, then [DONE].
  Reply s = post(c, "/v1/completions", R"({"prompt":"The capital of France is","max_tokens":6,"temperature":0,"stream":true})");
  ASSERT_EQ(s.status, 200);
  const auto ev = sse_events(s.raw);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string streamed;
  for (size_t k = 0; k + 1 < ev.size(); ++k) streamed += json::parse(ev[k])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(streamed, text);
  // Token ids beyond the vocabulary: 400.
  expect_error(post(c, "/v1/completions", R"({"prompt":[2,999999999],"max_tokens":2})"), 400, "invalid_request_error");
}

TEST(Serve, AdapterChoiceChangesTheAnswer) {
  auto c = shared().client();
  // The random model's greedy text may be the same whitespace with and without the adapter, so the
  // answer is compared with its logprobs (the adapter changes every logit).
  auto answer = [&](const std::string& model, const std::string& extra) {
    Reply r = post(c, "/v1/chat/completions", chat_body(model, 6, R"("logprobs":true,"top_logprobs":2)" + (extra.empty() ? "" : "," + extra)));
    EXPECT_EQ(r.status, 200) << r.raw;
    return content_of(r) + r.body["choices"][0]["logprobs"].dump();
  };
  const std::string base = answer("tiny", "");
  const std::string fr = answer("fr", "");
  EXPECT_NE(base, fr);
  // llama.cpp's lora list, by name and by id (index in the sorted list), and a zero scale (= base).
  EXPECT_EQ(answer("tiny", R"("lora":[{"name":"fr","scale":1}])"), fr);
  EXPECT_EQ(answer("tiny", R"("lora":[{"id":0}])"), fr);
  EXPECT_EQ(answer("tiny", R"("lora":[{"name":"fr","scale":0}])"), base);
  // Unknown model / adapter: 404.
  Reply m = post(c, "/v1/chat/completions", chat_body("nope", 4));
  expect_error(m, 404, "not_found_error");
  EXPECT_EQ(m.body["error"]["code"], "model_not_found");
  expect_error(post(c, "/v1/chat/completions", chat_body("tiny", 4, R"("lora":[{"name":"nope"}])")), 404, "not_found_error");
  expect_error(post(c, "/v1/chat/completions", chat_body("tiny", 4, R"("lora":[{"id":7}])")), 404, "not_found_error");
}

// Batching changes nothing: concurrent greedy requests, with and without the adapter, give exactly
// what each gives alone.
TEST(Serve, ConcurrentMixedAdapterRequestsMatchSequential) {
  auto c = shared().client();
  const std::vector<std::string> models = {"tiny", "fr", "fr", "tiny", "fr", "tiny"};
  std::vector<std::string> alone;
  for (const auto& m : models) alone.push_back(content_of(post(c, "/v1/chat/completions", chat_body(m, 16))));
  std::vector<std::future<std::string>> together;
  for (const auto& m : models)
    together.push_back(std::async(std::launch::async, [m] {
      auto cc = shared().client();
      return content_of(post(cc, "/v1/chat/completions", chat_body(m, 16)));
    }));
  for (size_t i = 0; i < models.size(); ++i) EXPECT_EQ(together[i].get(), alone[i]) << models[i];
}

TEST(Serve, ClearClientErrors) {
  auto c = shared().client();
  expect_error(post(c, "/v1/chat/completions", "{not json"), 400, "invalid_request_error");
  expect_error(post(c, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}"), 400, "invalid_request_error");
  Reply t = post(c, "/v1/chat/completions", chat_body("tiny", 4, R"("temperature":"warm")"));
  expect_error(t, 400, "invalid_request_error");
  EXPECT_EQ(t.body["error"]["param"], "temperature");
  expect_error(post(c, "/v1/chat/completions", chat_body("tiny", 4, R"("top_p":-1)")), 400, "invalid_request_error");
  // A prompt longer than the context: 400 context_length_exceeded.
  std::string longtext;
  for (int i = 0; i < 300; ++i) longtext += "word ";
  Reply l = post(c, "/v1/completions", json{{"prompt", longtext}, {"max_tokens", 4}}.dump());
  expect_error(l, 400, "invalid_request_error");
  EXPECT_EQ(l.body["error"]["code"], "context_length_exceeded");
  // max_tokens beyond the context is clamped to it: the reply ends with "length" at the context.
  Reply big = post(c, "/v1/completions", R"({"prompt":"Hi","max_tokens":1000000,"temperature":0,"stop":[]})");
  ASSERT_EQ(big.status, 200) << big.raw;
  EXPECT_LE(big.body["usage"]["total_tokens"].get<int>(), 256);
}

TEST(Serve, LoadAndUnloadAdaptersAtRunTime) {
  auto c = shared().client();
  const std::string fr = content_of(post(c, "/v1/chat/completions", chat_body("fr", 8)));
  Reply l = post(c, "/v1/load_lora_adapter", R"({"lora_name":"fr2","lora_path":"fr"})");
  ASSERT_EQ(l.status, 200) << l.raw;
  EXPECT_TRUE(test::contains(get(c, "/v1/models").raw, "\"fr2\""));
  EXPECT_EQ(content_of(post(c, "/v1/chat/completions", chat_body("fr2", 8))), fr);
  expect_error(post(c, "/v1/load_lora_adapter", R"({"lora_name":"fr2","lora_path":"fr"})"), 400, "invalid_request_error");  // already loaded
  ASSERT_EQ(post(c, "/v1/unload_lora_adapter", R"({"lora_name":"fr2"})").status, 200);
  expect_error(post(c, "/v1/chat/completions", chat_body("fr2", 4)), 404, "not_found_error");
  expect_error(post(c, "/v1/unload_lora_adapter", R"({"lora_name":"fr2"})"), 404, "not_found_error");
  // Only folders directly inside --adapter-dir: no traversal, no absolute paths.
  expect_error(post(c, "/v1/load_lora_adapter", R"({"lora_name":"x","lora_path":"../serve_tiny"})"), 400, "invalid_request_error");
  expect_error(post(c, "/v1/load_lora_adapter", R"({"lora_name":"x","lora_path":"/etc"})"), 400, "invalid_request_error");
  expect_error(post(c, "/v1/load_lora_adapter", R"({"lora_name":"x","lora_path":"missing"})"), 404, "not_found_error");
}

TEST(Serve, ApiKey) {
  serve::ServerOptions so;
  so.api_key = "s3cret";
  Running r(small_engine(), so);
  Reply none = get(r.client(), "/v1/models");
  expect_error(none, 401, "authentication_error");
  expect_error(get(r.client("wrong"), "/v1/models"), 401, "authentication_error");
  expect_error(post(r.client(), "/v1/chat/completions", chat_body("tiny", 2)), 401, "authentication_error");
  EXPECT_EQ(get(r.client(), "/metrics").status, 401);
  EXPECT_EQ(get(r.client("s3cret"), "/v1/models").status, 200);
  EXPECT_EQ(post(r.client("s3cret"), "/v1/chat/completions", chat_body("tiny", 2)).status, 200);
  EXPECT_EQ(get(r.client(), "/health").status, 200);  // health and the page stay open
  EXPECT_EQ(get(r.client(), "/").status, 200);
}

TEST(Serve, BodyTooLarge) {
  serve::ServerOptions so;
  so.max_body_bytes = 4096;
  Running r(small_engine(), so);
  const std::string big = R"({"messages":[{"role":"user","content":")" + std::string(8000, 'a') + "\"}]}";
  expect_error(post(r.client(), "/v1/chat/completions", big), 413, "request_too_large");
  EXPECT_EQ(post(r.client(), "/v1/chat/completions", chat_body("tiny", 2)).status, 200);
}

// A full queue answers 429 with Retry-After. The scheduler is held inside a callback of a request
// submitted directly to the engine, so the one running slot stays taken while the HTTP request
// arrives (no timing involved).
TEST(Serve, QueueFullIs429) {
  EngineOptions eo = small_engine();
  eo.max_seqs = 1;
  eo.max_queue = 1;
  Running r(eo, serve::ServerOptions{});
  std::promise<void> entered, release;
  std::shared_future<void> rel = release.get_future().share();
  std::atomic<bool> first{true};
  EngineRequest er;
  er.prompt = r.tok.encode("Hello", true);
  er.opt.max_new_tokens = 3;
  er.opt.sampling.temperature = 0;
  std::promise<void> finished1, finished2;
  r.engine->submit(er, [&](const EngineEvent& e) {
    if (first.exchange(false)) {
      entered.set_value();
      rel.wait();
    }
    if (e.finished) finished1.set_value();
  });
  entered.get_future().wait();  // the one slot is running, held
  r.engine->submit(er, [&](const EngineEvent& e) {
    if (e.finished) finished2.set_value();
  });  // the one queue place is taken
  Reply busy = post(r.client(), "/v1/chat/completions", chat_body("tiny", 2));
  expect_error(busy, 429, "rate_limit_exceeded");
  EXPECT_EQ(busy.retry_after, "1");
  release.set_value();
  finished1.get_future().wait();
  finished2.get_future().wait();
  EXPECT_EQ(post(r.client(), "/v1/chat/completions", chat_body("tiny", 2)).status, 200);
  EXPECT_TRUE(test::contains(get(r.client(), "/metrics").raw, "\ngemmatune_http_rejected_total 1\n"));
}

// A streaming client that goes away cancels its request: the slot is freed long before the
// request could have generated its max_tokens.
TEST(Serve, DisconnectCancelsTheRequest) {
  EngineOptions eo = small_engine();
  eo.context = 4096;
  Running r(eo, serve::ServerOptions{});
  int chunks = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"prompt":"Once upon a time","max_tokens":4000,"temperature":1,"seed":2,"stream":true})";
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };  // hang up after 3 chunks
  httplib::Client c2("127.0.0.1", r.port);
  httplib::Response resp;
  httplib::Error err = httplib::Error::Success;
  c2.send(req, resp, err);
  EXPECT_GE(chunks, 3);
  // The request is cancelled and its slot freed.
  bool freed = false;
  for (int i = 0; i < 600 && !freed; ++i) {
    const EngineStats s = r.engine->stats();
    freed = s.requests_running == 0 && s.requests_waiting == 0;
    if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(freed);
  const EngineStats s = r.engine->stats();
  EXPECT_LT(s.generated_tokens_total, 4000);
  EXPECT_TRUE(test::contains(get(r.client(), "/metrics").raw, "\ngemmatune_streams_cancelled_total 1\n"));
}
