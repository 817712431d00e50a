// dist::Comm and GradientReducer on one process (no mpirun): size 1, collectives leave data as it is,
// buckets cover every tensor once. The multi-rank behaviour is tests/dist_mpi.cc under mpirun.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "gemmatune/dist/comm.h"
#include "gemmatune/util/error.h"

namespace gt {
namespace {

TEST(Dist, SingleProcessIsRankZeroOfOne) {
  dist::Comm& c = dist::Comm::world();
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_FALSE(c.distributed());
  EXPECT_NE(c.describe().find("single process"), std::string::npos) << c.describe();
  std::vector<float> v = {1.5f, -2.0f};
  c.allreduce_sum(v.data(), v.size());
  EXPECT_EQ(v, (std::vector<float>{1.5f, -2.0f}));
  EXPECT_TRUE(c.all_equal(42));
}

TEST(Dist, ReducerBucketsCoverEveryTensorOnceAndCheckReadiness) {
  std::vector<std::vector<float>> g = {std::vector<float>(300, 1.0f), std::vector<float>(100, 2.0f),
                                       std::vector<float>(700, 3.0f), std::vector<float>(10, 4.0f)};
  std::vector<std::pair<float*, size_t>> t;
  for (auto& x : g) t.push_back({x.data(), x.size()});
  dist::GradientReducer r(dist::Comm::world(), t, 400 * sizeof(float));
  // 300+100 fill the first bucket, 700 exceeds the cap on its own, 10 starts the last one.
  EXPECT_EQ(r.buckets(), 3u);
  for (int step = 0; step < 2; ++step) {
    for (size_t i = 0; i < g.size(); ++i) r.ready(i);
    EXPECT_GE(r.finish(), 0.0);
  }
  EXPECT_EQ(g[2][699], 3.0f);
  r.ready(1);
  EXPECT_THROW(r.ready(1), Error);  // twice in one step
  EXPECT_THROW(r.ready(9), Error);  // no such tensor
}

TEST(Dist, ChecksumSeesEveryBitAndTheSplitIntoTensors) {
  std::vector<float> a = {1.0f, -2.5f, 3.25f}, b = {0.0f};
  const uint64_t h = dist::checksum({&a, &b});
  EXPECT_EQ(h, dist::checksum({&a, &b}));
  std::vector<float> a2 = a;
  a2[1] = std::nextafter(a2[1], 0.0f);  // one ulp
  EXPECT_NE(h, dist::checksum({&a2, &b}));
  std::vector<float> neg0 = {-0.0f};
  EXPECT_NE(h, dist::checksum({&a, &neg0}));  // bits, not values
  std::vector<float> joined = {1.0f, -2.5f, 3.25f, 0.0f}, none;
  EXPECT_NE(h, dist::checksum({&joined, &none}));
}

TEST(Dist, SingleProcessLeavesThreadsToOpenMP) {
  // Only a rank of a distributed run picks its own thread count.
  EXPECT_EQ(dist::default_threads(dist::Comm::world()), 0);
  EXPECT_EQ(dist::Comm::world().local_size(), 1);
}

}  // namespace
}  // namespace gt
