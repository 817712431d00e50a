// GET /metrics: the Prometheus text exposition format (version 0.0.4).
#include <cstdio>

#include "gemmatune/serve/server.h"
#include "gemmatune/util/error.h"

namespace gt::serve {

std::string metrics_text(const EngineStats& s, const HttpCounters& h) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    out += str("# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += buf;
    out += "\n";
  };
  metric("gemmatune_requests_total", "counter", "Generation requests accepted by the engine.", double(s.requests_total));
  metric("gemmatune_requests_running", "gauge", "Sequences in the running batch.", double(s.requests_running));
  metric("gemmatune_requests_waiting", "gauge", "Requests queued for admission (queue depth).", double(s.requests_waiting));
  metric("gemmatune_requests_rejected_total", "counter", "Requests refused because the queue was full (429).", double(s.requests_rejected));
  metric("gemmatune_prompt_tokens_total", "counter", "Prompt tokens prefilled.", double(s.prompt_tokens_total));
  metric("gemmatune_generation_tokens_total", "counter", "Tokens generated.", double(s.generated_tokens_total));
  metric("gemmatune_steps_total", "counter", "Scheduler steps (one batched forward each).", double(s.steps_total));
  metric("gemmatune_batch_size", "gauge", "Sequences in the latest scheduler step.", double(s.last_batch_size));
  metric("gemmatune_generation_tokens_per_second", "gauge", "Generated tokens per second over the recent window.", s.tokens_per_second);
  metric("gemmatune_kv_cache_bytes_used", "gauge", "KV-cache bytes held by running sequences.", double(s.kv_bytes_used));
  metric("gemmatune_kv_cache_bytes_budget", "gauge", "KV-cache byte budget.", double(s.kv_bytes_budget));
  metric("gemmatune_kv_cache_usage_ratio", "gauge", "KV-cache use (0-1).",
         s.kv_bytes_budget > 0 ? double(s.kv_bytes_used) / double(s.kv_bytes_budget) : 0.0);
  metric("gemmatune_http_requests_total", "counter", "HTTP requests answered by the API handlers.", double(h.requests));
  metric("gemmatune_http_errors_4xx_total", "counter", "HTTP 4xx answers.", double(h.errors_4xx));
  metric("gemmatune_http_errors_5xx_total", "counter", "HTTP 5xx answers.", double(h.errors_5xx));
  metric("gemmatune_http_rejected_total", "counter", "HTTP 429 answers (queue full).", double(h.rejected_429));
  metric("gemmatune_streams_cancelled_total", "counter", "Streams that ended early (client disconnected).", double(h.cancelled));
  metric("gemmatune_adapters_loaded", "gauge", "LoRA adapters registered.", double(h.adapters));
  return out;
}

}  // namespace gt::serve
