// A ThreadPool whose worker threads cannot all be started (the system refuses a thread: memory
// or process limits) must stop the workers it did start and throw lockstep::Error. Destroying a
// vector of still-joinable std::threads instead ends the process with std::terminate ("terminate
// called without an active exception"), which is what `-t 600` under a memory limit did.
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "util/error.h"
#include "util/thread_pool.h"

namespace lockstep {
namespace {

// Runs in the death test's child process: caps the address space a little above what the
// process uses now, so that a few 8 MiB thread stacks fit and the next one does not.
void start_pool_under_address_space_limit() {
  long pages = 0;
  std::ifstream("/proc/self/statm") >> pages;
  const rlim_t now = rlim_t(pages) * rlim_t(sysconf(_SC_PAGESIZE));
  const rlimit limit{now + (48u << 20), now + (48u << 20)};
  if (pages <= 0 || setrlimit(RLIMIT_AS, &limit) != 0) std::_Exit(3);
  try {
    ThreadPool pool(1000);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::_Exit(std::string(e.what()).find("cannot start 1000 threads") != std::string::npos ? 0
                                                                                            : 4);
  } catch (...) {
    std::_Exit(5);  // some other exception type: not the documented Error
  }
  std::_Exit(6);  // 1000 threads fitted after all: the limit did not bite
}

TEST(ThreadPoolStartFailure, StartedWorkersAreJoinedAndAnErrorIsThrown) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(start_pool_under_address_space_limit(), testing::ExitedWithCode(0),
              "cannot start 1000 threads: only [0-9]+ started");
}

TEST(ThreadPoolStartFailure, LimitIsFourTimesTheLogicalCpus) {
  EXPECT_EQ(max_thread_count(), 4 * std::max(1, int(std::thread::hardware_concurrency())));
}

}  // namespace
}  // namespace lockstep
