// Run under mpirun -np N (tests/CMakeLists.txt registers it with N = 2 and 3): every rank must see
// N ranks, sums over ranks, equal checksums, and a GradientReducer that sums each tensor across
// ranks whatever the order in which the backward pass finishes them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "gemmatune/dist/comm.h"

namespace gt {
namespace {

int expected_ranks() {
  const char* e = std::getenv("GEMMATUNE_TEST_RANKS");
  return e ? std::atoi(e) : -1;
}

TEST(DistMpi, RanksSumAndAgree) {
  dist::Comm& c = dist::Comm::world();
  ASSERT_EQ(c.size(), expected_ranks()) << c.describe();
  ASSERT_TRUE(c.distributed());
  const int n = c.size(), r = c.rank();
  std::vector<float> f = {float(r), 1.0f, float(r * r)};
  c.allreduce_sum(f.data(), f.size());
  EXPECT_EQ(f[0], float(n * (n - 1) / 2));
  EXPECT_EQ(f[1], float(n));
  std::vector<double> d = {0.5 * r};
  c.allreduce_sum(d.data(), 1);
  EXPECT_EQ(d[0], 0.5 * n * (n - 1) / 2);
  std::vector<int64_t> i = {int64_t(1) << 40};
  c.allreduce_sum(i.data(), 1);
  EXPECT_EQ(i[0], int64_t(n) << 40);
  EXPECT_TRUE(c.all_equal(1234));
  EXPECT_FALSE(c.all_equal(uint64_t(r == 0 ? 1 : 2)));
  int64_t root_value = r == 0 ? 77 : 0;
  c.broadcast(&root_value, sizeof root_value, 0);
  EXPECT_EQ(root_value, 77);
  EXPECT_NE(c.describe().find("rank " + std::to_string(r) + " of " + std::to_string(n)), std::string::npos) << c.describe();
}

TEST(DistMpi, ReducerSumsEveryTensorAcrossRanks) {
  dist::Comm& c = dist::Comm::world();
  ASSERT_EQ(c.size(), expected_ranks());
  const int n = c.size(), r = c.rank();
  const std::vector<size_t> sizes = {1000, 3, 5000, 700, 1, 2048};
  std::vector<std::vector<float>> g(sizes.size());
  std::vector<std::pair<float*, size_t>> t;
  for (size_t k = 0; k < sizes.size(); ++k) {
    g[k].resize(sizes[k]);
    t.push_back({g[k].data(), g[k].size()});
  }
  dist::GradientReducer red(c, t, 2048 * sizeof(float));
  for (int step = 0; step < 3; ++step) {
    for (size_t k = 0; k < sizes.size(); ++k)
      for (size_t j = 0; j < sizes[k]; ++j) g[k][j] = float(r + 1) * float(j % 7) + float(step);
    // The backward finishes tensors last-first; each rank in a different interleaving is fine too.
    for (size_t k = sizes.size(); k-- > 0;) red.ready(k);
    red.finish();
    const float ranks_sum = float(n * (n + 1) / 2);
    for (size_t k = 0; k < sizes.size(); ++k)
      for (size_t j = 0; j < sizes[k]; ++j)
        ASSERT_EQ(g[k][j], ranks_sum * float(j % 7) + float(n * step)) << "step " << step << " tensor " << k << " entry " << j;
  }
}

}  // namespace
}  // namespace gt
