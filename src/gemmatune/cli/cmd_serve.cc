// gemmatune serve: the OpenAI-compatible HTTP server (serve/server.h) over the continuous-batching
// engine (generate/engine.h), with LoRA adapters chosen per request.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <thread>

#include "gemmatune/cli/args.h"
#include "gemmatune/cli/commands.h"
#include "gemmatune/cli/common.h"
#include "gemmatune/model/model_files.h"
#include "gemmatune/model/plan.h"
#include "gemmatune/serve/server.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"

namespace gt::cli {
namespace {

// SIGINT/SIGTERM: the handler only writes a byte into a pipe (async-signal-safe); a thread reads it
// and stops the server (the engine cancels in-flight requests, then the socket closes).
int g_signal_pipe[2] = {-1, -1};
extern "C" void on_signal(int) {
  const char c = 's';
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &c, 1);
}

bool loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

int run(int argc, char** argv) {
  Args a("serve", "OpenAI-compatible HTTP server with continuous batching and per-request LoRA adapters.", argc, argv);
  const std::string model_dir = a.required("model", "Hugging Face model folder (with tokenizer.json; a chat template for /v1/chat/completions) or GGUF file");
  const std::vector<std::string> adapters = a.all("adapter", "NAME=DIR: a PEFT adapter served as model NAME (repeatable)");
  const std::string adapter_dir = a.str("adapter-dir", "", "POST /v1/load_lora_adapter loads adapters from the folders directly inside DIR (and nowhere else)");
  serve::ServerOptions so;
  so.host = a.str("host", "127.0.0.1", "address to listen on (non-loopback without --api-key: a warning)");
  so.port = int(a.integer("port", 8080, "TCP port (0: any free port)"));
  so.api_key = a.str("api-key", "", "require 'Authorization: Bearer KEY' on /v1/* and /metrics (env GEMMATUNE_API_KEY)");
  so.model_name = a.str("served-model-name", "", "the base model's id in the API (default: the model folder's name)");
  so.max_body_bytes = size_t(a.integer("max-body-bytes", 4 << 20, "largest request body (larger: 413)"));
  so.http_threads = int(a.integer("http-threads", 0, "HTTP connections served at once (0: max(128, 2 (max-seqs + max-queue) + 16))"));
  EngineOptions eo;
  eo.max_seqs = a.integer("max-seqs", 8, "sequences batched together at most");
  eo.context = a.integer("ctx", 4096, "context per sequence in tokens (prompt + completion; max_tokens is clamped to it)");
  eo.max_queue = a.integer("max-queue", 64, "requests waiting beyond the running ones (more: 429)");
  eo.prefill_chunk = a.integer("prefill-chunk", 256, "prompt tokens of one sequence per scheduler step");
  const int64_t kv_mib = a.integer("kv-budget-mib", 0, "KV-cache budget in MiB (0: max-seqs full contexts)");
  const int threads = threads_option(a);
  if (a.finish()) return 0;
  apply_threads(threads);
  if (so.api_key.empty())
    if (const char* k = std::getenv("GEMMATUNE_API_KEY")) so.api_key = k;
  GT_CHECK(so.port >= 0 && so.port <= 65535, "serve: --port must be 0-65535, got ", so.port);
  GT_CHECK(eo.max_seqs >= 1 && eo.max_seqs <= 1024, "serve: --max-seqs must be 1-1024, got ", eo.max_seqs);
  GT_CHECK(eo.context >= 16, "serve: --ctx must be at least 16, got ", eo.context);
  GT_CHECK(eo.max_queue >= 0, "serve: --max-queue must be >= 0, got ", eo.max_queue);
  GT_CHECK(eo.prefill_chunk >= 1, "serve: --prefill-chunk must be >= 1, got ", eo.prefill_chunk);
  GT_CHECK(kv_mib >= 0, "serve: --kv-budget-mib must be >= 0");
  eo.kv_budget_bytes = kv_mib << 20;
  if (!adapter_dir.empty()) GT_CHECK(is_directory(adapter_dir), "serve: --adapter-dir ", adapter_dir, " is not a folder");
  so.adapter_dir = adapter_dir;

  Model model = Model::load(model_dir);
  auto tok = load_model_tokenizer(model_dir);
  if (!tok) fail("serve: ", model_dir, " has no tokenizer.json");
  std::unique_ptr<ChatTemplate> tmpl;
  try {
    tmpl = std::make_unique<ChatTemplate>(open_model_chat_template(model_dir));
  } catch (const Error& e) {
    std::fprintf(stderr, "serve: no chat template (%s): /v1/chat/completions is off\n", e.what());
  }
  PlanInput pin;
  pin.context = eo.context;
  pin.batch = eo.max_seqs;
  pin.chunk = eo.prefill_chunk;
  check_fits(plan_memory(model, pin), "serve");

  Engine engine(model, tok.get(), eo);
  serve::Server server(model, *tok, tmpl.get(), engine, so);
  std::vector<std::string> loaded;
  for (const std::string& spec : adapters) {
    const size_t eq = spec.find('=');
    GT_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(), "serve: --adapter wants NAME=DIR, got '", spec, "'");
    server.load_adapter(spec.substr(0, eq), spec.substr(eq + 1));
    loaded.push_back(spec.substr(0, eq) + " (" + spec.substr(eq + 1) + ")");
  }
  GT_CHECK(::pipe(g_signal_pipe) == 0, "serve: pipe() failed");
  ::fcntl(g_signal_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  std::thread watcher([&] {
    char c = 0;
    while (::read(g_signal_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    if (c == 's') {
      std::fprintf(stderr, "gemmatune serve: stopping (cancelling in-flight requests)\n");
      server.stop();
    }
  });
  int port = 0;
  try {
    port = server.bind();
  } catch (...) {
    const char q = 'q';
    [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &q, 1);
    watcher.join();
    throw;
  }
  const serve::ServerOptions& o = server.options();
  std::printf("gemmatune serve: listening on http://%s:%d (model '%s', %lld sequences x %lld tokens, queue %lld)\n",
              o.host.c_str(), port, o.model_name.c_str(), (long long)eo.max_seqs, (long long)eo.context, (long long)eo.max_queue);
  if (loaded.empty()) std::printf("adapters: none\n");
  for (const std::string& l : loaded) std::printf("adapter: %s\n", l.c_str());
  if (!adapter_dir.empty()) std::printf("run-time adapter loading from %s\n", adapter_dir.c_str());
  std::printf("chat page: http://%s:%d/   API: http://%s:%d/v1   metrics: /metrics\n", o.host.c_str(), port, o.host.c_str(), port);
  if (!loopback(o.host) && o.api_key.empty())
    std::fprintf(stderr, "WARNING: listening on %s without --api-key: anyone who can reach this address can use the model\n", o.host.c_str());
  std::fflush(stdout);

  server.run();
  // run() also returns when listening fails; wake the watcher either way.
  const char q = 'q';
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &q, 1);
  watcher.join();
  server.stop();
  std::fprintf(stderr, "gemmatune serve: stopped\n");
  return 0;
}
Command reg("serve", "OpenAI-compatible HTTP server: continuous batching, LoRA adapters per request, chat page", run);
}  // namespace
}  // namespace gt::cli
