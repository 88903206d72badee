#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <vector>

namespace lockstep {
namespace {

TEST(ThreadPool, DefaultThreadCountIsPositiveAndAtMostLogicalCpus) {
  const int n = default_thread_count();
  EXPECT_GE(n, 1);
  EXPECT_LE(unsigned(n), std::max(1u, std::thread::hardware_concurrency()));
}

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 7}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 5, 63, 64, 1000, 100003}) {
      for (int64_t grain : {1, 16}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(
            n,
            [&](int64_t b, int64_t e) {
              ASSERT_LE(0, b);
              ASSERT_LT(b, e);
              ASSERT_LE(e, n);
              for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
            },
            grain);
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[size_t(i)].load(), 1) << "threads " << threads << " n " << n << " i " << i;
      }
    }
  }
}

TEST(ThreadPool, ThreadIndexIsInRangeAndNeverShared) {
  ThreadPool pool(4);
  std::vector<std::atomic<int>> inside(4);
  std::atomic<bool> overlap{false}, out_of_range{false};
  std::atomic<int64_t> total{0};
  for (int rep = 0; rep < 200; ++rep) {
    pool.parallel_for(97, [&](int64_t b, int64_t e, int thread) {
      if (thread < 0 || thread >= 4) {
        out_of_range = true;
        return;
      }
      if (inside[size_t(thread)].fetch_add(1) != 0) overlap = true;
      volatile double sink = 0;
      for (int64_t i = b; i < e; ++i) sink = sink + double(i);
      total += e - b;
      inside[size_t(thread)].fetch_sub(1);
    });
  }
  EXPECT_FALSE(out_of_range);
  EXPECT_FALSE(overlap);
  EXPECT_EQ(total.load(), 200 * 97);
}

TEST(ThreadPool, ManySmallCallsComplete) {
  // Decode issues thousands of tiny loops; none may be lost or deadlock.
  ThreadPool pool(3);
  int64_t sum = 0;
  std::vector<int64_t> part(3);
  for (int rep = 0; rep < 3000; ++rep) {
    std::fill(part.begin(), part.end(), 0);
    pool.parallel_for(8, [&](int64_t b, int64_t e, int t) {
      for (int64_t i = b; i < e; ++i) part[size_t(t)] += i;
    });
    for (int64_t p : part) sum += p;
  }
  EXPECT_EQ(sum, 3000 * 28);
}

TEST(ThreadPool, RethrowsTheWorkersExceptionAfterAllRangesFinish) {
  ThreadPool pool(4);
  std::atomic<int64_t> done{0};
  EXPECT_THROW(pool.parallel_for(1000,
                                 [&](int64_t b, int64_t e) {
                                   if (b <= 500 && 500 < e) throw std::runtime_error("boom");
                                   done += e - b;
                                 }),
               std::runtime_error);
  EXPECT_GT(done.load(), 0);
  // The pool is still usable afterwards.
  std::atomic<int64_t> n{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e) { n += e - b; });
  EXPECT_EQ(n.load(), 100);
}

TEST(ThreadPool, NestedCallRunsInline) {
  ThreadPool pool(3);
  std::atomic<int64_t> n{0};
  pool.parallel_for(6, [&](int64_t b, int64_t e, int outer) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2, int inner) {
        EXPECT_EQ(inner, outer);
        n += e2 - b2;
      });
  });
  EXPECT_EQ(n.load(), 60);
}

TEST(ThreadPool, CallsFromSeveralThreadsAreSerialised) {
  ThreadPool pool(3);
  std::atomic<int64_t> n{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 300; ++rep)
        pool.parallel_for(50, [&](int64_t b, int64_t e) { n += e - b; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(n.load(), 3 * 300 * 50);
}

}  // namespace
}  // namespace lockstep
