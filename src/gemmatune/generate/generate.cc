#include "gemmatune/generate/generate.h"

#include <algorithm>
#include <chrono>

#include "gemmatune/util/error.h"

namespace gt {

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Length of the longest suffix of `text` that is a proper prefix of some stop string: that much
// must be held back, since the next token may complete the stop string.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& s : stops)
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}
}  // namespace

GenerateResult generate(Decoder& dec, KvCache& cache, const Tokenizer* tok, const std::vector<int32_t>& prompt,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text) {
  GT_CHECK(!prompt.empty(), "generate: the prompt is empty");
  GT_CHECK(opt.prefill_chunk > 0, "generate: prefill chunk must be positive");
  for (const auto& s : opt.stop_strings) GT_CHECK(!s.empty(), "generate: empty stop string");
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

  std::unique_ptr<StreamDecoder> sd;
  if (tok) sd = std::make_unique<StreamDecoder>(*tok, opt.skip_special_tokens);
  std::string pending;  // final text not yet emitted (may be the start of a stop string)
  r.stop_reason = StopReason::MaxTokens;
  auto emit = [&](size_t n) {
    if (n == 0) return;
    std::string piece = pending.substr(0, n);
    pending.erase(0, n);
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
    if (sd) {
      pending += sd->push(next);
      bool stopped = false;
      for (const auto& s : opt.stop_strings) {
        auto at = pending.find(s);
        if (at != std::string::npos) {
          pending.resize(at);
          stopped = true;
        }
      }
      if (stopped) {
        r.stop_reason = StopReason::StopString;
        emit(pending.size());
        break;
      }
      emit(pending.size() - held_back(pending, opt.stop_strings));
    }
    if (step + 1 == opt.max_new_tokens) break;
    if (cache.pos() >= cache.max_context()) {
      r.stop_reason = StopReason::Context;
      break;
    }
    dec.forward({SeqChunk{&cache, &r.tokens.back(), 1}}, LogitsFor::Last, logits);
  }
  if (sd && r.stop_reason != StopReason::StopString) {
    pending += sd->flush();
    emit(pending.size());
  }
  r.decode_seconds = now() - t1;
  return r;
}

}  // namespace gt
