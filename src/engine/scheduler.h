// Continuous batching: one thread owns a multi-sequence backend (BackendOptions::n_seq slots) and
// serves many generation requests at once. Requests wait in a bounded queue; between steps they
// join free slots and finished ones leave. Each step is ONE Backend::forward_batch holding, per
// busy slot, either the next chunk of its prompt (at most prompt_chunk tokens, so a long prompt
// is ingested over several steps while the other slots keep decoding) or its one newly sampled
// token. Every slot then samples, streams and checks its own end exactly as a Session does for a
// single sequence (engine/generator.h), and because forward_batch gives every row exactly what
// the sequence alone would get, a request's tokens do not depend on what else is being served.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "engine/sampler.h"
#include "tokenizer/vocab.h"
#include "util/thread_pool.h"

namespace lockstep {

// What a request hears from the scheduler. Events come in order: zero or more pieces, then
// exactly one final event (done = true). Callbacks run one at a time on the scheduler's relay
// thread (engine/event_relay.h) while the next step computes; a slow one delays every request's
// events, so the HTTP layer only hands them to the connection's own thread.
struct StreamEvent {
  std::string_view text;  // text now safe to show (valid UTF-8, no part of a stop string)
  int32_t token = -1;     // the token sampled this step (-1 on an event that carries none)
  bool done = false;
  // On the final event: "eos" (end-of-generation token), "stop" (a stop string), "length"
  // (max_tokens or a full context), "cancelled", or "error" (then `error` says what).
  std::string_view finish_reason;
  bool context_full = false;  // "length" because the context ran out
  std::string_view error;
  int prompt_tokens = 0;      // the prompt's length
  int completion_tokens = 0;  // tokens sampled so far (an end-of-generation token included)
  // With the token, when the request asked for logprobs (valid during the callback only).
  const TokenLogprobs* logprobs = nullptr;
};

using StreamCallback = std::function<void(const StreamEvent&)>;

struct ScheduledRequest {
  std::vector<int32_t> prompt;  // the whole context to generate after (at least one token)
  SamplingParams sampling;
  int max_tokens = -1;  // -1: until end of generation or a full context
  std::vector<std::string> stop;
  // -1: no log-probabilities. N >= 0: every sampled token's event carries its log-probability
  // and the N most likely alternatives (token_logprobs over the logits it was sampled from).
  int logprobs = -1;
  StreamCallback on_event;
  // Set (from any thread) to end the request: its slot is freed within one step and it gets a
  // final event with finish_reason "cancelled". May be null.
  std::shared_ptr<std::atomic<bool>> cancel;
  // Set for a request sampled for an online parity audit (engine/audit.h): the scheduler keeps
  // the logits row (n_vocab floats) of every token it samples and hands the tokens and rows to
  // this when the request ends normally (eos, stop, length; not on an error or cancellation).
  std::function<void(std::vector<int32_t> generated, std::vector<float> rows)> on_logits;
};

inline constexpr int kMaxTopLogprobs = 20;

struct SubmitResult {
  enum class Status {
    kAccepted,  // queued; events will follow
    kBusy,      // the queue is full: try again later (HTTP 503 + Retry-After)
    kRejected,  // the request itself is unusable: `error` says why (HTTP 400)
    kStopped,   // the scheduler is shutting down (HTTP 503)
  };
  Status status = Status::kAccepted;
  std::string error;
  bool accepted() const { return status == Status::kAccepted; }
};

struct SchedulerOptions {
  size_t queue_capacity = 64;  // requests waiting for a slot; more are answered kBusy
  int prompt_chunk = 256;      // prompt tokens a slot feeds per step
  // Threads that sample the slots of a step side by side: each row is a pass over the whole
  // vocabulary (151 936 logits for Qwen), and a GPU's step of 64 rows is about as short as the
  // 64 passes on one thread (bench/NOTES.md). <= 0: min(8, the physical cores).
  int sample_threads = 0;
};

// Where the scheduler thread's time went, summed over its steps (for /metrics).
struct StepTimes {
  int64_t steps = 0;
  int64_t rows = 0;      // sequences over all steps (rows / steps: the mean batch)
  double forward_s = 0;  // in Backend::forward_batch
  double host_s = 0;     // sampling, detokenizing, stop strings, posting the events
};

class EventRelay;

class Scheduler {
 public:
  // Takes the backend over (its n_seq() slots serve) and starts the scheduler thread. The
  // vocabulary must outlive the scheduler.
  Scheduler(std::unique_ptr<Backend> backend, const tokenizer::Vocab& vocab,
            SchedulerOptions options = {});
  ~Scheduler();  // shutdown(0): cancels whatever still runs
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request, or says why not. kRejected (checked here, before admission): empty prompt,
  // a token id outside the vocabulary, a prompt longer than the context, max_tokens < -1, bad
  // sampling parameters, logprobs outside [-1, kMaxTopLogprobs].
  SubmitResult submit(ScheduledRequest request);

  // Stops admitting (submit answers kStopped), lets running and queued requests finish for at
  // most `grace`, then cancels the rest (queued ones get an "error" event), joins the thread and
  // returns once every event has been delivered. Idempotent.
  void shutdown(std::chrono::milliseconds grace);

  // Runs `task` on the scheduler thread once no slot is busy (admissions wait meanwhile), with
  // the backend to itself: the parity gate's re-probe of a quarantined backend. Returns when it
  // has run and rethrows what it threw; throws Error when the scheduler stops first.
  void run_when_idle(const std::function<void(Backend&)>& task);

  int n_slots() const { return n_slots_; }
  int n_ctx() const { return n_ctx_; }
  const Backend& backend() const { return *backend_; }
  // Snapshots, for /health and tests.
  int active_slots() const { return active_.load(); }
  size_t queued() const;
  int64_t steps() const { return steps_.load(); }
  StepTimes step_times() const;

 private:
  struct Slot;
  void run();
  bool admit(std::unique_lock<std::mutex>& lock);
  void step();
  void finish(Slot& slot, std::string_view reason, std::string_view error = {});
  // Posts an event to the relay; delivered once the step (or admission) is over.
  void notify(const ScheduledRequest& req, const StreamEvent& ev);
  bool run_idle_task(std::unique_lock<std::mutex>& lock);
  size_t audit_rows_to_reserve(const Slot& slot) const;
  bool pending_idle_task() const { return idle_task_ && !idle_done_; }

  std::unique_ptr<Backend> backend_;
  const tokenizer::Vocab& vocab_;
  SchedulerOptions options_;
  int n_slots_ = 1;
  int n_ctx_ = 0;
  size_t n_logits_ = 0;  // the backend's logit row (n_vocab)
  size_t n_sample_ = 0;  // ids that can be sampled: those the vocabulary can turn into text

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<ScheduledRequest> queue_;
  bool stopping_ = false;  // no more admissions
  std::chrono::steady_clock::time_point deadline_;
  bool joined_ = false;
  // run_when_idle's task (null: none) and whether it has run.
  const std::function<void(Backend&)>* idle_task_ = nullptr;
  std::exception_ptr idle_error_;
  bool idle_done_ = false;
  bool thread_exited_ = false;
  std::condition_variable idle_cv_;

  std::vector<std::unique_ptr<Slot>> slots_;  // scheduler thread only
  std::atomic<int> active_{0};
  std::atomic<int64_t> steps_{0};
  mutable std::mutex times_mutex_;
  StepTimes times_;
  std::unique_ptr<ThreadPool> sample_pool_;
  std::unique_ptr<EventRelay> relay_;  // delivers the events the scheduler thread posts
  std::thread thread_;
};

}  // namespace lockstep
