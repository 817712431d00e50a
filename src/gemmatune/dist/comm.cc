#include "gemmatune/dist/comm.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "gemmatune/util/error.h"

#ifdef GEMMATUNE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only: no deprecated C++ bindings
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace gt::dist {

#ifdef GEMMATUNE_MPI
namespace {
void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI ", what, " failed: ", std::string(msg, size_t(len)));
}
// Launched by mpirun/mpiexec (Open MPI, MPICH, PMIx or Slurm set one of these)?
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}
}  // namespace

struct Comm::Request::Handle {
  MPI_Request r = MPI_REQUEST_NULL;
};
#else
struct Comm::Request::Handle {};
#endif

Comm::Request::Request(Request&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
Comm::Request& Comm::Request::operator=(Request&& o) noexcept {
  if (this != &o) {
    if (h_) wait();
    h_ = o.h_;
    o.h_ = nullptr;
  }
  return *this;
}
Comm::Request::~Request() {
  if (h_) {
    try {
      wait();
    } catch (...) {
    }
  }
}
bool Comm::Request::test() {
  if (!h_) return true;
#ifdef GEMMATUNE_MPI
  int flag = 0;
  check(MPI_Test(&h_->r, &flag, MPI_STATUS_IGNORE), "test (allreduce)");
  return flag != 0;
#else
  return true;
#endif
}

void Comm::Request::wait() {
  if (!h_) return;
#ifdef GEMMATUNE_MPI
  const int rc = MPI_Wait(&h_->r, MPI_STATUS_IGNORE);
  delete h_;
  h_ = nullptr;
  check(rc, "wait (allreduce)");
#else
  delete h_;
  h_ = nullptr;
#endif
}

Comm::Comm() {
#ifdef GEMMATUNE_MPI
  if (!launched_by_mpi()) return;  // a plain run: one process, no MPI runtime needed
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "init");
    std::atexit([] {
      int fin = 0;
      MPI_Finalized(&fin);
      if (!fin) MPI_Finalize();
    });
  }
  // Errors come back as return codes (turned into gt::Error) instead of aborting silently.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm local;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
    MPI_Comm_size(local, &local_size_);
    MPI_Comm_free(&local);
  }
  mpi_ = true;
#endif
}

Comm& Comm::world() {
  static Comm c;
  return c;
}

std::string Comm::describe() const {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
#ifdef GEMMATUNE_MPI
  if (mpi_) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    std::string l(lib, size_t(len));
    if (auto nl = l.find_first_of(",\n"); nl != std::string::npos) l.resize(nl);
    return str("MPI (", l, "), rank ", rank_, " of ", size_, " on ", host);
  }
  return str("single process on ", host, " (built with MPI; start under mpirun for data parallelism)");
#else
  return str("single process on ", host, " (built without MPI)");
#endif
}

#ifdef GEMMATUNE_MPI
namespace {
void allreduce(void* data, size_t n, MPI_Datatype t) {
  // MPI counts are int: large buffers go in pieces.
  const size_t chunk = size_t(1) << 30;
  int tsize = 0;
  MPI_Type_size(t, &tsize);
  char* p = static_cast<char*>(data);
  for (size_t done = 0; done < n; done += chunk) {
    const int cnt = int(std::min(chunk, n - done));
    check(MPI_Allreduce(MPI_IN_PLACE, p + done * size_t(tsize), cnt, t, MPI_SUM, MPI_COMM_WORLD), "allreduce");
  }
}
}  // namespace
#endif

// The three sums share one body; `type_tag` picks the MPI datatype (0 float, 1 double, 2 int64).
template <class T>
void sum_in_place(bool active, T* data, size_t n, [[maybe_unused]] int type_tag) {
#ifdef GEMMATUNE_MPI
  if (!active) return;
  MPI_Datatype t = type_tag == 0 ? MPI_FLOAT : type_tag == 1 ? MPI_DOUBLE : MPI_INT64_T;
  allreduce(data, n, t);
#else
  (void)active, (void)data, (void)n;
#endif
}

void Comm::allreduce_sum(float* data, size_t n) { sum_in_place(mpi_ && size_ > 1, data, n, 0); }
void Comm::allreduce_sum(double* data, size_t n) { sum_in_place(mpi_ && size_ > 1, data, n, 1); }
void Comm::allreduce_sum(int64_t* data, size_t n) { sum_in_place(mpi_ && size_ > 1, data, n, 2); }

void Comm::allreduce_min(double* data, size_t n) {
#ifdef GEMMATUNE_MPI
  if (mpi_ && size_ > 1) check(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD), "allreduce (min)");
#else
  (void)data, (void)n;
#endif
}

void Comm::allreduce_max(double* data, size_t n) {
#ifdef GEMMATUNE_MPI
  if (mpi_ && size_ > 1) check(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD), "allreduce (max)");
#else
  (void)data, (void)n;
#endif
}

void Comm::broadcast(void* data, size_t bytes, int root) {
#ifdef GEMMATUNE_MPI
  if (!mpi_ || size_ == 1) return;
  const size_t chunk = size_t(1) << 30;
  char* p = static_cast<char*>(data);
  for (size_t done = 0; done < bytes; done += chunk)
    check(MPI_Bcast(p + done, int(std::min(chunk, bytes - done)), MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
#else
  (void)data, (void)bytes, (void)root;
#endif
}

void Comm::barrier() {
#ifdef GEMMATUNE_MPI
  if (mpi_ && size_ > 1) check(MPI_Barrier(MPI_COMM_WORLD), "barrier");
#endif
}

bool Comm::all_equal(uint64_t value) {
#ifdef GEMMATUNE_MPI
  if (!mpi_ || size_ == 1) return true;
  uint64_t lo = value, hi = value;
  check(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD), "allreduce (min)");
  check(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD), "allreduce (max)");
  return lo == hi;
#else
  (void)value;
  return true;
#endif
}

void Comm::abort(int code) {
#ifdef GEMMATUNE_MPI
  if (mpi_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::fflush(nullptr);
  std::_Exit(code);
}

int default_threads(const Comm& comm) {
  if (!comm.distributed() || std::getenv("OMP_NUM_THREADS")) return 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : int(online);
  // Bound to a subset of the cores (mpirun --bind-to core, --map-by ...:PE=n): that subset is this
  // rank's. Unbound (or bound to the whole machine): share the machine among its ranks.
  if (mine >= online) mine = int(online) / std::max(1, comm.local_size());
  return std::max(1, mine);
}

uint64_t checksum(const std::vector<const std::vector<float>*>& tensors) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (const auto* t : tensors) {
    h ^= t->size() + 0x632BE59BD9B4E019ull + (h << 6) + (h >> 2);
    for (float x : *t) {
      uint32_t b;
      std::memcpy(&b, &x, 4);
      h = (h ^ b) * 0x100000001B3ull;
      h ^= h >> 29;
    }
  }
  return h;
}

Comm::Request Comm::iallreduce_sum(float* data, size_t n) {
  Request r;
#ifdef GEMMATUNE_MPI
  if (!mpi_ || size_ == 1) return r;
  if (n > size_t(INT32_MAX)) fail("allreduce bucket of ", n, " floats is too large for one MPI call");
  r.h_ = new Request::Handle;
  const int rc = MPI_Iallreduce(MPI_IN_PLACE, data, int(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r.h_->r);
  if (rc != MPI_SUCCESS) {
    delete r.h_;
    r.h_ = nullptr;
    check(rc, "iallreduce");
  }
#else
  (void)data, (void)n;
#endif
  return r;
}

GradientReducer::GradientReducer(Comm& comm, std::vector<std::pair<float*, size_t>> tensors, size_t bucket_bytes)
    : comm_(comm), tensors_(std::move(tensors)), bucket_of_(tensors_.size()), is_ready_(tensors_.size(), 0) {
  const size_t cap = std::max<size_t>(1, bucket_bytes / sizeof(float));
  size_t i = 0;
  while (i < tensors_.size()) {
    Bucket b;
    b.first = i;
    size_t n = 0;
    do {
      n += tensors_[i].second;
      bucket_of_[i] = buckets_.size();
      ++i;
    } while (i < tensors_.size() && n + tensors_[i].second <= cap);
    b.last = i;
    b.pending = b.last - b.first;
    b.buf.resize(n);
    buckets_.push_back(std::move(b));
  }
}

void GradientReducer::launch(Bucket& b) {
  if (b.launched) return;
  size_t off = 0;
  for (size_t t = b.first; t < b.last; ++t) {
    std::memcpy(b.buf.data() + off, tensors_[t].first, tensors_[t].second * sizeof(float));
    off += tensors_[t].second;
  }
  b.req = comm_.iallreduce_sum(b.buf.data(), b.buf.size());
  b.launched = true;
}

void GradientReducer::ready(size_t i) {
  if (i >= tensors_.size()) fail("GradientReducer: tensor ", i, " of ", tensors_.size());
  if (is_ready_[i]) fail("GradientReducer: tensor ", i, " marked ready twice in one step");
  is_ready_[i] = 1;
  Bucket& b = buckets_[bucket_of_[i]];
  if (!comm_.distributed()) return;
  if (--b.pending == 0) launch(b);
  // MPI moves non-blocking collectives on only inside MPI calls: give the ones in flight a push.
  for (Bucket& o : buckets_)
    if (o.launched) o.req.test();
}

double GradientReducer::reduce_all() {
  const auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) {
    if (comm_.distributed()) {
      launch(b);
      b.req.wait();
    }
  }
  finish();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double GradientReducer::finish() {
  const auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) {
    if (comm_.distributed()) {
      launch(b);
      b.req.wait();
      size_t off = 0;
      for (size_t t = b.first; t < b.last; ++t) {
        std::memcpy(tensors_[t].first, b.buf.data() + off, tensors_[t].second * sizeof(float));
        off += tensors_[t].second;
      }
    }
    b.launched = false;
    b.pending = b.last - b.first;
  }
  std::fill(is_ready_.begin(), is_ready_.end(), 0);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace gt::dist
