#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/data/tokenizer.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

using namespace gt;
using nlohmann::json;

namespace {

// The 33 MB tokenizers are loaded once per test binary.
const Tokenizer& gemma3() {
  static const Tokenizer t = Tokenizer::from_file(test::unpacked("assets/gemma3_tokenizer.json"));
  return t;
}
const Tokenizer& gemma4() {
  static const Tokenizer t = Tokenizer::from_file(test::unpacked("assets/gemma4_tokenizer_DERIVED.json"));
  return t;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::string body = read_file(path);
  std::vector<json> rows;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t nl = body.find('\n', pos);
    if (nl == std::string::npos) nl = body.size();
    if (nl > pos) rows.push_back(json::parse(body.begin() + long(pos), body.begin() + long(nl)));
    pos = nl + 1;
  }
  return rows;
}

std::string show(const std::vector<int32_t>& v) { return json(v).dump(); }

std::string tmp_path(const std::string& name) { return test::scratch(name); }

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

void expect_load_error(const std::string& path, const std::string& needle) {
  try {
    Tokenizer::from_file(path);
    ADD_FAILURE() << "expected an error containing '" << needle << "' for " << path;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << "error must name the file: " << msg;
  }
}

// A tiny tokenizer.json in Gemma's shape, for the edge cases.
std::string tiny_json(const std::string& model_type = "BPE", const std::string& extra_added = "") {
  return R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<eos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "<bos>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 3, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})" +
         extra_added + R"(
  ],
  "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
  "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                               {"type": "ByteFallback"}, {"type": "Fuse"}]},
  "model": {"type": ")" +
         model_type + R"(", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
    "vocab": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "a": 4, "b": 5, "\u2581": 6, "ab": 7, "\u2581ab": 8,
              "<0x41>": 9, "<0xE2>": 10, "<0x82>": 11, "<0xAC>": 12, "c": 13, "abc": 14, "bc": 15},
    "merges": [["a", "b"], ["\u2581", "ab"], ["b", "c"], ["ab", "c"]]}
})";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Goldens: every row, exact comparison.
// ---------------------------------------------------------------------------------------------

void run_tokenize_golden(const Tokenizer& tok, const std::string& file, size_t expected_rows) {
  std::vector<json> rows = read_jsonl(test::data("assets/golden/" + file));
  ASSERT_EQ(rows.size(), expected_rows) << file;
  size_t pass = 0;
  std::vector<std::string> failed;
  for (const json& r : rows) {
    std::vector<int32_t> want = r.at("ids").get<std::vector<int32_t>>();
    bool add = r.contains("add_special_tokens") ? r["add_special_tokens"].get<bool>() : false;
    std::vector<int32_t> got = tok.encode(r.at("text").get<std::string>(), add);
    if (got == want) {
      ++pass;
    } else {
      failed.push_back(r.at("id").get<std::string>());
      ADD_FAILURE() << file << " row " << r.at("id").get<std::string>() << "\n  want " << show(want) << "\n  got  "
                    << show(got);
    }
  }
  std::printf("%s: %zu/%zu rows pass\n", file.c_str(), pass, rows.size());
  EXPECT_TRUE(failed.empty()) << failed.size() << " rows failed";
}

TEST(TokenizerGolden, TokenizeGemma3) { run_tokenize_golden(gemma3(), "tokenize.jsonl", 313); }

TEST(TokenizerGolden, TokenizeGemma4Derived) {
  run_tokenize_golden(gemma4(), "tokenize_gemma4_derived.jsonl", 56);
}

TEST(TokenizerGolden, DecodeGemma3) {
  std::vector<json> rows = read_jsonl(test::data("assets/golden/decode.jsonl"));
  ASSERT_EQ(rows.size(), 52u);
  size_t pass = 0;
  for (const json& r : rows) {
    std::vector<int32_t> ids = r.at("ids").get<std::vector<int32_t>>();
    bool skip = r.at("skip_special_tokens").get<bool>();
    std::string want = r.at("text").get<std::string>();
    std::string got = gemma3().decode(ids, skip);
    if (got == want) ++pass;
    else ADD_FAILURE() << "decode.jsonl row " << r.at("id").get<std::string>() << "\n  want " << json(want).dump()
                       << "\n  got  " << json(got).dump();
  }
  std::printf("decode.jsonl: %zu/%zu rows pass\n", pass, rows.size());
}

// Streaming: the concatenation of push() and flush() is decode() of the whole sequence, on every
// decode row and on the ids of every tokenize row.
TEST(TokenizerGolden, StreamingEqualsWholeDecode) {
  auto check = [](const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip, const std::string& id) {
    StreamDecoder sd(tok, skip);
    std::string s;
    for (int32_t x : ids) s += sd.push(x);
    s += sd.flush();
    EXPECT_EQ(s, tok.decode(ids, skip)) << "row " << id;
  };
  for (const json& r : read_jsonl(test::data("assets/golden/decode.jsonl"))) {
    std::vector<int32_t> ids = r.at("ids").get<std::vector<int32_t>>();
    check(gemma3(), ids, r.at("skip_special_tokens").get<bool>(), r.at("id").get<std::string>());
    check(gemma3(), ids, !r.at("skip_special_tokens").get<bool>(), r.at("id").get<std::string>());
  }
  for (const json& r : read_jsonl(test::data("assets/golden/tokenize.jsonl"))) {
    std::vector<int32_t> ids = r.at("ids").get<std::vector<int32_t>>();
    check(gemma3(), ids, false, r.at("id").get<std::string>());
    check(gemma3(), ids, true, r.at("id").get<std::string>());
  }
}

TEST(TokenizerGolden, StreamingHoldsBackIncompleteCharacters) {
  const Tokenizer& t = gemma3();
  // "€" = E2 82 AC as byte tokens (238 + byte).
  StreamDecoder sd(t, false);
  EXPECT_EQ(sd.push(238 + 0xE2), "");
  EXPECT_EQ(sd.push(238 + 0x82), "");
  EXPECT_EQ(sd.push(238 + 0xAC), "");
  EXPECT_EQ(sd.push(t.token_id("a")), "\xE2\x82\xAC" "a");
  // An invalid run is emitted as U+FFFD per byte as soon as it cannot recover.
  StreamDecoder bad(t, false);
  EXPECT_EQ(bad.push(238 + 0x82), "\xEF\xBF\xBD");
  EXPECT_EQ(bad.push(238 + 0x41), "\xEF\xBF\xBD");
  EXPECT_EQ(bad.flush(), "");
  // A skipped special token does not end a byte run, as in decode().
  StreamDecoder sk(t, true);
  std::string s;
  for (int32_t id : {238 + 0xE2, t.eos_id(), 238 + 0x82, 238 + 0xAC}) s += sk.push(id);
  s += sk.flush();
  EXPECT_EQ(s, "\xE2\x82\xAC");
  EXPECT_EQ(s, t.decode({238 + 0xE2, t.eos_id(), 238 + 0x82, 238 + 0xAC}, true));
}

// ---------------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------------

TEST(Tokenizer, Gemma3Api) {
  const Tokenizer& t = gemma3();
  EXPECT_EQ(t.vocab_size(), 262145);
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.token_id("<start_of_turn>"), 105);
  EXPECT_EQ(t.token_id("<end_of_turn>"), 106);
  EXPECT_EQ(t.token_id("<image_soft_token>"), 262144);
  EXPECT_EQ(t.token_id("\xE2\x96\x81world"), 1902);
  EXPECT_EQ(t.token_id("no such token, surely"), -1);
  EXPECT_EQ(t.token_text(1902), "\xE2\x96\x81world");
  EXPECT_EQ(t.token_text(238 + 0x41), "<0x41>");
  EXPECT_EQ(t.token_text(262144), "<image_soft_token>");
  EXPECT_THROW(t.token_text(262145), Error);
  EXPECT_THROW(t.token_text(-1), Error);
  EXPECT_TRUE(t.is_special(2));
  EXPECT_TRUE(t.is_special(106));
  EXPECT_TRUE(t.is_special(262144));
  EXPECT_FALSE(t.is_special(4));  // <mask> is an added token, not special
  EXPECT_FALSE(t.is_special(1902));
  EXPECT_FALSE(t.is_special(-5));
  EXPECT_EQ(t.encode("Hello world", true), (std::vector<int32_t>{2, 9259, 1902}));
  EXPECT_EQ(t.encode("Hello world", false), (std::vector<int32_t>{9259, 1902}));
  EXPECT_EQ(t.encode("", true), (std::vector<int32_t>{2}));
  EXPECT_EQ(t.decode({2, 9259, 1902, 999999999, -3}, false), "<bos>Hello world");  // unknown ids dropped
  EXPECT_EQ(t.decode({2, 9259, 1902}, true), "Hello world");
}

TEST(Tokenizer, Gemma4DerivedApi) {
  const Tokenizer& t = gemma4();
  EXPECT_EQ(t.vocab_size(), 262144);
  EXPECT_EQ(t.token_id("<|turn>"), 105);
  EXPECT_EQ(t.token_id("<turn|>"), 106);
  EXPECT_EQ(t.token_id("<start_of_turn>"), -1);
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_TRUE(t.is_special(100));
  EXPECT_EQ(t.decode(t.encode("<|turn>user\nHi<turn|>\n", false), false), "<|turn>user\nHi<turn|>\n");
}

TEST(Tokenizer, InvalidUtf8InputFallsBackToBytes) {
  const Tokenizer& t = gemma3();
  std::vector<int32_t> ids = t.encode(std::string("a\xFF" "b\xE2\x82", 5), false);
  std::vector<int32_t> want = {t.token_id("a"), 238 + 0xFF, t.token_id("b"), 238 + 0xE2, 238 + 0x82};
  EXPECT_EQ(ids, want);
}

TEST(Tokenizer, EncodeIsThreadSafe) {
  const Tokenizer& t = gemma3();
  std::vector<json> rows = read_jsonl(test::data("assets/golden/tokenize.jsonl"));
  int bad = 0;
#pragma omp parallel for reduction(+ : bad) num_threads(4)
  for (int i = 0; i < int(rows.size()); ++i)
    if (t.encode(rows[size_t(i)]["text"].get<std::string>(), false) != rows[size_t(i)]["ids"].get<std::vector<int32_t>>())
      ++bad;
  EXPECT_EQ(bad, 0);
}

// ---------------------------------------------------------------------------------------------
// Small synthetic tokenizer: pipeline pieces and options
// ---------------------------------------------------------------------------------------------

TEST(TokenizerTiny, BpeByteFallbackUnkAndDecode) {
  Tokenizer t = Tokenizer::from_json_text(tiny_json(), "tiny.json");
  EXPECT_EQ(t.vocab_size(), 16);
  // "ab" -> 7; " ab" -> "▁ab" = 8; "abc": (a,b) rank 0 first -> ab, then (ab,c) -> abc.
  EXPECT_EQ(t.encode("ab", false), (std::vector<int32_t>{7}));
  EXPECT_EQ(t.encode(" ab", false), (std::vector<int32_t>{8}));
  EXPECT_EQ(t.encode("abc", false), (std::vector<int32_t>{14}));
  EXPECT_EQ(t.encode("ab", true), (std::vector<int32_t>{2, 7}));
  // 'A' falls back to <0x41>; '€' to its three bytes; 'é' has no byte token for C3 -> <unk>,
  // and consecutive unknowns fuse into one <unk>.
  EXPECT_EQ(t.encode("A", false), (std::vector<int32_t>{9}));
  EXPECT_EQ(t.encode("\xE2\x82\xAC", false), (std::vector<int32_t>{10, 11, 12}));
  EXPECT_EQ(t.encode("a\xC3\xA9\xC3\xA9" "b", false), (std::vector<int32_t>{4, 3, 5}));
  EXPECT_EQ(t.encode("<bos>ab<eos>", false), (std::vector<int32_t>{2, 7, 1}));
  EXPECT_EQ(t.decode({8, 9, 10, 11, 12}, false), " abA\xE2\x82\xAC");
  EXPECT_EQ(t.decode({10, 11, 4}, false), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  EXPECT_EQ(t.decode({9, 10, 11}, false), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(t.decode({2, 7, 1}, true), "ab");
}

TEST(TokenizerTiny, MergesAcrossMetaspaceStillApply) {
  // Words are cut before '▁' only where no token joins across it; here "b▁" exists, so
  // "cb a" must merge (b, ▁) as whole-word BPE does.
  std::string s = tiny_json();
  s.replace(s.find("\"bc\": 15"), 8, "\"bc\": 15, \"b\u2581\": 16");
  s.replace(s.find("[\"ab\", \"c\"]"), 11, "[\"ab\", \"c\"], [\"b\", \"\u2581\"]");
  Tokenizer t = Tokenizer::from_json_text(s, "tiny_joiner.json");
  EXPECT_EQ(t.encode("cb a", false), (std::vector<int32_t>{13, 16, 4}));
  EXPECT_EQ(t.encode("ca a", false), (std::vector<int32_t>{13, 4, 6, 4}));
  EXPECT_EQ(t.encode("cb ab", false), (std::vector<int32_t>{13, 5, 8}));
}

TEST(TokenizerTiny, AddedTokenOptions) {
  std::string extra = R"(,
    {"id": 16, "content": "<x>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": false},
    {"id": 17, "content": "b b", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false})";
  Tokenizer t = Tokenizer::from_json_text(tiny_json("BPE", extra), "tiny.json");
  EXPECT_EQ(t.vocab_size(), 18);
  // lstrip/rstrip swallow the whitespace around <x>.
  EXPECT_EQ(t.encode("a  <x>\t b", false), (std::vector<int32_t>{4, 16, 5}));
  // A normalized added token matches the normalized text ("b▁b").
  EXPECT_EQ(t.encode("ab b", false), (std::vector<int32_t>{4, 17}));
  EXPECT_EQ(t.token_id("b b"), 17);
  EXPECT_FALSE(t.is_special(16));
}

TEST(TokenizerTiny, StreamingOnTinyMatchesDecode) {
  Tokenizer t = Tokenizer::from_json_text(tiny_json(), "tiny.json");
  std::vector<std::vector<int32_t>> seqs = {
      {8, 9, 10, 11, 12}, {10, 11, 4}, {9, 10, 11}, {10, 2, 11, 12}, {10, 11, 12, 10}, {}, {2, 3, 1}, {12, 12, 6}};
  for (const auto& ids : seqs)
    for (bool skip : {false, true}) {
      StreamDecoder sd(t, skip);
      std::string s;
      for (int32_t x : ids) s += sd.push(x);
      s += sd.flush();
      EXPECT_EQ(s, t.decode(ids, skip)) << show(ids) << " skip=" << skip;
    }
}

// ---------------------------------------------------------------------------------------------
// Errors name the file
// ---------------------------------------------------------------------------------------------

TEST(TokenizerErrors, MissingFile) { expect_load_error(tmp_path("no_such_tokenizer.json"), "no_such_tokenizer.json"); }

TEST(TokenizerErrors, MalformedJson) {
  std::string p = tmp_path("malformed_tokenizer.json");
  std::string s = tiny_json();
  s.insert(s.find("\"merges\""), "\"oops\" ");  // missing ':' and value
  write_raw(p, s);
  expect_load_error(p, "bad tokenizer JSON");
  write_raw(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,}}}");
  expect_load_error(p, ":1:");
  write_raw(p, "");
  expect_load_error(p, "expected a JSON object");
  write_raw(p, tiny_json() + " x");
  expect_load_error(p, "after the top-level object");
}

TEST(TokenizerErrors, UnsupportedModelType) {
  std::string p = tmp_path("wordpiece_tokenizer.json");
  write_raw(p, tiny_json("WordPiece"));
  expect_load_error(p, "unsupported model type 'WordPiece'");
}

TEST(TokenizerErrors, BadContents) {
  std::string p = tmp_path("bad_tokenizer.json");
  std::string s = tiny_json();
  write_raw(p, std::string(s).replace(s.find("[\"b\", \"c\"]"), 10, "[\"b\", \"zz\"]"));
  expect_load_error(p, "merge token 'zz' is not in model.vocab");
  write_raw(p, std::string(s).replace(s.find("\"ByteFallback\""), 14, "\"CTC\""));
  expect_load_error(p, "unsupported decoder");
  write_raw(p, std::string(s).replace(s.find("\"c\": 13"), 7, "\"c\": 1.5"));
  expect_load_error(p, "expected an integer");
  write_raw(p, std::string(s).replace(s.find("[\"b\", \"c\"]"), 10, "\"b c\""));
  expect_load_error(p, "mixes");
}
