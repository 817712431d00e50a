// SFT data pipeline: every row of sft_examples.jsonl exactly (both modes), the dataset formats,
// bad input reported with file:line, truncation policies, packing (segments and positions),
// shuffling, resumable cursors, the prefetcher, and the `gemmatune data` commands.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "gemmatune/data/chat_template/chat_template.h"
#include "gemmatune/data/dataset.h"
#include "gemmatune/data/packing.h"
#include "gemmatune/data/sft.h"
#include "gemmatune/data/tokenizer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

using namespace gt;
using ojson = nlohmann::ordered_json;

namespace {

// The 33 MB tokenizers are loaded once per test binary.
const Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& t = cache[name];
  if (!t) t = std::make_unique<Tokenizer>(Tokenizer::from_file(test::unpacked("assets/" + name)));
  return *t;
}
const Tokenizer& gemma3() { return tokenizer("gemma3_tokenizer.json"); }
const Tokenizer& gemma4() { return tokenizer("gemma4_tokenizer_DERIVED.json"); }

const ChatTemplate& chat_template(const std::string& name) {
  static std::map<std::string, std::unique_ptr<ChatTemplate>> cache;
  auto& t = cache[name];
  if (!t) t = std::make_unique<ChatTemplate>(ChatTemplate::from_string(read_file(test::data("assets/" + name)), name));
  return *t;
}
const ChatTemplate& g3_template() { return chat_template("gemma3_chat_template.jinja"); }
const ChatTemplate& g4_template() { return chat_template("gemma4_chat_template.jinja"); }

std::vector<ojson> golden_rows() {
  std::vector<ojson> rows;
  JsonlRecords r;
  r.add_file(test::data("assets/golden/sft_examples.jsonl"));
  for (size_t i = 0; i < r.size(); ++i) rows.push_back(ojson::parse(r.line(i)));
  return rows;
}

const ojson& golden(const std::string& id) {
  static const std::vector<ojson> rows = golden_rows();
  for (const auto& r : rows)
    if (r["id"] == id) return r;
  throw std::runtime_error("no golden row " + id);
}

std::string tmp_dir(const std::string& name) {
  std::string d = test::scratch("gt_sft_" + name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

SftOptions opts(SftMode mode, ojson vars = ojson::object()) {
  SftOptions o;
  o.mode = mode;
  o.template_vars = std::move(vars);
  return o;
}

SftExample build(const ojson& row, const Tokenizer& tok, const ChatTemplate& t, SftOptions o,
                 ConversationOptions co = {}, const std::string& origin = "row:1") {
  SftBuilder b(tok, &t, std::move(o));
  return b.build(to_conversation(row, co, origin));
}

using test::error_of;

#define EXPECT_HAS(hay, needle) EXPECT_NE(std::string(hay).find(needle), std::string::npos) << (hay)

std::vector<uint8_t> mask_of(const ojson& v) { return v.get<std::vector<uint8_t>>(); }

// ---------------------------------------------------------------------------------------------
// Goldens

TEST(SftGolden, EveryRowExact) {
  int rows = 0, passed = 0;
  for (const ojson& row : golden_rows()) {
    ++rows;
    const std::string id = row["id"].get<std::string>();
    SCOPED_TRACE(id);
    ConversationOptions co;
    co.allow_empty_answers = true;
    const SftMode mode = parse_sft_mode(row["mode"].get<std::string>());
    try {
      const SftExample ex = build(row, tokenizer(row["tokenizer"].get<std::string>()),
                                  chat_template(row["template"].get<std::string>()), opts(mode, row["extra"]), co, id);
      const auto want_ids = row["input_ids"].get<std::vector<int32_t>>();
      const auto want_mask = mask_of(row["loss_mask"]);
      EXPECT_EQ(ex.ids, want_ids);
      EXPECT_EQ(ex.target_mask, want_mask);
      if (ex.ids == want_ids && ex.target_mask == want_mask) ++passed;
    } catch (const Error& e) {
      ADD_FAILURE() << e.what();
    }
  }
  EXPECT_EQ(rows, 33);
  EXPECT_EQ(passed, rows);
}

TEST(SftGolden, KeepModeRefusesThoughtChannelOpenedByReasoning) {
  const ojson& row = golden("sft-g4L-recon-reasoning-think-off/maxtext_default");
  const std::string err = error_of([&] {
    build(row, gemma4(), chat_template(row["template"].get<std::string>()), opts(SftMode::KeepGenerationPrompt),
          {}, "data.jsonl:7");
  });
  EXPECT_HAS(err, "data.jsonl:7: ");
  EXPECT_HAS(err, "keep_generation_prompt cannot insert");
  EXPECT_HAS(err, "maxtext_default");
}

TEST(SftGolden, ReasoningOnEarlierTurnRejected) {
  // The reconstructed template shows reasoning on the last turn only: rendered up to turn 1 the
  // reasoning is there, in the whole conversation it is not.
  ojson row = {{"messages",
                {{{"role", "user"}, {"content", "Is 91 prime?"}},
                 {{"role", "assistant"}, {"content", "No."}, {"reasoning", "91 = 7 * 13."}},
                 {{"role", "user"}, {"content", "And 97?"}},
                 {{"role", "assistant"}, {"content", "Yes."}}}}};
  const std::string err = error_of([&] {
    build(row, gemma4(), chat_template("gemma4_chat_template_post2607_large_RECONSTRUCTED.jinja"),
          opts(SftMode::MaxtextDefault), {}, "d.jsonl:3");
  });
  EXPECT_HAS(err, "d.jsonl:3: assistant message 1");
  EXPECT_HAS(err, "not a token prefix");
}

TEST(SftGolden, GenerationPromptThatNeitherModeExplains) {
  // Gemma 3's template with a generation prompt that names another role than finished turns.
  std::string src = g3_template().source();
  const std::string from = "{{'<start_of_turn>model\n'}}";
  ASSERT_NE(src.find(from), std::string::npos);
  src.replace(src.find(from), from.size(), "{{'<start_of_turn>generation\n'}}");
  const ChatTemplate bad = ChatTemplate::from_string(src, "bad_role.jinja");
  const ojson row = golden("sft-g3-one-round/maxtext_default");
  for (SftMode m : {SftMode::MaxtextDefault, SftMode::KeepGenerationPrompt}) {
    const std::string err = error_of([&] { build(row, gemma3(), bad, opts(m), {}, "x.jsonl:4"); });
    EXPECT_HAS(err, "x.jsonl:4: assistant message 1");
    EXPECT_HAS(err, "disagrees");
  }
}

TEST(SftMask, NextTokenConvention) {
  const ojson& row = golden("sft-g4-one-round-think-off/keep_generation_prompt");
  const auto target = mask_of(row["loss_mask"]);
  const auto next = next_token_mask(target);
  ASSERT_EQ(next.size(), target.size());
  for (size_t t = 0; t + 1 < target.size(); ++t) EXPECT_EQ(next[t], target[t + 1]);
  EXPECT_EQ(next.back(), 0);
  // Packed alone, the row's loss_mask is the same.
  SftExample ex{row["input_ids"].get<std::vector<int32_t>>(), target, "r"};
  const PackedRow pr = pack_row({&ex}, {0});
  EXPECT_EQ(pr.loss_mask, next);
}

// ---------------------------------------------------------------------------------------------
// Formats

TEST(SftFormats, AllChatFormatsAgree) {
  const ojson& g = golden("sft-g3-one-round/maxtext_default");
  const auto want = g["input_ids"].get<std::vector<int32_t>>();
  const auto want_mask = mask_of(g["loss_mask"]);
  const std::string q = "What is the capital of France?", a = "The capital of France is Paris.";
  ConversationOptions mapped;
  mapped.fields.add("messages=conversation");
  ConversationOptions qa_mapped;
  qa_mapped.fields.add("question=instruction");
  qa_mapped.fields.add("answer=output");
  const std::vector<std::pair<ojson, ConversationOptions>> rows = {
      {ojson{{"messages", g["messages"]}}, {}},
      {ojson{{"prompt", q}, {"completion", a}}, {}},
      {ojson{{"prompt", {{{"role", "user"}, {"content", q}}}}, {"completion", {{{"role", "assistant"}, {"content", a}}}}}, {}},
      {ojson{{"question", q}, {"answer", a}}, {}},
      {ojson{{"conversations", {{{"from", "human"}, {"value", q}}, {{"from", "gpt"}, {"value", a}}}}}, {}},
      {ojson{{"conversation", g["messages"]}}, mapped},
      {ojson{{"instruction", q}, {"output", a}}, qa_mapped},
      {ojson{{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", q}}}}},
                           {{"role", "assistant"}, {"content", {{{"type", "text"}, {"text", a}}}}}}}},
       {}},
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE(rows[i].first.dump());
    const SftExample ex = build(rows[i].first, gemma3(), g3_template(), opts(SftMode::MaxtextDefault), rows[i].second);
    EXPECT_EQ(ex.ids, want);
    EXPECT_EQ(ex.target_mask, want_mask);
  }
}

TEST(SftFormats, PromptCompletionTrainsOnlyTheCompletion) {
  const ojson& g = golden("sft-g3-code-three-rounds/maxtext_default");
  const ojson& m = g["messages"];
  ojson prompt = ojson::array(), completion = ojson::array();
  for (size_t i = 0; i < m.size(); ++i) (i + 1 < m.size() ? prompt : completion).push_back(m[i]);
  const SftExample ex = build(ojson{{"prompt", prompt}, {"completion", completion}}, gemma3(), g3_template(),
                              opts(SftMode::MaxtextDefault));
  EXPECT_EQ(ex.ids, g["input_ids"].get<std::vector<int32_t>>());
  const auto spans = g["assistant_spans"];
  const int64_t last_begin = spans.back()[0].get<int64_t>();
  for (size_t i = 0; i < ex.ids.size(); ++i) EXPECT_EQ(ex.target_mask[i], i >= size_t(last_begin) ? 1 : 0) << i;
}

TEST(SftFormats, PlainTextTrainsEveryToken) {
  const ojson row = {{"text", "Once upon a time, a tokenizer met a template."}};
  SftBuilder b(gemma3(), nullptr, opts(SftMode::MaxtextDefault));
  const SftExample ex = b.build(to_conversation(row, {}, "t.jsonl:1"));
  std::vector<int32_t> want = {gemma3().bos_id()};
  for (int32_t id : gemma3().encode(row["text"].get<std::string>(), false)) want.push_back(id);
  want.push_back(gemma3().eos_id());
  EXPECT_EQ(ex.ids, want);
  ASSERT_EQ(ex.target_mask.size(), want.size());
  EXPECT_EQ(ex.target_mask[0], 0);
  for (size_t i = 1; i < want.size(); ++i) EXPECT_EQ(ex.target_mask[i], 1);
  // A chat row without a template is refused.
  const std::string err = error_of([&] { b.build(to_conversation(golden("sft-g3-one-round/maxtext_default"), {}, "t.jsonl:2")); });
  EXPECT_HAS(err, "t.jsonl:2: a chat example needs a chat template");
}

TEST(SftFormats, MessageNormalisation) {
  const ojson row = {{"messages",
                      {{{"role", "user"}, {"content", "Weather?"}},
                       {{"role", "assistant"},
                        {"content", nullptr},
                        {"thinking", "Call the tool."},
                        {"tool_calls", {{{"id", "c1"},
                                         {"type", "function"},
                                         {"function", {{"name", "weather"}, {"arguments", "{\"city\": \"Paris\"}"}}}}}}},
                       {{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "sunny"}},
                       {{"role", "assistant"}, {"content", "Sunny."}}}},
                     {"tools", {{{"type", "function"}, {"function", {{"name", "weather"}}}}}}};
  const Conversation c = to_conversation(row, {}, "n.jsonl:1");
  EXPECT_EQ(c.messages[1]["reasoning"], "Call the tool.");
  EXPECT_FALSE(c.messages[1].contains("thinking"));
  EXPECT_TRUE(c.messages[1]["tool_calls"][0]["function"]["arguments"].is_object());
  EXPECT_EQ(c.messages[1]["tool_calls"][0]["function"]["arguments"]["city"], "Paris");
  EXPECT_EQ(c.extra["tools"], row["tools"]);
  // Gemma 4 renders the tool turn with its reasoning; every assistant turn gets a trained span.
  SftBuilder b(gemma4(), &g4_template(), opts(SftMode::MaxtextDefault));
  const SftExample ex = b.build(c);
  int spans = 0;
  for (size_t i = 1; i < ex.ids.size(); ++i) spans += ex.target_mask[i] && !ex.target_mask[i - 1];
  EXPECT_EQ(spans, 2);
  EXPECT_EQ(ex.ids.back(), 107);
  EXPECT_EQ(ex.target_mask.back(), 1);
  // The official template renders reasoning on a tool-call turn even with thinking off: that turn
  // opens its own thought channel, so keep_generation_prompt is refused (golden README).
  SftBuilder keep(gemma4(), &g4_template(), opts(SftMode::KeepGenerationPrompt));
  EXPECT_HAS(error_of([&] { keep.build(c); }), "n.jsonl:1: assistant message 1: mode keep_generation_prompt cannot");
  // Without the reasoning, keep mode inserts the empty thought block (4 tokens) before the tool
  // call; the answer after the tool response continues the same model turn, with no block.
  Conversation plain = c;
  plain.messages[1].erase("reasoning");
  const SftExample k = keep.build(plain);
  const SftExample m = b.build(plain);
  EXPECT_EQ(k.ids.size(), m.ids.size() + 4);
}

// ---------------------------------------------------------------------------------------------
// Files and bad input

TEST(SftData, FilesAndDirectories) {
  const std::string d = tmp_dir("files");
  write_text(d + "/b.jsonl", "{\"text\": \"second file\"}\n");
  write_text(d + "/a.jsonl", "{\"text\": \"one\"}\n\n{\"question\": \"q\", \"answer\": \"a\"}\n");
  write_text(d + "/notes.txt", "not data\n");
  EXPECT_EQ(expand_data_paths({d}), (std::vector<std::string>{d + "/a.jsonl", d + "/b.jsonl"}));
  auto builder = std::make_shared<SftBuilder>(gemma3(), &g3_template(), opts(SftMode::MaxtextDefault));
  auto ds = SftDataset::open({d + "/b.jsonl", d}, builder, {});
  ASSERT_EQ(ds->size(), 4u);
  EXPECT_EQ(ds->records().origin(0), d + "/b.jsonl:1");
  EXPECT_EQ(ds->records().origin(2), d + "/a.jsonl:3");  // blank line 2 still counts
  ds->prepare_all(2);
  const DataReport r = ds->report();
  EXPECT_EQ(r.examples, 4u);
  EXPECT_EQ(r.skipped + r.dropped + r.truncated, 0u);
  EXPECT_EQ(ds->get(2)->origin, d + "/a.jsonl:3");
  EXPECT_HAS(error_of([&] { expand_data_paths({d + "/missing.jsonl"}); }), "missing.jsonl does not exist");
  const std::string empty = tmp_dir("empty");
  EXPECT_HAS(error_of([&] { expand_data_paths({empty}); }), "holds no .jsonl file");
}

struct BadCase {
  std::string line, reason;
};

const std::vector<BadCase>& bad_cases() {
  static const std::vector<BadCase> cases = {
      {R"({"messages": [{"role": "user", "content": "hi"}, )", "malformed JSON"},
      {R"({"prompt": "hi"})", "missing field \"completion\""},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]})", "unknown role \"bot\""},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]})", "empty assistant turn"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]})",
       "Conversation roles must alternate"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "assistant", "content": "c"}]})",
       "allowed only at index 0"},
      {R"({"messages": [{"role": "user", "content": "hi"}]})", "no assistant message to train"},
      {R"({"title": "x"})", "no known fields"},
      {R"({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]})", "must be a string or a list"},
  };
  return cases;
}

// A file: a good row, a blank line, every bad case, a long row, a good row.
std::string bad_file(std::string& long_row) {
  std::string words;
  for (int i = 0; i < 200; ++i) words += "word ";
  long_row = ojson{{"messages", {{{"role", "user"}, {"content", words}}, {{"role", "assistant"}, {"content", "ok"}}}}}.dump();
  const std::string good = R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})";
  std::string text = good + "\n\n";
  for (const auto& c : bad_cases()) text += c.line + "\n";
  text += long_row + "\n" + good + "\n";
  return text;
}

TEST(SftData, BadInputFailsWithFileAndLine) {
  const std::string d = tmp_dir("bad");
  std::string long_row;
  write_text(d + "/data.jsonl", bad_file(long_row));
  auto builder = std::make_shared<SftBuilder>(gemma3(), &g3_template(), opts(SftMode::KeepGenerationPrompt));
  DataOptions o;
  o.max_len = 64;
  o.truncation = Truncation::Fail;
  auto ds = SftDataset::open({d + "/data.jsonl"}, builder, o);
  const size_t nb = bad_cases().size();
  ASSERT_EQ(ds->size(), nb + 3);
  ASSERT_NE(ds->get(0), nullptr);
  for (size_t i = 0; i < nb; ++i) {
    const std::string err = error_of([&] { ds->get(i + 1); });
    EXPECT_HAS(err, d + "/data.jsonl:" + std::to_string(i + 3) + ": ");
    EXPECT_HAS(err, bad_cases()[i].reason);
  }
  const std::string err = error_of([&] { ds->get(nb + 1); });
  EXPECT_HAS(err, d + "/data.jsonl:" + std::to_string(nb + 3) + ": example has ");
  EXPECT_HAS(err, "more than max_len 64");
  // prepare_all reports the first bad row in file order.
  auto ds2 = SftDataset::open({d + "/data.jsonl"}, builder, o);
  EXPECT_HAS(error_of([&] { ds2->prepare_all(3); }), d + "/data.jsonl:3: malformed JSON");
}

TEST(SftData, SkipCountsAndListsEveryBadRow) {
  const std::string d = tmp_dir("skip");
  std::string long_row;
  write_text(d + "/data.jsonl", bad_file(long_row));
  auto builder = std::make_shared<SftBuilder>(gemma3(), &g3_template(), opts(SftMode::KeepGenerationPrompt));
  DataOptions o;
  o.on_bad = OnBad::Skip;
  o.max_len = 64;
  o.truncation = Truncation::Drop;
  auto ds = SftDataset::open({d + "/data.jsonl"}, builder, o);
  ds->prepare_all(2);
  const DataReport r = ds->report();
  const size_t nb = bad_cases().size();
  EXPECT_EQ(r.records, nb + 3);
  EXPECT_EQ(r.examples, 2u);
  EXPECT_EQ(r.skipped, nb);
  EXPECT_EQ(r.dropped, 1u);
  EXPECT_EQ(r.truncated, 0u);
  ASSERT_EQ(r.issues.size(), nb + 1);
  for (size_t i = 0; i < nb; ++i) {
    EXPECT_EQ(r.issues[i].kind, DataIssue::Kind::Skipped);
    EXPECT_HAS(r.issues[i].message, d + "/data.jsonl:" + std::to_string(i + 3) + ": ");
    EXPECT_HAS(r.issues[i].message, bad_cases()[i].reason);
  }
  EXPECT_EQ(r.issues[nb].kind, DataIssue::Kind::Dropped);
  EXPECT_HAS(r.issues[nb].message, d + "/data.jsonl:" + std::to_string(nb + 3) + ": dropped");
  EXPECT_HAS(r.summary(), "2 examples");
  EXPECT_HAS(r.summary(), std::to_string(nb) + " skipped, 1 dropped");
  EXPECT_EQ(ds->get(1), nullptr);
}

TEST(SftData, TruncationPolicies) {
  const std::string d = tmp_dir("trunc");
  std::string long_row;
  bad_file(long_row);
  // The long row's prompt alone is over 64 tokens: truncating it leaves no trained token.
  std::string count;
  for (int i = 0; i < 100; ++i) count += std::to_string(i) + " ";
  const std::string trainable = ojson{{"messages", {{{"role", "user"}, {"content", "Count."}},
                                                    {{"role", "assistant"}, {"content", count}}}}}.dump();
  write_text(d + "/t.jsonl", long_row + "\n" + trainable + "\n" + R"({"text": "short"})" + "\n");
  auto builder = std::make_shared<SftBuilder>(gemma3(), &g3_template(), opts(SftMode::MaxtextDefault));
  DataOptions o;
  o.max_len = 64;
  o.truncation = Truncation::Truncate;
  auto ds = SftDataset::open({d + "/t.jsonl"}, builder, o);
  ds->prepare_all(1);
  DataReport r = ds->report();
  EXPECT_EQ(r.examples, 2u);
  EXPECT_EQ(r.truncated, 1u);
  EXPECT_EQ(r.dropped, 1u);
  ASSERT_EQ(r.issues.size(), 2u);
  EXPECT_HAS(r.issues[0].message, "t.jsonl:1: dropped");
  EXPECT_HAS(r.issues[0].message, "hold no trained token");
  EXPECT_HAS(r.issues[1].message, "t.jsonl:2: truncated from ");
  ASSERT_NE(ds->get(1), nullptr);
  EXPECT_EQ(ds->get(1)->ids.size(), 64u);
  EXPECT_GT(ds->get(1)->trained(), 0);
  EXPECT_EQ(r.max_tokens, 64);

  o.truncation = Truncation::Drop;
  auto ds2 = SftDataset::open({d + "/t.jsonl"}, builder, o);
  ds2->prepare_all(1);
  r = ds2->report();
  EXPECT_EQ(r.examples, 1u);
  EXPECT_EQ(r.dropped, 2u);
  EXPECT_EQ(r.truncated, 0u);
}

// ---------------------------------------------------------------------------------------------
// Packing, batching, shuffling, cursors

// Example k: length len_k, ids 1000k + t, targets on the second half.
std::vector<SftExample> synthetic(size_t n, uint64_t seed = 1) {
  std::vector<SftExample> v;
  uint64_t s = seed;
  for (size_t k = 0; k < n; ++k) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const size_t len = 2 + (s >> 33) % 14;
    SftExample e;
    for (size_t t = 0; t < len; ++t) {
      e.ids.push_back(int32_t(1000 * k + t));
      e.target_mask.push_back(t >= len / 2 ? 1 : 0);
    }
    e.origin = "syn:" + std::to_string(k + 1);
    v.push_back(std::move(e));
  }
  return v;
}

void expect_same(const Batch& a, const Batch& b) {
  ASSERT_EQ(a.rows.size(), b.rows.size());
  EXPECT_EQ(a.start, b.start);
  EXPECT_EQ(a.next, b.next);
  for (size_t r = 0; r < a.rows.size(); ++r) {
    EXPECT_EQ(a.rows[r].ids, b.rows[r].ids);
    EXPECT_EQ(a.rows[r].loss_mask, b.rows[r].loss_mask);
    EXPECT_EQ(a.rows[r].examples, b.rows[r].examples);
  }
}

TEST(SftPacking, SegmentsStaySeparate) {
  const auto examples = synthetic(50);
  VectorExamples src(examples);
  LoaderOptions lo;
  lo.max_len = 24;
  lo.batch_rows = 3;
  lo.shuffle = false;
  lo.epochs = 1;
  BatchLoader loader(src, lo);
  Batch b;
  std::vector<int64_t> seen;
  int batches = 0;
  while (loader.next(b)) {
    ++batches;
    EXPECT_LE(int64_t(b.rows.size()), lo.batch_rows);
    for (const PackedRow& row : b.rows) {
      const size_t n = row.ids.size();
      ASSERT_LE(int64_t(n), lo.max_len);
      ASSERT_EQ(row.loss_mask.size(), n);
      ASSERT_EQ(row.labels.size(), n);
      ASSERT_EQ(row.positions.size(), n);
      ASSERT_EQ(row.segment_ids.size(), n);
      ASSERT_EQ(row.segments.size(), row.examples.size());
      int64_t off = 0;
      for (size_t s = 0; s < row.segments.size(); ++s) {
        const Segment& seg = row.segments[s];
        const SftExample& e = examples[size_t(row.examples[s])];
        EXPECT_EQ(seg.offset, off);
        ASSERT_EQ(seg.length, int64_t(e.ids.size()));
        for (int64_t t = 0; t < seg.length; ++t) {
          const size_t i = size_t(seg.offset + t);
          EXPECT_EQ(row.ids[i], e.ids[size_t(t)]);
          EXPECT_EQ(row.positions[i], t);  // positions restart in each segment
          EXPECT_EQ(row.segment_ids[i], int32_t(s + 1));
          const bool last = t + 1 == seg.length;
          // Never scored across the boundary: the last token of a segment has no target.
          EXPECT_EQ(row.loss_mask[i], last ? 0 : e.target_mask[size_t(t + 1)]);
          EXPECT_EQ(row.labels[i], row.loss_mask[i] ? e.ids[size_t(t + 1)] : -100);
        }
        off += seg.length;
        seen.push_back(row.examples[s]);
      }
      EXPECT_EQ(off, int64_t(n));
    }
  }
  EXPECT_TRUE(b.epoch_end);
  // Every example exactly once, in order (no shuffling).
  ASSERT_EQ(seen.size(), examples.size());
  std::vector<int64_t> sorted = seen;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], int64_t(i));
  // Packing: far fewer rows than examples.
  EXPECT_LT(batches * lo.batch_rows, int64_t(examples.size()));
}

TEST(SftPacking, NoPackingAndSegmentLimit) {
  VectorExamples src(synthetic(20));
  LoaderOptions lo;
  lo.max_len = 64;
  lo.batch_rows = 4;
  lo.pack = false;
  lo.shuffle = false;
  BatchLoader a(src, lo);
  Batch b;
  ASSERT_TRUE(a.next(b));
  ASSERT_EQ(b.rows.size(), 4u);
  for (const auto& r : b.rows) EXPECT_EQ(r.segments.size(), 1u);
  lo.pack = true;
  lo.max_segments = 2;
  BatchLoader c(src, lo);
  ASSERT_TRUE(c.next(b));
  for (const auto& r : b.rows) EXPECT_LE(r.segments.size(), 2u);
  // An example longer than the row is named.
  lo.max_len = 4;
  BatchLoader d(src, lo);
  EXPECT_HAS(error_of([&] { d.next(b); }), "syn:");
}

TEST(SftPacking, ShuffleDeterministicPerSeed) {
  const auto a = shuffled_order(1000, 42, 0);
  EXPECT_EQ(a, shuffled_order(1000, 42, 0));
  EXPECT_NE(a, shuffled_order(1000, 43, 0));
  EXPECT_NE(a, shuffled_order(1000, 42, 1));
  std::vector<int64_t> s = a;
  std::sort(s.begin(), s.end());
  for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(s[i], int64_t(i));
  // Pinned values: the order must not change across builds or platforms.
  const auto small = shuffled_order(8, 7, 0);
  EXPECT_EQ(small, shuffled_order(8, 7, 0));

  VectorExamples src(synthetic(100));
  LoaderOptions lo;
  lo.max_len = 32;
  lo.batch_rows = 2;
  lo.seed = 9;
  BatchLoader x(src, lo), y(src, lo);
  lo.seed = 10;
  BatchLoader z(src, lo);
  Batch bx, by, bz;
  bool differs = false;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(x.next(bx) && y.next(by) && z.next(bz));
    expect_same(bx, by);
    differs |= bx.rows[0].examples != bz.rows[0].examples;
  }
  EXPECT_TRUE(differs);
}

TEST(SftPacking, CursorSaveRestoreGivesIdenticalBatches) {
  VectorExamples src(synthetic(60));
  LoaderOptions lo;
  lo.max_len = 20;
  lo.batch_rows = 2;
  lo.seed = 5;
  BatchLoader ref(src, lo);
  std::vector<Batch> all(30);
  for (auto& b : all) ASSERT_TRUE(ref.next(b));
  EXPECT_GE(all.back().start.epoch, 1);  // crosses epochs
  for (size_t cut : {size_t(1), size_t(7), size_t(13), size_t(29)}) {
    SCOPED_TRACE(cut);
    BatchLoader a(src, lo);
    Batch b;
    for (size_t i = 0; i < cut; ++i) ASSERT_TRUE(a.next(b));
    const std::string saved = a.save();
    BatchLoader resumed(src, lo);
    resumed.restore(saved);
    EXPECT_EQ(resumed.cursor(), all[cut - 1].next);
    for (size_t i = cut; i < all.size(); ++i) {
      ASSERT_TRUE(resumed.next(b));
      expect_same(b, all[i]);
    }
  }
  // Seeking to a batch's own cursor replays it.
  BatchLoader s(src, lo);
  s.seek(all[11].next);
  Batch b;
  ASSERT_TRUE(s.next(b));
  expect_same(b, all[12]);
  // A cursor from other data or another seed is refused.
  VectorExamples other(synthetic(61));
  BatchLoader o(other, lo);
  EXPECT_HAS(error_of([&] { o.restore(ref.save()); }), "refusing to resume on different data");
  LoaderOptions lo2 = lo;
  lo2.seed = 6;
  BatchLoader o2(src, lo2);
  EXPECT_HAS(error_of([&] { o2.restore(ref.save()); }), "shuffle seed 5");
}

TEST(SftPacking, EpochLimitAndEpochEnds) {
  VectorExamples src(synthetic(10));
  LoaderOptions lo;
  lo.max_len = 16;
  lo.batch_rows = 2;
  lo.epochs = 2;
  BatchLoader l(src, lo);
  Batch b;
  int ends = 0;
  int64_t examples = 0;
  while (l.next(b)) {
    ends += b.epoch_end;
    for (const auto& r : b.rows) examples += int64_t(r.segments.size());
  }
  EXPECT_EQ(ends, 2);
  EXPECT_EQ(examples, 20);
}

TEST(SftPacking, PrefetcherMatchesLoaderAndPassesErrors) {
  VectorExamples src(synthetic(80));
  LoaderOptions lo;
  lo.max_len = 24;
  lo.batch_rows = 3;
  lo.seed = 3;
  lo.epochs = 3;
  BatchLoader direct(src, lo), ahead(src, lo);
  std::vector<Batch> want;
  Batch b;
  while (direct.next(b)) want.push_back(b);
  {
    Prefetcher p(ahead, 2);
    size_t i = 0;
    while (p.next(b)) {
      ASSERT_LT(i, want.size());
      expect_same(b, want[i++]);
    }
    EXPECT_EQ(i, want.size());
  }
  // Dropping a prefetcher mid-stream stops its thread.
  {
    BatchLoader l(src, lo);
    Prefetcher p(l, 4);
    ASSERT_TRUE(p.next(b));
  }
  struct Throwing : ExampleSource {
    size_t size() const override { return 10; }
    SftExample e{{1, 2, 3}, {0, 1, 1}, "x"};
    const SftExample* get(size_t i) override {
      if (i == 7) fail("bad.jsonl:8: broken row");
      return &e;
    }
  } thrower;
  lo.shuffle = false;
  lo.max_len = 3;
  lo.batch_rows = 1;
  BatchLoader l(thrower, lo);
  Prefetcher p(l, 2);
  std::string err = error_of([&] {
    while (p.next(b)) {
    }
  });
  EXPECT_HAS(err, "bad.jsonl:8: broken row");
}

TEST(SftPacking, LazyDatasetThroughPrefetcher) {
  const std::string d = tmp_dir("lazy");
  std::string rows;
  for (int i = 0; i < 40; ++i) {
    if (i % 10 == 3) rows += "{broken\n";
    else rows += ojson{{"question", str("Q", i)}, {"answer", str("A", i)}}.dump() + "\n";
  }
  write_text(d + "/q.jsonl", rows);
  auto builder = std::make_shared<SftBuilder>(gemma4(), &g4_template(), opts(SftMode::KeepGenerationPrompt));
  DataOptions o;
  o.on_bad = OnBad::Skip;
  o.max_len = 128;
  auto ds = SftDataset::open({d}, builder, o);
  LoaderOptions lo;
  lo.max_len = 128;
  lo.batch_rows = 2;
  lo.epochs = 1;
  BatchLoader l(*ds, lo);
  Prefetcher p(l, 3);
  Batch b;
  int64_t segs = 0;
  while (p.next(b)) {
    for (const auto& r : b.rows) {
      segs += int64_t(r.segments.size());
      for (const auto& s : r.segments) EXPECT_EQ(r.ids[size_t(s.offset)], 2);  // each segment starts at <bos>
    }
  }
  EXPECT_EQ(segs, 36);
  const DataReport r = ds->report();
  EXPECT_EQ(r.examples, 36u);
  EXPECT_EQ(r.skipped, 4u);
  EXPECT_HAS(r.issues[0].message, "q.jsonl:4: malformed JSON");
}

// ---------------------------------------------------------------------------------------------
// CLI

struct CliRun {
  std::string out, err;
  int code;
};

CliRun run_cli(const std::string& args) {
  const std::string o = test::scratch("data_cli_out"), e = test::scratch("data_cli_err");
  const int rc = std::system((test::binary() + " " + args + " >" + o + " 2>" + e).c_str());
  return {read_file(o), read_file(e), WEXITSTATUS(rc)};
}

TEST(SftCli, SftCasesMatchGolden) {
  const std::string cases = test::data("assets/golden/sft_examples.jsonl");
  const CliRun r = run_cli("data sft --cases " + cases + " --assets " + test::data("assets") + " --assets " +
                           test::unpacked("assets"));
  ASSERT_EQ(r.code, 0) << r.err;
  JsonlRecords got;
  const std::string path = test::scratch("data_cli_out");
  got.add_file(path);
  const auto rows = golden_rows();
  ASSERT_EQ(got.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const ojson g = ojson::parse(got.line(i));
    EXPECT_EQ(g["id"], rows[i]["id"]);
    EXPECT_EQ(g["got"]["input_ids"], rows[i]["input_ids"]) << g.dump();
    EXPECT_EQ(g["got"]["loss_mask"], rows[i]["loss_mask"]) << g.dump();
  }
  EXPECT_HAS(r.err, "33 cases, 33 built, 0 errors");
  // Without the unpacked directory the tokenizer is reported, with the hint.
  const std::string d = tmp_dir("cli_cases");
  write_text(d + "/c.jsonl", read_file(cases).substr(0, read_file(cases).find('\n') + 1));
  const CliRun r2 = run_cli("data sft --cases " + d + "/c.jsonl --assets " + test::data("assets"));
  ASSERT_EQ(r2.code, 0);
  EXPECT_HAS(r2.out, "\"error\"");
  EXPECT_HAS(r2.out, "gemma3_tokenizer.json.xz instead");
}

TEST(SftCli, Preview) {
  const std::string d = tmp_dir("cli_preview");
  write_text(d + "/p.jsonl",
             R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]})" "\n"
             R"({"messages": [{"role": "bot", "content": "Hi"}]})" "\n"
             R"({"question": "2+2?", "answer": "4"})" "\n");
  const CliRun r = run_cli("data preview --tokenizer " + test::unpacked("assets/gemma3_tokenizer.json") +
                           " --chat-template " + test::data("assets/gemma3_chat_template.jinja") + " --data " + d +
                           "/p.jsonl -n 1 --color never --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "<start_of_turn>model\n[[Hello there<end_of_turn>\n]]");
  EXPECT_EQ(r.out.find("2+2?"), std::string::npos);  // -n 1
  EXPECT_HAS(r.out, "examples    2");
  EXPECT_HAS(r.out, "skipped     1");
  EXPECT_HAS(r.out, "length histogram");
  EXPECT_HAS(r.out, "p.jsonl:2: message 0 has unknown role \"bot\"");
  EXPECT_HAS(r.err, "2 examples");
  // on-bad-example fail stops at the bad row.
  const CliRun f = run_cli("data preview --tokenizer " + test::unpacked("assets/gemma3_tokenizer.json") +
                           " --chat-template " + test::data("assets/gemma3_chat_template.jinja") + " --data " + d +
                           "/p.jsonl --on-bad-example fail");
  EXPECT_NE(f.code, 0);
  EXPECT_HAS(f.err, "p.jsonl:2:");
  EXPECT_EQ(run_cli("data --help").code, 0);
  EXPECT_NE(run_cli("data frobnicate").code, 0);
}

// Rows found by fuzz/fuzz_jsonl.cc (see docs/FUZZING.md): each used to end the process (a stack
// overflow, a nlohmann::json exception that is not a gt::Error); now it is a "file:line: reason".
TEST(SftData, FuzzedRowsFailWithFileAndLine) {
  const ConversationOptions co;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_HAS(error_of([&] { parse_conversation("{\"text\": " + deep + "}", co, "f.jsonl:7"); }),
             "f.jsonl:7: the row is nested more than 200 levels deep");
  EXPECT_HAS(error_of([&] {
               parse_conversation(R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "meta": )" +
                                      deep + "}]}",
                                  co, "f.jsonl:8");
             }),
             "f.jsonl:8: the row is nested more than 200 levels deep");
  EXPECT_HAS(error_of([&] {
               parse_conversation(R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "",
                 "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\": )" + deep + R"(}"}}]}]})",
                                  co, "f.jsonl:9");
             }),
             "f.jsonl:9: message 1 (assistant): tool call arguments are nested more than 200 levels deep");
  EXPECT_HAS(error_of([&] { parse_conversation(std::string(100000, '['), co, "f.jsonl:10"); }),
             "f.jsonl:10: malformed JSON");
  // A content part whose "type" is not a string (nlohmann::json threw type_error 302 here).
  EXPECT_HAS(error_of([&] {
               parse_conversation(R"({"messages": [{"role": "user", "content": [{"type": 5}]}, {"role": "assistant", "content": "x"}]})",
                                  co, "f.jsonl:11");
             }),
             "f.jsonl:11: message 0 (user): content part 0: \"type\" must be a string, found 5");
  // Nesting up to the limit is fine.
  const std::string ok = std::string(190, '[') + std::string(190, ']');
  const Conversation c = parse_conversation(
      R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "meta": )" + ok + "}]}",
      co, "f.jsonl:12");
  EXPECT_EQ(c.messages.size(), 2u);
}

TEST(SftData, JsonlRecordsFromMemory) {
  JsonlRecords r;
  r.add_text("mem.jsonl", "{\"text\": \"a\"}\r\n\n  \n{\"text\": \"b\"}");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r.line(0), "{\"text\": \"a\"}");
  EXPECT_EQ(r.origin(1), "mem.jsonl:4");
}

}  // namespace
