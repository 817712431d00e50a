#include "gemmatune/data/packing.h"

#include <nlohmann/json.hpp>

#include "gemmatune/util/error.h"
#include "gemmatune/util/random.h"

namespace gt {

int64_t PackedRow::trained() const {
  int64_t n = 0;
  for (uint8_t m : loss_mask) n += m != 0;
  return n;
}

int64_t Batch::tokens() const {
  int64_t n = 0;
  for (const auto& r : rows) n += int64_t(r.ids.size());
  return n;
}

int64_t Batch::trained() const {
  int64_t n = 0;
  for (const auto& r : rows) n += r.trained();
  return n;
}

std::vector<int64_t> shuffled_order(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = int64_t(i);
  uint64_t s = seed ^ (0xD1B54A32D192ED03ull * uint64_t(epoch + 1));
  for (size_t i = n; i > 1; --i) {
    const uint64_t r = splitmix64(s);
    const size_t j = size_t((static_cast<unsigned __int128>(r) * i) >> 64);  // uniform in [0, i)
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

PackedRow pack_row(const std::vector<const SftExample*>& examples, const std::vector<int64_t>& indices) {
  PackedRow row;
  size_t total = 0;
  for (const SftExample* e : examples) total += e->ids.size();
  row.ids.reserve(total);
  row.loss_mask.reserve(total);
  row.labels.reserve(total);
  row.positions.reserve(total);
  row.segment_ids.reserve(total);
  for (size_t s = 0; s < examples.size(); ++s) {
    const SftExample& e = *examples[s];
    const size_t n = e.ids.size();
    row.segments.push_back(Segment{int64_t(row.ids.size()), int64_t(n)});
    row.examples.push_back(s < indices.size() ? indices[s] : -1);
    for (size_t t = 0; t < n; ++t) {
      const bool scored = t + 1 < n && e.target_mask[t + 1];
      row.ids.push_back(e.ids[t]);
      row.loss_mask.push_back(scored ? 1 : 0);
      row.labels.push_back(scored ? e.ids[t + 1] : -100);
      row.positions.push_back(int32_t(t));
      row.segment_ids.push_back(int32_t(s + 1));
    }
  }
  return row;
}

BatchLoader::BatchLoader(ExampleSource& source, LoaderOptions opt) : src_(source), opt_(opt) {
  GT_CHECK(opt_.max_len > 0, "loader: max_len must be > 0, got ", opt_.max_len);
  GT_CHECK(opt_.batch_rows > 0, "loader: batch_rows must be > 0, got ", opt_.batch_rows);
  GT_CHECK(opt_.max_segments >= 0, "loader: max_segments must be >= 0, got ", opt_.max_segments);
}

const std::vector<int64_t>& BatchLoader::order(int64_t epoch) {
  if (order_epoch_ != epoch || order_.size() != src_.size()) {
    if (opt_.shuffle) {
      order_ = shuffled_order(src_.size(), opt_.seed, epoch);
    } else {
      order_.resize(src_.size());
      for (size_t i = 0; i < order_.size(); ++i) order_[i] = int64_t(i);
    }
    order_epoch_ = epoch;
  }
  return order_;
}

void BatchLoader::seek(const Cursor& c) {
  GT_CHECK(c.epoch >= 0 && c.position >= 0 && size_t(c.position) <= src_.size(), "loader: cursor (epoch ", c.epoch,
           ", position ", c.position, ") is out of range for ", src_.size(), " examples");
  cur_ = c;
  if (size_t(cur_.position) == src_.size()) cur_ = Cursor{cur_.epoch + 1, 0};
}

std::string BatchLoader::save() const {
  nlohmann::ordered_json j;
  j["epoch"] = cur_.epoch;
  j["position"] = cur_.position;
  j["examples"] = src_.size();
  j["seed"] = opt_.seed;
  j["shuffle"] = opt_.shuffle;
  return j.dump();
}

void BatchLoader::restore(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
    const size_t n = j.at("examples").get<size_t>();
    const uint64_t seed = j.at("seed").get<uint64_t>();
    const bool shuffle = j.value("shuffle", opt_.shuffle);
    GT_CHECK(n == src_.size(), "loader: the saved data cursor is for ", n, " examples, the data now has ",
             src_.size(), ": refusing to resume on different data");
    GT_CHECK(shuffle == opt_.shuffle && (!shuffle || seed == opt_.seed), "loader: the saved data cursor was made with ",
             shuffle ? str("shuffle seed ", seed) : std::string("no shuffling"), ", the loader now uses ",
             opt_.shuffle ? str("shuffle seed ", opt_.seed) : std::string("no shuffling"));
    seek(Cursor{j.at("epoch").get<int64_t>(), j.at("position").get<int64_t>()});
  } catch (const nlohmann::json::exception& e) {
    fail("loader: bad data cursor '", text, "': ", e.what());
  }
}

bool BatchLoader::next(Batch& out) {
  const size_t n = src_.size();
  if (n == 0) fail("loader: the data has no examples");
  for (;;) {
    if (opt_.epochs > 0 && cur_.epoch >= opt_.epochs) return false;
    const std::vector<int64_t>& ord = order(cur_.epoch);
    std::vector<std::vector<const SftExample*>> row_ex;
    std::vector<std::vector<int64_t>> row_idx;
    std::vector<int64_t> used;
    size_t pos = size_t(cur_.position);
    while (pos < n) {
      const int64_t idx = ord[pos];
      const SftExample* ex = src_.get(size_t(idx));
      if (!ex || ex->ids.empty()) {
        ++pos;
        continue;
      }
      const int64_t len = int64_t(ex->ids.size());
      if (len > opt_.max_len)
        fail(ex->origin, ": example has ", len, " tokens, more than the row length ", opt_.max_len,
             " (prepare the data with this max_len and a truncation policy)");
      size_t r = row_ex.size();
      if (opt_.pack)
        for (size_t i = 0; i < row_ex.size(); ++i)
          if (used[i] + len <= opt_.max_len &&
              (opt_.max_segments == 0 || int64_t(row_ex[i].size()) < opt_.max_segments)) {
            r = i;
            break;
          }
      if (r == row_ex.size()) {
        if (int64_t(row_ex.size()) == opt_.batch_rows) break;
        row_ex.emplace_back();
        row_idx.emplace_back();
        used.push_back(0);
      }
      row_ex[r].push_back(ex);
      row_idx[r].push_back(idx);
      used[r] += len;
      ++pos;
    }
    if (row_ex.empty()) {
      // Nothing usable was left in this epoch.
      if (cur_.position == 0)
        fail("loader: no usable example in the data (all ", n, " records were skipped or dropped)");
      cur_ = Cursor{cur_.epoch + 1, 0};
      continue;
    }
    out.rows.clear();
    out.start = cur_;
    for (size_t r = 0; r < row_ex.size(); ++r) out.rows.push_back(pack_row(row_ex[r], row_idx[r]));
    out.epoch_end = pos >= n;
    cur_ = out.epoch_end ? Cursor{cur_.epoch + 1, 0} : Cursor{cur_.epoch, int64_t(pos)};
    out.next = cur_;
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// Prefetcher

Prefetcher::Prefetcher(BatchLoader& loader, size_t depth) : loader_(loader), depth_(depth ? depth : 1) {
  worker_ = std::thread([this] { run(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void Prefetcher::run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || queue_.size() < depth_; });
      if (stop_) return;
    }
    Batch b;
    bool ok = false;
    std::exception_ptr err;
    try {
      ok = loader_.next(b);
    } catch (...) {
      err = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (err || !ok) {
      error_ = err;
      done_ = true;
      cv_.notify_all();
      return;
    }
    queue_.push_back(std::move(b));
    cv_.notify_all();
  }
}

bool Prefetcher::next(Batch& out) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || done_; });
  if (!queue_.empty()) {
    out = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return true;
  }
  if (error_) std::rethrow_exception(error_);
  return false;
}

}  // namespace gt
