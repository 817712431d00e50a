#include "gemmatune/generate/generate.h"

#include <algorithm>
#include <chrono>

#include "gemmatune/generate/text_stream.h"
#include "gemmatune/util/error.h"

namespace gt {

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

GenerateResult generate(Decoder& dec, KvCache& cache, const Tokenizer* tok, const std::vector<int32_t>& prompt,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text) {
  GT_CHECK(!prompt.empty(), "generate: the prompt is empty");
  GT_CHECK(opt.prefill_chunk > 0, "generate: prefill chunk must be positive");
  GenerateResult r;
  r.prompt_tokens = int64_t(prompt.size());
  Sampler sampler(opt.sampling);
  const int64_t V = dec.model().vocab_rows();
  std::vector<float> logits;
  std::vector<int32_t> history = prompt;

  const double t0 = now();
  for (size_t s = 0; s < prompt.size(); s += size_t(opt.prefill_chunk)) {
    const int64_t n = std::min<int64_t>(opt.prefill_chunk, int64_t(prompt.size() - s));
    const bool last = s + size_t(n) == prompt.size();
    dec.forward({SeqChunk{&cache, prompt.data() + s, n}}, last ? LogitsFor::Last : LogitsFor::None, logits);
  }
  const double t1 = now();
  r.prefill_seconds = t1 - t0;

  StopTextStream text(tok, opt.skip_special_tokens, opt.stop_strings);
  r.stop_reason = StopReason::MaxTokens;
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return;
    r.text += piece;
    if (on_text) on_text(piece);
  };
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    const int32_t next = sampler.sample(logits.data(), V, history);
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) {
      r.stop_reason = StopReason::Eos;
      break;
    }
    r.tokens.push_back(next);
    history.push_back(next);
    emit(text.push(next));
    if (text.stopped()) {
      r.stop_reason = StopReason::StopString;
      break;
    }
    if (step + 1 == opt.max_new_tokens) break;
    if (cache.pos() >= cache.max_context()) {
      r.stop_reason = StopReason::Context;
      break;
    }
    dec.forward({SeqChunk{&cache, &r.tokens.back(), 1}}, LogitsFor::Last, logits);
  }
  emit(text.flush());
  if (text.stopped()) r.stop_reason = StopReason::StopString;
  r.decode_seconds = now() - t1;
  return r;
}

}  // namespace gt
