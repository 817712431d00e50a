// SFT examples: a Conversation -> token ids + a per-token target mask, exactly as
// tests/data/assets/golden/README.md ("sft_examples.jsonl") defines them, and a dataset of them
// that prepares examples on demand (or all at once, on several threads) with every bad row,
// drop and truncation counted and listed.
//
// How a chat example is built (token ids only; text is never decoded and re-encoded):
//   R = ids(render(messages, add_generation_prompt=false))      the whole conversation, once
//   for each trained assistant message k:
//     P = ids(render(messages[:k],   add_generation_prompt=true))   what inference sends
//     F = ids(render(messages[:k+1], add_generation_prompt=false))  history + the finished turn
//     F must be a token prefix of R; L = longest common token prefix of P and F;
//     the turn's trained tokens are R[L, |F|); G = P[L:] is what the generation prompt adds.
//   mode maxtext_default: ids = R (prompt + completion == the finished render, MaxText #5013).
//   mode keep_generation_prompt: G is inserted, untrained, right before each turn's trained
//     tokens, so the input matches what inference sends (e.g. Gemma 4's empty thought block).
// Consistency check, when G is not empty: the turn header the template writes for a finished
// turn (found by rendering the history plus a probe answer) must begin the generation prompt and
// end exactly where L falls; otherwise the generation prompt disagrees with finished turns in a
// way neither mode explains (an error in both modes). If instead the finished turn shares part of
// G's block (a thought channel opened by a `reasoning` field while thinking is off), only
// keep_generation_prompt is refused: inserting G there would corrupt the channel (MaxText #4010).
//
// A text example ({"text": ...}, continued pretraining) is <bos> + ids(text) + <eos>, every token
// after the first a target.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/util/enum_names.h"
#include "gemmatune/data/dataset.h"

namespace gt {

class Tokenizer;
class ChatTemplate;

enum class SftMode { MaxtextDefault, KeepGenerationPrompt };
inline constexpr std::array<EnumName<SftMode>, 2> kSftModeNames = {
    {{SftMode::KeepGenerationPrompt, "keep_generation_prompt"}, {SftMode::MaxtextDefault, "maxtext_default"}}};
// "keep_generation_prompt" | "maxtext_default"; throws on anything else (naming the allowed values).
SftMode parse_sft_mode(const std::string& name);
const char* sft_mode_name(SftMode m);

struct SftOptions {
  // Default: the input matches the prompt gemmatune's own generate/serve send (which render with
  // add_generation_prompt=true).
  SftMode mode = SftMode::KeepGenerationPrompt;
  // Template variables passed to every render (e.g. {"enable_thinking": true}); a row's own
  // variables (its "tools") are merged over these.
  nlohmann::ordered_json template_vars = nlohmann::ordered_json::object();
  std::string bos_token = "<bos>";
  std::string eos_token = "<eos>";
  bool text_add_bos = true;  // text examples: prepend the tokenizer's <bos>
  bool text_add_eos = true;  // text examples: append the tokenizer's <eos>
};

// Sets opt.bos_token / eos_token: from <model_dir>/tokenizer_config.json ("bos_token",
// "eos_token": a string or {"content": ...}) when model_dir has one, else the tokenizer's <bos> /
// <eos> token texts, else they stay as they are.
void set_special_tokens(const Tokenizer& tok, const std::string& model_dir, SftOptions& opt);

// One training example.
//   target_mask[i] == 1: ids[i] is a training target, i.e. the loss has a term
//   -log p(ids[i] | ids[:i]) (the golden files' "loss_mask" convention; target_mask[0] is 0).
// The model's convention (logits at t scored against ids[t+1]) is next_token_mask() below; a
// packed Batch (packing.h) carries that one.
struct SftExample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> target_mask;
  std::string origin;  // "file:line"
  int64_t trained() const;
};

// Model convention: out[t] = target_mask[t+1], out[last] = 0.
std::vector<uint8_t> next_token_mask(const std::vector<uint8_t>& target_mask);

class SftBuilder {
 public:
  // Keeps references to tok and tmpl (which must outlive the builder). tmpl may be null for
  // text-only data (a chat row then fails). build() is thread-safe.
  SftBuilder(const Tokenizer& tok, const ChatTemplate* tmpl, SftOptions opt);
  // Throws gt::Error("<origin>: <reason>") (template errors included) on failure.
  SftExample build(const Conversation& c) const;
  const SftOptions& options() const { return opt_; }
  const Tokenizer& tokenizer() const { return tok_; }

 private:
  const Tokenizer& tok_;
  const ChatTemplate* tmpl_;
  SftOptions opt_;
  // Verdicts of the turn-header probe, keyed by (inserted tokens, -1, up to 16 tokens before them).
  mutable std::mutex probe_mu_;
  mutable std::map<std::vector<int32_t>, int> probe_cache_;
  SftExample build_chat(const Conversation& c) const;
  SftExample build_text(const Conversation& c) const;
};

// Where examples come from for batching: indexed, possibly lazily prepared.
class ExampleSource {
 public:
  virtual ~ExampleSource() = default;
  virtual size_t size() const = 0;
  // Example i, or nullptr when it was skipped or dropped (the source records why). May throw.
  virtual const SftExample* get(size_t i) = 0;
};

// Examples already in memory.
class VectorExamples : public ExampleSource {
 public:
  explicit VectorExamples(std::vector<SftExample> v) : v_(std::move(v)) {}
  size_t size() const override { return v_.size(); }
  const SftExample* get(size_t i) override { return &v_.at(i); }

 private:
  std::vector<SftExample> v_;
};

enum class OnBad { Fail, Skip };
inline constexpr std::array<EnumName<OnBad>, 2> kOnBadNames = {{{OnBad::Fail, "fail"}, {OnBad::Skip, "skip"}}};
OnBad parse_on_bad(const std::string& name);
// What to do with an example longer than max_len tokens:
//   drop: leave it out (counted and listed); truncate: keep its first max_len tokens (counted and
//   listed; dropped if no trained token is left); fail: a bad example (on_bad decides).
enum class Truncation { Drop, Truncate, Fail };
inline constexpr std::array<EnumName<Truncation>, 3> kTruncationNames = {
    {{Truncation::Drop, "drop"}, {Truncation::Truncate, "truncate"}, {Truncation::Fail, "fail"}}};
Truncation parse_truncation(const std::string& name);

struct DataOptions {
  ConversationOptions conv;
  int64_t max_len = 0;  // 0: no limit
  Truncation truncation = Truncation::Drop;
  OnBad on_bad = OnBad::Fail;
};

struct DataIssue {
  enum class Kind { Skipped, Dropped, Truncated };
  Kind kind;
  size_t index;
  std::string message;  // "file:line: reason"
};

struct DataReport {
  size_t records = 0;   // non-blank lines
  size_t prepared = 0;  // records looked at so far
  size_t examples = 0;  // usable examples (truncated ones included)
  size_t skipped = 0, dropped = 0, truncated = 0;
  int64_t tokens = 0, trained_tokens = 0, max_tokens = 0;
  std::vector<DataIssue> issues;          // in record order
  std::map<int64_t, int64_t> length_hist;  // upper bound (power of two) -> examples with length <= it
  // "N examples, T tokens (x% trained), S skipped, D dropped (too long), U truncated"
  std::string summary() const;
};

// The records of JSONL files turned into SftExamples on first use (get) or all at once
// (prepare_all). get() may run on a prefetching thread while report() is read elsewhere.
class SftDataset : public ExampleSource {
 public:
  SftDataset(JsonlRecords records, std::shared_ptr<const SftBuilder> builder, DataOptions opt);
  // Reads the files named by paths (files or directories, see expand_data_paths).
  static std::unique_ptr<SftDataset> open(const std::vector<std::string>& paths,
                                          std::shared_ptr<const SftBuilder> builder, DataOptions opt);

  size_t size() const override { return records_.size(); }
  // Throws the example's error when on_bad is fail.
  const SftExample* get(size_t i) override;
  // Prepares every record on `threads` threads (0: hardware concurrency). With on_bad = fail,
  // throws the error of the first bad record (in file order). `progress(done, total)`, when
  // given, is called from the calling thread about every 1000 records and at the end.
  void prepare_all(int threads = 1, const std::function<void(size_t, size_t)>& progress = nullptr);
  DataReport report() const;
  const JsonlRecords& records() const { return records_; }
  const DataOptions& options() const { return opt_; }

 private:
  enum State : uint8_t { Pending, Ok, Truncated, Dropped, Skipped, Failed };
  struct Outcome {
    State state;
    SftExample ex;
    std::string message;
  };
  Outcome prepare(size_t i) const;
  void store(size_t i, Outcome&& o);

  JsonlRecords records_;
  std::shared_ptr<const SftBuilder> builder_;
  DataOptions opt_;
  mutable std::mutex mu_;
  std::vector<uint8_t> state_;
  std::vector<SftExample> examples_;
  std::map<size_t, std::string> messages_;
};

}  // namespace gt
