// `gemmatune serve`: the OpenAI-compatible HTTP server over the continuous-batching engine
// (generate/engine.h). Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
// GET /health, GET /metrics, POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter, and the
// chat page at /. HTTP is Debian's cpp-httplib; request parsing is serve/api.h (pure functions).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/generate/engine.h"
#include "gemmatune/model/model.h"
#include "gemmatune/serve/api.h"

namespace gt::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        // 0: any free port (bind() returns it)
  std::string api_key;                    // "": no authentication
  std::string model_name;                 // the base model's id in /v1/models ("" = the folder's name)
  std::string adapter_dir;                // load_lora_adapter loads only from here ("" = run-time loading off)
  size_t max_body_bytes = 4u << 20;       // larger bodies get 413
  int http_threads = 0;                   // connections served at once (0: max(128, 2 (max_seqs + max_queue) + 16))
  ApiLimits limits;
};

class Server {
 public:
  // `model`, `tok`, `tmpl` (null: no chat endpoint) and `engine` must outlive the server.
  Server(const Model& model, const Tokenizer& tok, const ChatTemplate* tmpl, Engine& engine, ServerOptions o);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads a PEFT adapter folder and registers it under `name` (gt::Error on a bad folder or name).
  void load_adapter(const std::string& name, const std::string& dir);

  // Binds the socket; returns the port (the chosen one when the options say 0). Throws gt::Error.
  int bind();
  // Serves until stop() (call bind() first). Returns when the server has stopped.
  void run();
  // Stops: the engine cancels what is in flight (streams end), then the socket closes. Any thread.
  void stop();
  bool running() const;
  const ServerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The Prometheus text exposition of the engine's statistics and the server's own counters.
struct HttpCounters {
  int64_t requests = 0, errors_4xx = 0, errors_5xx = 0, rejected_429 = 0, cancelled = 0, adapters = 0;
};
std::string metrics_text(const EngineStats& s, const HttpCounters& h);

// The embedded chat page served at / (web_page.cc).
const std::string& web_page();

}  // namespace gt::serve
