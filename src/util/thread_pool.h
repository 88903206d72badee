// A persistent pool of worker threads for data-parallel loops. Decode calls parallel_for about ten
// times per layer, so a call must cost microseconds, not a thread start: workers stay alive, spin
// briefly for the next job and then sleep on a futex (std::atomic::wait), and the calling thread
// takes part in the work.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace lockstep {

// Physical cores this process may run on (hyper-threads of one core count once); at least 1.
int default_thread_count();

// The most threads a user may ask for: 4x the logical CPUs. More only adds contention, and
// thousands of threads take minutes to start or exhaust memory.
int max_thread_count();

class ThreadPool {
 public:
  // n_threads counts the calling thread: ThreadPool(1) runs everything inline. n_threads <= 0
  // means default_thread_count(). Throws Error when a worker thread cannot be started (the
  // workers already started are stopped and joined first).
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end) or fn(begin, end, thread) over disjoint ranges covering [0, n), and
  // returns when all are done. `thread` in [0, size()) identifies the executing thread, so fn can
  // use per-thread scratch; one thread never runs two ranges at the same time. Ranges are handed
  // out dynamically in pieces of at least `grain` items (a loaded machine does not stall the
  // whole loop on one slow thread). The first exception thrown by fn is rethrown here after every
  // range has finished. Calls from several threads are serialised; a nested call from inside fn
  // runs inline on the calling thread.
  template <typename Fn>
  void parallel_for(int64_t n, Fn&& fn, int64_t grain = 1) {
    using F = std::remove_reference_t<Fn>;
    Job job;
    job.ctx = const_cast<void*>(static_cast<const void*>(&fn));
    job.call = [](void* ctx, int64_t b, int64_t e, int t) {
      F& f = *static_cast<F*>(ctx);
      if constexpr (std::is_invocable_v<F&, int64_t, int64_t, int>) {
        f(b, e, t);
      } else {
        (void)t;
        f(b, e);
      }
    };
    run(n, grain, job);
  }

 private:
  struct Job {
    void* ctx = nullptr;
    void (*call)(void*, int64_t, int64_t, int) = nullptr;
  };

  void run(int64_t n, int64_t grain, const Job& job);
  void work(int thread);  // take pieces of the current job until none are left
  void worker_main(int thread);
  void stop_workers();  // wake every worker with stop_ set and join it

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time

  // The current job; written by run() before `generation_` is bumped, read by workers after.
  Job job_;
  int64_t n_ = 0;
  int64_t piece_ = 1;
  std::atomic<int64_t> next_{0};         // next unclaimed index
  std::atomic<uint64_t> generation_{0};  // bumped once per job; workers wait on it
  std::atomic<int> busy_{0};             // workers still inside the current job
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
  std::mutex error_mutex_;
};

}  // namespace lockstep
