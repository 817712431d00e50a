// The generation loop and the CLI: stop ids, stop strings, max tokens, streaming, and clear errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "gemmatune/generate/generate.h"
#include "gemmatune/model/presets.h"
#include "gemmatune/util/error.h"
#include "gemmatune/util/fs.h"
#include "test_util.h"

using namespace gt;

namespace {

// A tiny random Gemma 3 with the real tokenizer, written once per test binary.
const std::string& tiny_model() {
  static std::string dir = [] {
    std::string d = test::scratch("gen_tiny");
    InitOptions o;
    o.preset = "tiny";
    o.out_dir = d;
    o.seed = 11;
    o.tokenizer = test::unpacked("assets/gemma3_tokenizer.json");
    init_model(o);
    return d;
  }();
  return dir;
}

struct CliRun {
  std::string out, err;
  int code;
};

CliRun run_cli(const std::string& args) {
  std::string o = test::scratch("cli_out"), e = test::scratch("cli_err");
  int rc = std::system((test::binary() + " " + args + " >" + o + " 2>" + e).c_str());
  return {read_file(o), read_file(e), WEXITSTATUS(rc)};
}

}  // namespace

class Generation : public ::testing::Test {
 protected:
  void SetUp() override {
    model = std::make_unique<Model>(Model::load(tiny_model()));
    tok = std::make_unique<Tokenizer>(Tokenizer::from_file(tiny_model() + "/tokenizer.json"));
  }
  GenerateResult gen(const GenerateOptions& o, std::string* streamed = nullptr) {
    Decoder dec(*model);
    KvCache cache(*model, 64);
    auto ids = tok->encode("The quick brown fox", true);
    return generate(dec, cache, tok.get(), ids, o, [&](const std::string& s) {
      if (streamed) *streamed += s;
    });
  }
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
};

TEST_F(Generation, GreedyIsDeterministicAndStreamsTheWholeText) {
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 12;
  std::string streamed;
  GenerateResult a = gen(o, &streamed), b = gen(o);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.tokens.size(), 12u);
  EXPECT_EQ(a.stop_reason, StopReason::MaxTokens);
  EXPECT_EQ(streamed, a.text);
  EXPECT_EQ(a.text, tok->decode(a.tokens, true));
}

TEST_F(Generation, StopIdEndsGeneration) {
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 12;
  GenerateResult a = gen(o);
  o.stop_ids = {a.tokens[4]};
  GenerateResult b = gen(o);
  EXPECT_EQ(b.stop_reason, StopReason::Eos);
  // Stops at the first occurrence of that id; the stop token itself is not part of the output.
  size_t first = size_t(std::find(a.tokens.begin(), a.tokens.end(), a.tokens[4]) - a.tokens.begin());
  EXPECT_EQ(b.tokens, std::vector<int32_t>(a.tokens.begin(), a.tokens.begin() + long(first)));
}

TEST_F(Generation, StopStringCutsTheText) {
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = 16;
  GenerateResult a = gen(o);
  ASSERT_GE(a.text.size(), 6u);
  // A stop string made of text from the middle of the output (it may span tokens).
  const size_t at = a.text.size() / 2;
  std::string stop = a.text.substr(at, 3);
  o.stop_strings = {stop};
  std::string streamed;
  GenerateResult b = gen(o, &streamed);
  EXPECT_EQ(b.stop_reason, StopReason::StopString);
  EXPECT_EQ(b.text, a.text.substr(0, a.text.find(stop)));
  EXPECT_EQ(streamed, b.text);
}

TEST_F(Generation, SeededSamplingRepeats) {
  GenerateOptions o;
  o.sampling.temperature = 8.0f;  // flat enough that different seeds pick different tokens
  o.sampling.top_k = 50;
  o.sampling.seed = 5;
  o.max_new_tokens = 10;
  EXPECT_EQ(gen(o).tokens, gen(o).tokens);
  GenerateOptions p = o;
  p.sampling.seed = 6;
  EXPECT_NE(gen(o).tokens, gen(p).tokens);
}

TEST(Cli, GenerateGoldenAndErrors) {
  CliRun r = run_cli("generate --model " + tiny_model() + " --prompt Hello --max-new-tokens 5 --greedy");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("generated 5 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
  r = run_cli("generate --model /nonexistent/folder --prompt Hello");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/nonexistent/folder"), std::string::npos) << r.err;
  r = run_cli("generate --model " + tiny_model() + " --prompt Hi --top-p 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("top-p"), std::string::npos) << r.err;
  r = run_cli("generate --model " + tiny_model() + " --bogus 3");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown option --bogus"), std::string::npos) << r.err;
  r = run_cli("generate --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--max-new-tokens"), std::string::npos);
  const std::string out = test::scratch("golden_out.safetensors");
  r = run_cli("golden " + test::fixture("gemma3_causal") + " --out " + out + " --parts forward,greedy");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(file_exists(out));
  r = run_cli("golden " + test::fixture("gemma3_causal") + " --out " + out + " --parts bogus");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("unknown part 'bogus'"), std::string::npos) << r.err;
}
