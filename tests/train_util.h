// Shared setup of the training tests: a random model folder with the real Gemma 3 tokenizer and
// chat template, and a small chat dataset in the formats the trainer reads.
#pragma once
#include <fstream>
#include <string>

#include "gemmatune/model/presets.h"
#include "test_util.h"

namespace gt::test {

inline std::string make_chat_model(const std::string& preset, const std::string& dir, uint64_t seed) {
  InitOptions o;
  o.preset = preset;
  o.out_dir = dir;
  o.seed = seed;
  o.tokenizer = unpacked("assets/gemma3_tokenizer.json");
  o.chat_template = data("assets/gemma3_chat_template.jinja");
  init_model(o);
  return dir;
}

// Four examples: two chats, a prompt/completion pair, a chat with a system turn.
inline std::string write_chat_data(const std::string& path) {
  std::ofstream o(path);
  o << R"({"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]})" << "\n";
  o << R"({"messages": [{"role": "user", "content": "Name a primary colour."}, {"role": "assistant", "content": "Blue."}]})" << "\n";
  o << R"({"prompt": "2 + 2 =", "completion": "4"})" << "\n";
  o << R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]})" << "\n";
  return path;
}

}  // namespace gt::test
