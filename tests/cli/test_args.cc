// cli/args: option parsing, flags versus values, positionals, defaults, --help and the errors.
#include "gemmatune/cli/args.h"

#include <gtest/gtest.h>

#include "gemmatune/util/error.h"
#include "test_util.h"

using gt::cli::Args;

namespace {
// Args over a list of words (argv is not modified by Args).
struct Argv {
  std::vector<std::string> words;
  std::vector<char*> ptrs;
  explicit Argv(std::vector<std::string> w) : words(std::move(w)) {
    for (auto& s : words) ptrs.push_back(s.data());
  }
  Args make() { return Args("test", "a test command", int(ptrs.size()), ptrs.data()); }
};
using gt::test::error_of;
}  // namespace

TEST(Args, ValuesFlagsAndPositionals) {
  Argv v({"--model", "m", "--steps=5", "--greedy", "in.txt", "--lr", "0.5", "--stop", "a", "--stop", "b"});
  Args a = v.make();
  EXPECT_EQ(a.required("model", "model"), "m");
  EXPECT_EQ(a.integer("steps", 1, "steps"), 5);
  EXPECT_TRUE(a.flag("greedy", "greedy"));  // a flag gives back the word it was followed by
  EXPECT_DOUBLE_EQ(a.real("lr", 1.0, "lr"), 0.5);
  EXPECT_EQ(a.all("stop", "stops"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(a.str("name", "dflt", "name"), "dflt");
  EXPECT_FALSE(a.flag("verbose", "verbose"));
  EXPECT_EQ(a.integer("missing", 7, "n"), 7);
  EXPECT_FALSE(a.finish());
  EXPECT_EQ(a.positional(), (std::vector<std::string>{"in.txt"}));
}

TEST(Args, Errors) {
  {
    Argv v({"--steps", "five"});
    Args a = v.make();
    EXPECT_NE(error_of([&] { a.integer("steps", 1, "steps"); }).find("expects an integer"), std::string::npos);
  }
  {
    Argv v({"--lr", "x"});
    Args a = v.make();
    EXPECT_NE(error_of([&] { a.real("lr", 1, "lr"); }).find("expects a number"), std::string::npos);
  }
  {
    Argv v({"--greedy=maybe"});
    Args a = v.make();
    EXPECT_NE(error_of([&] { a.flag("greedy", "g"); }).find("is a flag"), std::string::npos);
  }
  {
    Argv v({"--mdoel", "m"});
    Args a = v.make();
    a.str("model", "", "model");
    const std::string e = error_of([&] { a.finish(); });
    EXPECT_NE(e.find("unknown option --mdoel"), std::string::npos) << e;
  }
  {
    Argv v({});
    Args a = v.make();
    a.required("model", "model");
    const std::string e = error_of([&] { a.finish(); });
    EXPECT_NE(e.find("missing required option --model"), std::string::npos) << e;
  }
}

TEST(Args, Help) {
  Argv v({"--help", "--whatever"});
  Args a = v.make();
  a.required("model", "the model folder");
  a.integer("steps", 3, "how many");
  testing::internal::CaptureStdout();
  EXPECT_TRUE(a.finish());  // help wins over unknown and missing options
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("usage: gemmatune test"), std::string::npos) << out;
  EXPECT_NE(out.find("--model VALUE"), std::string::npos) << out;
  EXPECT_NE(out.find("(required)"), std::string::npos) << out;
  EXPECT_NE(out.find("(default: 3)"), std::string::npos) << out;
}
