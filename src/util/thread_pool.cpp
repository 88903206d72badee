#include "util/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <system_error>
#include <utility>

#include "util/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lockstep {

namespace {

// The pool whose job the current thread is running, and its index there (nested calls run
// inline instead of deadlocking on call_mutex_).
thread_local const ThreadPool* tls_pool = nullptr;
thread_local int tls_thread = 0;

// About 10-50 microseconds of polling before sleeping: long enough to bridge the gap between two
// parallel_for calls of one decode step, short enough not to burn a shared machine's cores.
constexpr int kSpinIterations = 4000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

bool read_int(const std::string& path, long& value) {
  std::ifstream in(path);
  return static_cast<bool>(in >> value);
}

// Whole CPUs granted by a cgroup v2 quota ("max 100000" = unlimited); 0 when none applies.
int cgroup_cpu_limit() {
  std::ifstream in("/sys/fs/cgroup/cpu.max");
  std::string quota;
  long period = 0;
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return 0;
  long q = std::stol(quota);
  return int(std::max(1L, (q + period - 1) / period));
}

}  // namespace

int default_thread_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int logical = 0;
  std::set<std::pair<long, long>> cores;  // (package, core) pairs
  bool topology_ok = sched_getaffinity(0, sizeof(set), &set) == 0;
  if (topology_ok) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &set)) continue;
      ++logical;
      const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
      long package = 0, core = 0;
      if (!read_int(dir + "physical_package_id", package) || !read_int(dir + "core_id", core)) {
        topology_ok = false;
        continue;
      }
      cores.insert({package, core});
    }
  }
  int n = topology_ok && !cores.empty() ? int(cores.size())
          : logical > 0                 ? logical
                                        : int(std::thread::hardware_concurrency());
  if (int limit = cgroup_cpu_limit(); limit > 0) n = std::min(n, limit);
  return std::max(1, n);
}

int max_thread_count() {
  return 4 * std::max(1, int(std::thread::hardware_concurrency()));
}

ThreadPool::ThreadPool(int n_threads) {
  n_threads_ = std::clamp(n_threads > 0 ? n_threads : default_thread_count(), 1, 1024);
  workers_.reserve(size_t(n_threads_ - 1));
  try {
    for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker_main(t); });
  } catch (const std::system_error& e) {
    // The destructor does not run for a half-built object, and a joinable std::thread destroyed
    // with workers_ would call std::terminate: stop the started workers here.
    const size_t started = workers_.size();
    stop_workers();
    throw Error("cannot start " + std::to_string(n_threads_) + " threads: only " +
                std::to_string(started + 1) + " started (" + e.what() + ")");
  }
}

ThreadPool::~ThreadPool() {
  stop_workers();
}

void ThreadPool::stop_workers() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
}

void ThreadPool::run(int64_t n, int64_t grain, const Job& job) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (n_threads_ == 1 || n <= grain || tls_pool == this) {
    job.call(job.ctx, 0, n, tls_pool == this ? tls_thread : 0);
    return;
  }
  std::lock_guard<std::mutex> lock(call_mutex_);
  job_ = job;
  n_ = n;
  // About four pieces per thread: enough to rebalance when a thread is descheduled, few enough
  // that claiming them costs nothing.
  piece_ = std::max(grain, (n + 4 * n_threads_ - 1) / (4 * n_threads_));
  next_.store(0, std::memory_order_relaxed);
  error_ = nullptr;
  busy_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();

  tls_pool = this;
  tls_thread = 0;
  work(0);
  tls_pool = nullptr;

  int spins = 0;
  for (int b = busy_.load(std::memory_order_acquire); b != 0;
       b = busy_.load(std::memory_order_acquire)) {
    if (spins < kSpinIterations) {
      ++spins;
      cpu_relax();
    } else {
      busy_.wait(b, std::memory_order_acquire);
    }
  }
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void ThreadPool::work(int thread) {
  for (;;) {
    const int64_t begin = next_.fetch_add(piece_, std::memory_order_relaxed);
    if (begin >= n_) return;
    const int64_t end = std::min(begin + piece_, n_);
    try {
      job_.call(job_.ctx, begin, end, thread);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::worker_main(int thread) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spins = 0; g == seen && spins < kSpinIterations; ++spins) {
      cpu_relax();
      g = generation_.load(std::memory_order_acquire);
    }
    while (g == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load(std::memory_order_relaxed)) return;
    tls_pool = this;
    tls_thread = thread;
    work(thread);
    tls_pool = nullptr;
    if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) busy_.notify_one();
  }
}

}  // namespace lockstep
