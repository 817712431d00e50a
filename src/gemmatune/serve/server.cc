#include "gemmatune/serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <random>

#include "gemmatune/generate/chat_format.h"
#include "gemmatune/lora/adapter.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt::serve {

using json = nlohmann::ordered_json;

namespace {

// Events of one request, pushed by the engine's scheduler thread, taken by the HTTP thread.
struct Pending {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<EngineEvent> events;
  bool finished = false;

  void push(const EngineEvent& e) {
    {
      std::lock_guard<std::mutex> l(mu);
      events.push_back(e);
      if (e.finished) finished = true;
    }
    cv.notify_one();
  }
  // Takes the queued events, waiting up to `wait` for one.
  std::deque<EngineEvent> take(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> l(mu);
    cv.wait_for(l, wait, [&] { return !events.empty(); });
    std::deque<EngineEvent> out;
    out.swap(events);
    return out;
  }
};

const char* finish_reason(StopReason r) {
  return r == StopReason::Eos || r == StopReason::StopString ? "stop" : "length";
}

int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  if (e.status == 429) res.set_header("Retry-After", "1");
  res.set_content(e.body(), "application/json");
}

// A chat reply's reasoning and content, split by generate/chat_format's ReasoningSplitter (the same
// session logic as `gemmatune chat`) when the model has a thought channel (`f` non-null; the text
// then keeps its special tokens, which the splitter drops); otherwise all of it is content. A
// thought is dropped unless the request enabled thinking.
class ReplySplit {
 public:
  ReplySplit(const ChatFormat* f, bool thinking) : keep_(thinking) {
    if (f) s_.emplace(*f);
  }
  ReplyParts push(const std::string& text) { return s_ ? keep(s_->push(text)) : ReplyParts{"", text}; }
  ReplyParts finish() { return s_ ? keep(s_->flush()) : ReplyParts{}; }

 private:
  ReplyParts keep(ReplyParts p) const {
    if (!keep_) p.reasoning.clear();
    return p;
  }
  std::optional<ReasoningSplitter> s_;
  bool keep_;
};

// The accept queue: room for every client the queue can admit reconnecting at once (the kernel
// caps it at net.core.somaxconn).
constexpr int kListenBacklog = 1024;

}  // namespace

struct Server::Impl {
  const Model& model;
  const Tokenizer& tok;
  const ChatTemplate* tmpl;
  Engine& engine;
  ServerOptions o;
  httplib::Server http;
  int listen_fd = -1;  // the listening socket (captured when httplib creates it; see setup())
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> next_id{1};
  std::unique_ptr<ChatFormat> fmt;  // messages -> prompt, end-of-turn ids, the thought split (as `chat`)
  std::vector<int32_t> text_stops;
  bool gemma4_markers = false;  // a thought channel: keep special tokens in the text for the splitter
  std::mutex counters_mu;
  HttpCounters counters;
  std::mutex adapters_mu;  // serialises load/unload

  Impl(const Model& m, const Tokenizer& t, const ChatTemplate* tp, Engine& e, ServerOptions opt)
      : model(m), tok(t), tmpl(tp), engine(e), o(std::move(opt)) {
    if (o.model_name.empty()) {
      std::string d = m.dir();
      while (d.size() > 1 && d.back() == '/') d.pop_back();
      const size_t slash = d.rfind('/');
      o.model_name = slash == std::string::npos ? d : d.substr(slash + 1);
    }
    const ModelConfig& c = m.config();
    text_stops = c.eos_ids;
    if (tmpl) fmt = std::make_unique<ChatFormat>(tok, *tmpl, c);
    gemma4_markers = fmt && fmt->has_thinking() && tok.token_id("<|channel>") >= 0 && tok.token_id("<channel|>") >= 0;
    setup();
  }

  void count(int status) {
    std::lock_guard<std::mutex> l(counters_mu);
    ++counters.requests;
    if (status == 429) ++counters.rejected_429;
    if (status >= 400 && status < 500) ++counters.errors_4xx;
    if (status >= 500) ++counters.errors_5xx;
  }

  // ---- request -> engine request ----

  std::vector<std::pair<std::string, float>> resolve_adapters(const ApiRequest& r) {
    std::vector<std::pair<std::string, float>> out;
    const std::vector<std::string> names = engine.adapter_names();
    auto known = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
    if (!r.model.empty() && r.model != o.model_name) {
      if (!known(r.model))
        throw ApiError(404, "The model '" + r.model + "' does not exist: use '" + o.model_name + "' or a loaded adapter (GET /v1/models)", "model", "model_not_found");
      out.emplace_back(r.model, 1.0f);
    }
    for (size_t i = 0; i < r.lora.size(); ++i) {
      const LoraChoice& c = r.lora[i];
      std::string name = c.name;
      if (c.id >= 0) {
        if (size_t(c.id) >= names.size())
          throw ApiError(404, "'lora[" + std::to_string(i) + "].id' is " + std::to_string(c.id) + " but " + std::to_string(names.size()) + " adapters are loaded", "lora", "adapter_not_found");
        name = names[size_t(c.id)];
      } else if (!known(name)) {
        throw ApiError(404, "the adapter '" + name + "' is not loaded (GET /v1/models lists the adapters)", "lora", "adapter_not_found");
      }
      if (c.scale == 0.0f) continue;
      auto it = std::find_if(out.begin(), out.end(), [&](const auto& p) { return p.first == name; });
      if (it != out.end()) it->second = c.scale;
      else out.emplace_back(name, c.scale);
    }
    return out;
  }

  EngineRequest build(const ApiRequest& r) {
    EngineRequest e;
    e.adapters = resolve_adapters(r);
    if (r.endpoint == Endpoint::Chat) {
      if (!fmt) throw ApiError(400, "the model folder has no chat template: use /v1/completions", "messages");
      try {
        e.prompt = fmt->encode(r.messages, r.enable_thinking, r.template_kwargs);
      } catch (const std::invalid_argument& err) {
        throw ApiError(400, err.what(), "messages");
      } catch (const Error& err) {
        throw ApiError(400, std::string("the chat template refused the messages: ") + err.what(), "messages");
      }
      e.opt.stop_ids = fmt->stop_ids();
    } else if (r.prompt_is_ids) {
      for (size_t i = 0; i < r.prompt_ids.size(); ++i)
        if (r.prompt_ids[i] >= tok.vocab_size())
          throw ApiError(400, "'prompt[" + std::to_string(i) + "]' is token " + std::to_string(r.prompt_ids[i]) + ", beyond the vocabulary (" + std::to_string(tok.vocab_size()) + ")", "prompt");
      e.prompt = r.prompt_ids;
      e.opt.stop_ids = text_stops;
    } else {
      e.prompt = tok.encode(r.prompt, true);
      e.opt.stop_ids = text_stops;
    }
    const int64_t ctx = engine.options().context;
    const int64_t n = int64_t(e.prompt.size());
    if (n == 0) throw ApiError(400, "the prompt is empty", "prompt");
    if (n >= ctx)
      throw ApiError(400, "the prompt has " + std::to_string(n) + " tokens; this server's context is " + std::to_string(ctx) + " tokens (prompt + completion)", r.endpoint == Endpoint::Chat ? "messages" : "prompt", "context_length_exceeded");
    // max_tokens is clamped to what the context leaves (finish_reason "length" when it ends there).
    e.opt.max_new_tokens = r.max_tokens > 0 ? std::min(r.max_tokens, ctx - n) : ctx - n;
    e.opt.stop_strings = r.stop;
    e.opt.skip_special_tokens = !gemma4_markers;
    SamplingParams& s = e.opt.sampling;
    s.temperature = r.temperature;
    s.top_k = r.top_k;
    s.top_p = r.top_p;
    s.min_p = r.min_p;
    s.repetition_penalty = r.repetition_penalty;
    s.seed = r.seed ? *r.seed : std::random_device{}();
    e.opt.prefill_chunk = engine.options().prefill_chunk;
    e.frequency_penalty = r.frequency_penalty;
    e.presence_penalty = r.presence_penalty;
    e.top_logprobs = r.top_logprobs;
    return e;
  }

  // ---- response bodies ----

  std::string token_str(int32_t id) const { return tok.decode({id}, false); }

  json bytes_of(const std::string& s) const {
    json b = json::array();
    for (unsigned char c : s) b.push_back(int(c));
    return b;
  }

  // Chat logprobs entries for `lps`.
  json chat_logprobs(const std::vector<TokenLogprob>& lps) const {
    json content = json::array();
    for (const TokenLogprob& t : lps) {
      const std::string s = token_str(t.token);
      json top = json::array();
      for (const auto& [id, lp] : t.top) {
        const std::string ts = token_str(id);
        top.push_back({{"token", ts}, {"logprob", lp}, {"bytes", bytes_of(ts)}});
      }
      content.push_back({{"token", s}, {"logprob", t.logprob}, {"bytes", bytes_of(s)}, {"top_logprobs", top}});
    }
    return json{{"content", content}};
  }

  // Completions logprobs (the legacy shape).
  json text_logprobs(const std::vector<TokenLogprob>& lps, int64_t offset) const {
    json tokens = json::array(), token_lps = json::array(), tops = json::array(), offsets = json::array();
    for (const TokenLogprob& t : lps) {
      const std::string s = token_str(t.token);
      tokens.push_back(s);
      token_lps.push_back(t.logprob);
      json top = json::object();
      for (const auto& [id, lp] : t.top) top[token_str(id)] = lp;
      tops.push_back(top);
      offsets.push_back(offset);
      offset += int64_t(s.size());
    }
    return json{{"tokens", tokens}, {"token_logprobs", token_lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
  }

  json usage(const EngineEvent& f) const {
    return json{{"prompt_tokens", f.prompt_tokens}, {"completion_tokens", f.completion_tokens},
                {"total_tokens", f.prompt_tokens + f.completion_tokens}};
  }

  // ---- handlers ----

  uint64_t submit(EngineRequest er, const std::shared_ptr<Pending>& p) {
    if (stopping) throw ApiError(503, "the server is shutting down");
    try {
      return engine.submit(std::move(er), [p](const EngineEvent& ev) { p->push(ev); });
    } catch (const QueueFull& e) {
      throw ApiError(429, std::string("the server is busy (request queue full): retry later. ") + e.what(), "", "queue_full");
    } catch (const std::invalid_argument& e) {
      const std::string m = e.what();
      if (m.find("adapter") != std::string::npos) throw ApiError(404, m, "model", "adapter_not_found");
      throw ApiError(400, m);
    } catch (const ApiError&) {
      throw;
    } catch (const std::exception& e) {
      throw ApiError(503, std::string("the engine refused the request: ") + e.what());
    }
  }

  void generate(const httplib::Request& req, httplib::Response& res, Endpoint ep) {
    const ApiRequest r = parse_request(req.body, ep, o.limits);
    EngineRequest er = build(r);
    const bool chat = ep == Endpoint::Chat;
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
    const std::string model_id = r.model.empty() ? o.model_name : r.model;
    const int64_t created = now_s();
    auto p = std::make_shared<Pending>();
    const uint64_t eid = submit(std::move(er), p);

    if (!r.stream) {
      std::string text;
      std::vector<TokenLogprob> lps;
      EngineEvent fin;
      bool done = false;
      while (!done) {
        for (EngineEvent& ev : p->take(std::chrono::milliseconds(500))) {
          text += ev.text;
          for (auto& t : ev.logprobs) lps.push_back(std::move(t));
          if (ev.finished) {
            fin = std::move(ev);
            done = true;
          }
        }
      }
      if (!fin.error.empty()) throw ApiError(500, "generation failed: " + fin.error);
      if (fin.cancelled) throw ApiError(503, "the request was cancelled (the server is shutting down)");
      json choice = json::object();
      choice["index"] = 0;
      if (chat) {
        ReplySplit split(gemma4_markers ? fmt.get() : nullptr, r.enable_thinking);
        ReplyParts d = split.push(text);
        ReplyParts d2 = split.finish();
        json msg = {{"role", "assistant"}, {"content", d.content + d2.content}};
        const std::string reasoning = d.reasoning + d2.reasoning;
        if (!reasoning.empty()) msg["reasoning_content"] = reasoning;
        choice["message"] = msg;
        choice["logprobs"] = r.top_logprobs >= 0 ? chat_logprobs(lps) : json(nullptr);
      } else {
        choice["text"] = text;
        choice["logprobs"] = r.top_logprobs >= 0 ? text_logprobs(lps, 0) : json(nullptr);
      }
      choice["finish_reason"] = finish_reason(fin.stop_reason);
      json body = {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
                   {"model", model_id}, {"choices", json::array({choice})}, {"usage", usage(fin)}};
      res.set_content(dump(body), "application/json");
      return;
    }

    // Streaming: SSE chunks as the engine produces text; a failed write (the client went away)
    // cancels the request, which frees its slot before the next step.
    struct StreamState {
      bool started = false, ended = false;
      int64_t text_offset = 0;
      ReplySplit split;
      StreamState(const ChatFormat* f, bool thinking) : split(f, thinking) {}
    };
    auto st = std::make_shared<StreamState>(gemma4_markers ? fmt.get() : nullptr, r.enable_thinking);
    const bool include_usage = r.include_usage;
    const int64_t top_lp = r.top_logprobs;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, p, st, eid, id, model_id, created, chat, include_usage, top_lp](size_t, httplib::DataSink& sink) -> bool {
          auto chunk = [&](json choice) {
            json c = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created}, {"model", model_id},
                      {"choices", json::array({std::move(choice)})}};
            return sse(dump(c));
          };
          std::string out;
          if (chat && !st->started) {
            out += chunk({{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
          }
          st->started = true;
          std::deque<EngineEvent> evs = p->take(std::chrono::milliseconds(200));
          if (evs.empty() && out.empty()) return true;  // nothing yet: httplib calls again
          for (EngineEvent& ev : evs) {
            if (!ev.text.empty() || !ev.logprobs.empty()) {
              json lp = top_lp >= 0 ? (chat ? chat_logprobs(ev.logprobs) : text_logprobs(ev.logprobs, st->text_offset)) : json(nullptr);
              if (chat) {
                ReplyParts d = st->split.push(ev.text);
                if (!d.reasoning.empty())
                  out += chunk({{"index", 0}, {"delta", {{"reasoning_content", d.reasoning}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
                if (!d.content.empty() || top_lp >= 0)
                  out += chunk({{"index", 0}, {"delta", {{"content", d.content}}}, {"logprobs", lp}, {"finish_reason", nullptr}});
              } else {
                out += chunk({{"index", 0}, {"text", ev.text}, {"logprobs", lp}, {"finish_reason", nullptr}});
              }
              st->text_offset += int64_t(ev.text.size());
            }
            if (ev.finished) {
              if (!ev.error.empty() || ev.cancelled) {
                ApiError e(ev.error.empty() ? 503 : 500, ev.error.empty() ? "the request was cancelled (the server is shutting down)" : "generation failed: " + ev.error);
                out += sse(e.body());
              } else {
                if (chat) {
                  ReplyParts d = st->split.finish();
                  if (!d.reasoning.empty())
                    out += chunk({{"index", 0}, {"delta", {{"reasoning_content", d.reasoning}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
                  if (!d.content.empty())
                    out += chunk({{"index", 0}, {"delta", {{"content", d.content}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
                  out += chunk({{"index", 0}, {"delta", json::object()}, {"logprobs", nullptr}, {"finish_reason", finish_reason(ev.stop_reason)}});
                } else {
                  out += chunk({{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", finish_reason(ev.stop_reason)}});
                }
                if (include_usage) {
                  json u = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                            {"model", model_id}, {"choices", json::array()}, {"usage", usage(ev)}};
                  out += sse(dump(u));
                }
              }
              out += kSseDone;
              st->ended = true;
            }
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            engine.cancel(eid);
            return false;
          }
          if (st->ended) sink.done();
          return true;
        },
        [this, st, eid](bool success) {
          if (!st->ended) {  // the client went away before the end: free the slot
            engine.cancel(eid);
            std::lock_guard<std::mutex> l(counters_mu);
            ++counters.cancelled;
          }
          (void)success;  // (a client may close right after [DONE], before the last empty chunk)
        });
  }

  void models(httplib::Response& res) {
    const int64_t created = now_s();
    json data = json::array();
    data.push_back({{"id", o.model_name}, {"object", "model"}, {"created", created}, {"owned_by", "gemmatune"},
                    {"root", o.model_name}, {"parent", nullptr}, {"max_model_len", engine.options().context}});
    for (const std::string& a : engine.adapter_names())
      data.push_back({{"id", a}, {"object", "model"}, {"created", created}, {"owned_by", "gemmatune"}, {"root", a},
                      {"parent", o.model_name}, {"max_model_len", engine.options().context}});
    res.set_content(dump(json{{"object", "list"}, {"data", data}}), "application/json");
  }

  void load_adapter(const std::string& name, const std::string& dir) {
    GT_CHECK(valid_adapter_name(name), "adapter name '", name, "': use 1-64 characters of A-Z a-z 0-9 . _ - (not starting with '.')");
    auto a = std::make_shared<Adapter>(Adapter::load_peft(dir, model));
    engine.add_adapter(name, std::move(a));
  }

  void adapter_op(const httplib::Request& req, httplib::Response& res, bool load) {
    const AdapterOp op = parse_adapter_op(req.body, load);
    std::lock_guard<std::mutex> l(adapters_mu);
    const std::vector<std::string> names = engine.adapter_names();
    const bool known = std::find(names.begin(), names.end(), op.name) != names.end();
    if (load) {
      if (o.adapter_dir.empty())
        throw ApiError(400, "run-time adapter loading is off: start the server with --adapter-dir DIR", "lora_path");
      if (known) throw ApiError(400, "the adapter '" + op.name + "' is already loaded (unload it first)", "lora_name");
      const std::string dir = o.adapter_dir + "/" + op.dir_name;
      if (!is_directory(dir)) throw ApiError(404, "no adapter folder '" + op.dir_name + "' in the server's adapter directory", "lora_path", "adapter_not_found");
      try {
        load_adapter(op.name, dir);
      } catch (const Error& e) {
        throw ApiError(400, std::string("the adapter '") + op.dir_name + "' cannot be loaded: " + e.what(), "lora_path");
      } catch (const std::invalid_argument& e) {
        throw ApiError(400, std::string("the adapter '") + op.dir_name + "' does not fit the model: " + e.what(), "lora_path");
      }
      res.set_content(dump(json{{"status", "ok"}, {"message", "loaded adapter '" + op.name + "'"}}), "application/json");
    } else {
      if (!engine.remove_adapter(op.name)) throw ApiError(404, "the adapter '" + op.name + "' is not loaded", "lora_name", "adapter_not_found");
      res.set_content(dump(json{{"status", "ok"}, {"message", "unloaded adapter '" + op.name + "'"}}), "application/json");
    }
  }

  // Runs a handler, answering ApiError (and anything unexpected) in OpenAI's error shape.
  httplib::Server::Handler wrap(std::function<void(const httplib::Request&, httplib::Response&)> f) {
    return [this, f = std::move(f)](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_error(res, ApiError(500, std::string("internal error: ") + e.what()));
      }
      count(res.status < 0 ? 200 : res.status);
    };
  }

  void setup() {
    // Each connection holds a worker while it is open (a stream, or keep-alive between requests):
    // enough workers that every client the queue admits, and more, is served.
    const int workers = o.http_threads > 0 ? o.http_threads : std::max<int>(128, int(2 * (engine.options().max_seqs + engine.options().max_queue) + 16));
    http.new_task_queue = [n = workers] {
      return new httplib::ThreadPool(size_t(n));
    };
    http.set_payload_max_length(o.max_body_bytes);
    http.set_keep_alive_max_count(1000);
    http.set_tcp_nodelay(true);
    // Debian's compiled cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG), so a
    // burst of reconnecting clients (after their 429s, say) overflows the accept queue and some
    // connects are reset. Keep httplib's socket options, remember the socket, and raise the
    // backlog after binding (Linux updates it when listen() is called again).
    http.set_socket_options([this](socket_t sock) {
      httplib::default_socket_options(sock);
      listen_fd = int(sock);
    });
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      const bool protected_path = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
      if (!o.api_key.empty() && protected_path && !bearer_matches(req.get_header_value("Authorization"), o.api_key)) {
        send_error(res, ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "", "invalid_api_key"));
        count(401);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // Errors httplib answers itself (413 body too large, 404 no route, 400 bad request line) get
    // OpenAI's error body too.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string msg;
      if (res.status == 413) msg = "the request body is larger than this server's limit of " + std::to_string(o.max_body_bytes) + " bytes";
      else if (res.status == 404) msg = "no endpoint " + req.method + " " + req.path;
      else msg = "HTTP error " + std::to_string(res.status);
      res.set_content(ApiError(res.status, msg).body(), "application/json");
      count(res.status);
    });
    http.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(web_page(), "text/html; charset=utf-8"); });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (stopping) return send_error(res, ApiError(503, "the server is shutting down"));
      res.set_content("{\"status\":\"ok\"}", "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      HttpCounters h;
      {
        std::lock_guard<std::mutex> l(counters_mu);
        h = counters;
      }
      h.adapters = int64_t(engine.adapter_names().size());
      res.set_content(metrics_text(engine.stats(), h), "text/plain; version=0.0.4");
    });
    http.Get("/v1/models", wrap([this](const httplib::Request&, httplib::Response& res) { models(res); }));
    http.Post("/v1/chat/completions", wrap([this](const httplib::Request& q, httplib::Response& s) { generate(q, s, Endpoint::Chat); }));
    http.Post("/v1/completions", wrap([this](const httplib::Request& q, httplib::Response& s) { generate(q, s, Endpoint::Completion); }));
    http.Post("/v1/load_lora_adapter", wrap([this](const httplib::Request& q, httplib::Response& s) { adapter_op(q, s, true); }));
    http.Post("/v1/unload_lora_adapter", wrap([this](const httplib::Request& q, httplib::Response& s) { adapter_op(q, s, false); }));
  }
};

Server::Server(const Model& model, const Tokenizer& tok, const ChatTemplate* tmpl, Engine& engine, ServerOptions o)
    : impl_(std::make_unique<Impl>(model, tok, tmpl, engine, std::move(o))) {}

Server::~Server() { stop(); }

void Server::load_adapter(const std::string& name, const std::string& dir) { impl_->load_adapter(name, dir); }

int Server::bind() {
  const ServerOptions& o = impl_->o;
  int port = o.port;
  if (port == 0) port = impl_->http.bind_to_any_port(o.host);
  else if (!impl_->http.bind_to_port(o.host, port)) port = -1;
  if (port <= 0) fail("serve: cannot listen on ", o.host, ":", o.port, " (address in use, or not an address of this machine?)");
  if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, kListenBacklog);
  impl_->o.port = port;
  return port;
}

void Server::run() {
  if (!impl_->stopping) impl_->http.listen_after_bind();
}

void Server::stop() {
  if (impl_->stopping.exchange(true)) {
    impl_->http.stop();
    return;
  }
  impl_->engine.stop();  // in-flight requests finish as cancelled: their streams end
  impl_->http.stop();
}

bool Server::running() const { return impl_->http.is_running(); }
const ServerOptions& Server::options() const { return impl_->o; }

}  // namespace gt::serve
