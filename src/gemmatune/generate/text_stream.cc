#include "gemmatune/generate/text_stream.h"

#include <algorithm>

#include "gemmatune/util/error.h"

namespace gt {

namespace {
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

StopTextStream::StopTextStream(const Tokenizer* tok, bool skip_special_tokens, std::vector<std::string> stop_strings)
    : stops_(std::move(stop_strings)) {
  for (const auto& s : stops_) GT_CHECK(!s.empty(), "generate: empty stop string");
  if (tok) sd_ = std::make_unique<StreamDecoder>(*tok, skip_special_tokens);
}

std::string StopTextStream::push(int32_t id) {
  if (!sd_ || stopped_) return {};
  pending_ += sd_->push(id);
  size_t cut = std::string::npos;
  for (const auto& s : stops_) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  const size_t n = pending_.size() - held_back(pending_, stops_);
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::string StopTextStream::flush() {
  if (!sd_ || stopped_) return {};
  pending_ += sd_->flush();
  // The flushed tail (a held-back byte run) may itself complete a stop string.
  size_t cut = std::string::npos;
  for (const auto& s : stops_) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    pending_.resize(cut);
  }
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace gt
