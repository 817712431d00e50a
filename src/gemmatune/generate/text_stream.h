// Streaming text with stop strings: generated ids in, final text out. Text that may still become
// the start of a stop string is held back; once a stop string appears, the text before it is
// released and the stream reports stopped(). Shared by generate() and the serving engine.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gemmatune/data/tokenizer.h"

namespace gt {

class StopTextStream {
 public:
  // `tok` may be null: then no text is produced and stop strings never match.
  StopTextStream(const Tokenizer* tok, bool skip_special_tokens, std::vector<std::string> stop_strings);
  // Adds one generated id; returns the text that became final (may be empty).
  std::string push(int32_t id);
  // Ends the stream: returns what was held back (nothing after a stop string).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::unique_ptr<StreamDecoder> sd_;
  std::vector<std::string> stops_;
  std::string pending_;  // final text not yet released (may be the start of a stop string)
  bool stopped_ = false;
};

}  // namespace gt
