// The generation loop: chunked prefill, then one token per step through the KV cache, sampling,
// stop tokens and stop strings, text streamed as it becomes final.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gemmatune/data/tokenizer.h"
#include "gemmatune/generate/sampler.h"
#include "gemmatune/model/decoder.h"
#include "gemmatune/util/enum_names.h"

namespace gt {

enum class StopReason { Eos, StopString, MaxTokens, Context };
inline constexpr std::array<EnumName<StopReason>, 4> kStopReasonNames = {{{StopReason::Eos, "eos"},
                                                                          {StopReason::StopString, "stop_string"},
                                                                          {StopReason::MaxTokens, "max_tokens"},
                                                                          {StopReason::Context, "context"}}};
inline std::string_view stop_reason_name(StopReason r) { return enum_name(kStopReasonNames, r); }

struct GenerateOptions {
  SamplingParams sampling;
  int64_t max_new_tokens = 128;
  std::vector<int32_t> stop_ids;          // e.g. the config's eos ids
  std::vector<std::string> stop_strings;  // generation ends when the text contains one (it is not emitted)
  int64_t prefill_chunk = 512;            // prompt tokens per forward during prefill
  bool skip_special_tokens = true;        // in the streamed text
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the stop token excluded)
  std::string text;             // streamed text (stop string excluded)
  StopReason stop_reason = StopReason::MaxTokens;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Generates a continuation of `prompt` (token ids) into `cache` (which must be empty or hold a
// prefix of the prompt's context). `on_text` receives text pieces as they become final.
GenerateResult generate(Decoder& dec, KvCache& cache, const Tokenizer* tok, const std::vector<int32_t>& prompt,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text);

}  // namespace gt
