// libFuzzer target: tokenizer.json. The input is loaded with Tokenizer::from_json_text (what
// from_file does after reading the file); an accepted tokenizer then encodes a few fixed texts
// (ASCII, spaces, added-token look-alikes, non-ASCII, invalid UTF-8) with and without the
// post-processor, decodes the result and a run of ids around the vocabulary's ends (out of range
// included) with and without skip_special_tokens, streams them through StreamDecoder, and looks
// up tokens and special ids. gt::Error is the expected way to fail; anything else -- a crash, a
// sanitizer report, another exception (e.g. nlohmann::json's), a hang, runaway memory -- is a bug.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gemmatune/data/tokenizer.h"
#include "gemmatune/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::optional<gt::Tokenizer> loaded;
  try {
    loaded.emplace(gt::Tokenizer::from_json_text(text, "fuzz/tokenizer.json"));
  } catch (const gt::Error&) {
    return 0;
  }
  const gt::Tokenizer& tok = *loaded;
  static const char* const kTexts[] = {
      "Hello world", "  two  spaces\tand\ttabs\n\nnewlines ", "<bos><start_of_turn>user\nab<end_of_turn>\n",
      "abc ab a b c", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad\xe6\x96\x87", "bad \xff\xfe \xc3 utf8 \xed\xa0\x80",
      "", " ", "\xe2\x96\x81\xe2\x96\x81x"};
  for (const char* t : kTexts)
    for (bool special : {false, true}) {
      try {
        std::vector<int32_t> ids = tok.encode(t, special);
        for (bool skip : {false, true}) {
          (void)tok.decode(ids, skip);
          gt::StreamDecoder sd(tok, skip);
          for (int32_t id : ids) (void)sd.push(id);
          (void)sd.flush();
        }
      } catch (const gt::Error&) {
      }
    }
  const int32_t n = tok.vocab_size();
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 64; ++i) ids.push_back(i);
  for (int32_t i = n > 64 ? n - 64 : 0; i < n + 4; ++i) ids.push_back(i);
  ids.push_back(-1);
  ids.push_back(INT32_MAX);
  for (bool skip : {false, true}) {
    try {
      (void)tok.decode(ids, skip);
      gt::StreamDecoder sd(tok, skip);
      for (int32_t id : ids) (void)sd.push(id);
      (void)sd.flush();
    } catch (const gt::Error&) {
    }
  }
  for (int32_t id : ids) {
    try {
      const std::string& piece = tok.token_text(id);
      (void)tok.is_special(id);
      (void)tok.token_id(piece);
    } catch (const gt::Error&) {
    }
  }
  (void)tok.bos_id();
  (void)tok.eos_id();
  (void)tok.pad_id();
  return 0;
}
