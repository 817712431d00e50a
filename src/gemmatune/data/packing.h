// Batches of packed rows for training: examples (in a seeded shuffled order per epoch) are packed
// first-fit into `batch_rows` rows of at most `max_len` tokens. A row keeps every example as its
// own segment: positions restart at 0 in each segment, and the list of segments (offset, length)
// lets the model run each one as its own sequence chunk, so attention never crosses examples and
// no loss is computed across a segment boundary.
//
// Resumable: a batch is a pure function of (epoch, position) — the epoch's permutation, derived
// from (seed, epoch) alone, and the index in it of the first example not yet consumed. Every
// Batch carries the Cursor that resumes right after it; seek() to that cursor (after a restart)
// yields exactly the batches that would have followed.
//
// Packing (first-fit within a batch): take the next example in order; put it in the first row of
// the batch that has room (and fewer than max_segments segments); if none has room, open a new
// row; if the batch already has batch_rows rows, the batch is done and that example starts the
// next one. With pack = false every row holds one example. Batches never span epochs: the last
// batch of an epoch may have fewer or emptier rows. Rows are not padded (ids.size() is the sum of
// the segment lengths).
//
// Feeding the model: for each segment s of a row, a cache-less SeqChunk{nullptr, row.ids.data() +
// s.offset, s.length}; the row's loss_mask is already over those chunks' concatenated tokens, in
// Decoder::forward_backward's convention (rows of a batch can be concatenated the same way).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gemmatune/data/sft.h"

namespace gt {

struct Segment {
  int64_t offset = 0;  // first token in the row
  int64_t length = 0;
};

struct PackedRow {
  std::vector<int32_t> ids;
  // Model convention: loss_mask[t] == 1 means the logits at t are scored against ids[t+1] (of the
  // same segment; the last token of every segment is 0). This is what Decoder::forward_backward
  // takes. The example's target_mask at t+1 is loss_mask[t].
  std::vector<uint8_t> loss_mask;
  std::vector<int32_t> labels;       // ids[t+1] where loss_mask[t] == 1, else -100
  std::vector<int32_t> positions;    // 0, 1, ... restarting in each segment
  std::vector<int32_t> segment_ids;  // 1, 2, ... per segment
  std::vector<Segment> segments;
  std::vector<int64_t> examples;     // the source index of each segment's example
  int64_t trained() const;
};

struct Cursor {
  int64_t epoch = 0;
  int64_t position = 0;  // index in the epoch's order of the next example to consume
  bool operator==(const Cursor& o) const { return epoch == o.epoch && position == o.position; }
};

struct Batch {
  std::vector<PackedRow> rows;
  Cursor start;  // where this batch began
  Cursor next;   // resume here to get the batch after this one
  bool epoch_end = false;  // the last batch of its epoch
  int64_t tokens() const;
  int64_t trained() const;
};

struct LoaderOptions {
  int64_t max_len = 2048;     // tokens per row
  int64_t batch_rows = 1;     // rows per batch
  bool pack = true;
  int64_t max_segments = 0;   // per row; 0: no limit
  bool shuffle = true;
  uint64_t seed = 0;
  int64_t epochs = 0;         // next() returns false after this many epochs; 0: never ends
};

// The permutation of [0, n) for (seed, epoch): Fisher-Yates driven by splitmix64, identical on
// every platform.
std::vector<int64_t> shuffled_order(size_t n, uint64_t seed, int64_t epoch);

// Packs the examples into a row (no limits checked).
PackedRow pack_row(const std::vector<const SftExample*>& examples, const std::vector<int64_t>& indices);

class BatchLoader {
 public:
  // The source must outlive the loader.
  BatchLoader(ExampleSource& source, LoaderOptions opt);
  // The next batch (false when opt.epochs are done). Throws an example's error (on_bad = fail),
  // an example longer than max_len (naming it), or when a whole epoch yields no example.
  bool next(Batch& out);
  // The cursor of the next batch next() would return.
  Cursor cursor() const { return cur_; }
  void seek(const Cursor& c);
  // JSON for checkpoints: {"epoch", "position", "examples", "seed"}; restore() checks that the
  // example count and seed still match, so a changed dataset is not silently resumed.
  std::string save() const;
  void restore(const std::string& json);
  const LoaderOptions& options() const { return opt_; }

 private:
  ExampleSource& src_;
  LoaderOptions opt_;
  Cursor cur_;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
  const std::vector<int64_t>& order(int64_t epoch);
};

// Runs a BatchLoader on its own thread, `depth` batches ahead (a bounded queue), so data
// preparation overlaps the model. Errors from the loader are rethrown by next(). The loader must
// not be used directly while a Prefetcher runs it. Checkpoint Batch::next of the last batch
// consumed (not the loader's cursor, which is ahead).
class Prefetcher {
 public:
  Prefetcher(BatchLoader& loader, size_t depth = 4);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;
  bool next(Batch& out);

 private:
  BatchLoader& loader_;
  size_t depth_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool done_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;
  void run();
};

}  // namespace gt
