// Data-parallel communication: the one place that talks to MPI (Open MPI from Debian). Built without
// MPI, or run without mpirun, it is a single process of size 1 and every collective is a no-op, so
// the trainer calls the same code either way. Nothing else in the tree includes mpi.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gt::dist {

class Comm {
 public:
  // The process group of this run: initialised on first use (MPI_Init_thread, funneled: only the
  // thread that made it calls MPI), finalised at exit.
  static Comm& world();
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool distributed() const { return size_ > 1; }
  // Ranks of this run on this machine (MPI_COMM_TYPE_SHARED); 1 without MPI.
  int local_size() const { return local_size_; }
  // "MPI (Open MPI 4.1.4), rank 1 of 3 on host" or "single process (built without MPI)".
  std::string describe() const;

  void allreduce_sum(float* data, size_t n);
  void allreduce_sum(double* data, size_t n);
  void allreduce_sum(int64_t* data, size_t n);
  // Element-wise minimum and maximum over the ranks, in place.
  void allreduce_min(double* data, size_t n);
  void allreduce_max(double* data, size_t n);
  void broadcast(void* data, size_t bytes, int root = 0);
  void barrier();
  // True on every rank when all ranks passed the same value (e.g. an adapter checksum).
  bool all_equal(uint64_t value);
  // Ends every rank of the run now (MPI_Abort), e.g. after an error on this one: a plain exit would
  // leave the others waiting in a collective. Without MPI: std::exit(code).
  [[noreturn]] void abort(int code);

  // Non-blocking sum in place; wait() completes it. A no-op request on a single process.
  class Request {
   public:
    Request() = default;
    Request(Request&&) noexcept;
    Request& operator=(Request&&) noexcept;
    ~Request();
    void wait();
    // Drives the transfer on (MPI makes progress only inside MPI calls); true once complete.
    bool test();
    bool active() const { return h_ != nullptr; }

   private:
    friend class Comm;
    struct Handle;
    Handle* h_ = nullptr;
  };
  Request iallreduce_sum(float* data, size_t n);

 private:
  Comm();
  int rank_ = 0, size_ = 1, local_size_ = 1;
  bool mpi_ = false;
};

// Worker threads for one rank when none were asked for: the CPUs this process may run on, shared
// among the ranks of this machine that share them, so ranks × threads never oversubscribes the
// cores. 0 = leave OpenMP's default (OMP_NUM_THREADS is set, or a single process).
int default_threads(const Comm& comm);

// A 64-bit checksum of float tensors (their bits), for cross-rank agreement checks.
uint64_t checksum(const std::vector<const std::vector<float>*>& tensors);

// Sums gradients across ranks in buckets that start as soon as their tensors are final, so the
// reduction overlaps the rest of the backward pass (as PyTorch DDP does). Tensors are registered in
// the order the backward pass finishes them (last layer first); a bucket holds consecutive tensors
// up to `bucket_bytes` and is sent with one non-blocking allreduce when its last tensor is ready.
class GradientReducer {
 public:
  GradientReducer(Comm& comm, std::vector<std::pair<float*, size_t>> tensors, size_t bucket_bytes = 4u << 20);
  // Marks tensor i (an index into the constructor's list) final for this step.
  void ready(size_t i);
  // Waits for every bucket (launching any not yet launched); returns the seconds spent waiting here,
  // the part of the communication the backward did not hide.
  double finish();
  // Marks every tensor ready and finishes: the whole reduction after the backward, nothing hidden
  // (the baseline bench --train compares against). Returns the seconds it took.
  double reduce_all();
  size_t buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    size_t first = 0, last = 0;  // tensors [first, last)
    std::vector<float> buf;      // packed gradients (one allreduce per bucket)
    size_t pending = 0;
    Comm::Request req;
    bool launched = false;
  };
  void launch(Bucket& b);
  Comm& comm_;
  std::vector<std::pair<float*, size_t>> tensors_;
  std::vector<size_t> bucket_of_;
  std::vector<uint8_t> is_ready_;
  std::vector<Bucket> buckets_;
};

}  // namespace gt::dist
