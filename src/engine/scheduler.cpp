#include "engine/scheduler.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "backend/greedy_pick.h"
#include "engine/event_relay.h"
#include "engine/stop_filter.h"
#include "util/error.h"

namespace lockstep {

// One sequence of the backend and the request it serves. Touched by the scheduler thread only.
struct Scheduler::Slot {
  int seq = 0;
  bool busy = false;
  ScheduledRequest req;
  size_t fed = 0;  // prompt tokens in the cache
  std::optional<Sampler> sampler;
  std::optional<tokenizer::StreamingDetokenizer> detok;
  std::optional<StopFilter> stops;
  std::vector<float> logits;
  float* row = nullptr;  // where this step's logits row lands: `logits`, or audit_rows' end
  int32_t pending = -1;  // the sampled token the next step feeds
  // The backend's greedy pick for this step (SeqTokens::argmax), when the slot asked for it
  // instead of the logits row: plain greedy sampling, no logprobs, no audit.
  int32_t picked = -1;
  bool pick_only = false;
  // This step's sample (filled side by side on the sample pool, then used in slot order).
  int32_t sampled = 0;
  std::string sample_error;
  TokenLogprobs sampled_logprobs;
  std::string shown;  // the text the sampled token adds, after the stop filter
  int generated = 0;
  // An audited request's sampled tokens and their logits rows (ScheduledRequest::on_logits).
  std::vector<int32_t> audit_tokens;
  std::vector<float> audit_rows;
};

Scheduler::Scheduler(std::unique_ptr<Backend> backend, const tokenizer::Vocab& vocab,
                     SchedulerOptions options)
    : backend_(std::move(backend)), vocab_(vocab), options_(options) {
  if (!backend_) throw Error("scheduler: no backend");
  if (options_.prompt_chunk < 1) throw Error("scheduler: prompt_chunk must be >= 1");
  n_slots_ = backend_->n_seq();
  n_ctx_ = backend_->n_ctx();
  n_logits_ = size_t(backend_->model().hp.n_vocab);
  n_sample_ = std::min(n_logits_, size_t(vocab_.n_tokens()));
  relay_ = std::make_unique<EventRelay>();
  sample_pool_ = std::make_unique<ThreadPool>(
      options_.sample_threads > 0 ? options_.sample_threads : std::min(8, default_thread_count()));
  for (int s = 0; s < n_slots_; ++s) {
    auto slot = std::make_unique<Slot>();
    slot->seq = s;
    slot->logits.resize(n_logits_);
    slots_.push_back(std::move(slot));
  }
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  shutdown(std::chrono::milliseconds(0));
}

StepTimes Scheduler::step_times() const {
  std::lock_guard<std::mutex> lock(times_mutex_);
  return times_;
}

size_t Scheduler::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

SubmitResult Scheduler::submit(ScheduledRequest request) {
  auto reject = [](std::string why) {
    return SubmitResult{SubmitResult::Status::kRejected, std::move(why)};
  };
  if (request.prompt.empty()) return reject("the prompt is empty (no tokens to process)");
  for (int32_t t : request.prompt)
    if (!vocab_.valid(t) || size_t(t) >= n_logits_)
      return reject("prompt token id " + std::to_string(t) + " is outside the vocabulary");
  if (int64_t(request.prompt.size()) > n_ctx_)
    return reject("the prompt needs " + std::to_string(request.prompt.size()) +
                  " positions but the context holds " + std::to_string(n_ctx_) +
                  " (shorten the prompt, or restart the server with a larger -c)");
  if (request.max_tokens < -1)
    return reject("max_tokens must be >= 0, got " + std::to_string(request.max_tokens));
  if (request.logprobs < -1 || request.logprobs > kMaxTopLogprobs)
    return reject("logprobs must be in [-1, " + std::to_string(kMaxTopLogprobs) + "], got " +
                  std::to_string(request.logprobs));
  if (std::string err = validate(request.sampling); !err.empty()) return reject(err);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return {SubmitResult::Status::kStopped, "the server is shutting down"};
    if (queue_.size() >= options_.queue_capacity)
      return {SubmitResult::Status::kBusy,
              "all " + std::to_string(n_slots_) + " slots are busy and " +
                  std::to_string(queue_.size()) + " requests are waiting; try again later"};
    queue_.push_back(std::move(request));
  }
  wake_.notify_one();
  return {};
}

void Scheduler::shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_) {
      stopping_ = true;
      deadline_ = std::chrono::steady_clock::now() + grace;
    } else {
      deadline_ = std::min(deadline_, std::chrono::steady_clock::now() + grace);
    }
    if (joined_) return;
    joined_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  relay_->drain();
}

void Scheduler::notify(const ScheduledRequest& req, const StreamEvent& ev) {
  relay_->post(req.on_event, ev);
}

namespace {

bool cancelled(const ScheduledRequest& req) {
  return req.cancel && req.cancel->load();
}

}  // namespace

void Scheduler::finish(Slot& slot, std::string_view reason, std::string_view error) {
  StreamEvent ev;
  ev.done = true;
  ev.prompt_tokens = int(slot.req.prompt.size());
  ev.completion_tokens = slot.generated;
  std::string tail;
  const bool ended_normally = reason == "eos" || reason == "length";
  if (ended_normally && slot.stops && !slot.stops->stopped()) {
    // As Session::generate: an incomplete UTF-8 tail becomes U+FFFD; held-back text that never
    // became a stop string is released.
    tail = slot.stops->push(slot.detok->flush());
    if (slot.stops->stopped())
      reason = "stop";
    else
      tail += slot.stops->flush();
  }
  ev.text = tail;
  ev.finish_reason = reason;
  ev.context_full = reason == "length" && slot.fed > 0 && backend_->seq_past(slot.seq) >= n_ctx_ &&
                    !(slot.req.max_tokens >= 0 && slot.generated >= slot.req.max_tokens);
  ev.error = error;
  // The slot is free before the request hears its end, so that a caller woken by the final
  // event sees it free.
  const ScheduledRequest req = std::move(slot.req);
  slot.req = ScheduledRequest{};
  if (req.on_logits && (ended_normally || reason == "stop"))
    req.on_logits(std::move(slot.audit_tokens), std::move(slot.audit_rows));
  slot.audit_tokens = {};
  slot.audit_rows = {};
  slot.busy = false;
  slot.sampler.reset();
  slot.detok.reset();
  slot.stops.reset();
  --active_;
  notify(req, ev);
}

// Moves queued requests into free slots (under the lock); their callbacks run after it is
// released. Returns false when the thread should end.
bool Scheduler::admit(std::unique_lock<std::mutex>& lock) {
  std::vector<ScheduledRequest> dropped;  // cancelled while waiting
  std::vector<Slot*> joined;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (cancelled(*it)) {
      dropped.push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& slot : slots_) {
    if (queue_.empty() || pending_idle_task()) break;  // an idle task waits for the slots to drain
    if (slot->busy) continue;
    slot->req = std::move(queue_.front());
    queue_.pop_front();
    slot->busy = true;
    ++active_;
    joined.push_back(slot.get());
  }
  const bool expired = stopping_ && std::chrono::steady_clock::now() >= deadline_;
  std::vector<ScheduledRequest> refused;  // still queued when the grace period ran out
  if (expired) {
    refused.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
    queue_.clear();
  }
  const bool idle_stop = stopping_ && queue_.empty() && active_.load() == 0;
  lock.unlock();

  for (const auto& req : dropped) {
    StreamEvent ev;
    ev.done = true;
    ev.finish_reason = "cancelled";
    ev.prompt_tokens = int(req.prompt.size());
    notify(req, ev);
  }
  for (const auto& req : refused) {
    StreamEvent ev;
    ev.done = true;
    ev.finish_reason = "error";
    ev.error = "the server shut down before the request was started";
    ev.prompt_tokens = int(req.prompt.size());
    notify(req, ev);
  }
  for (Slot* slot : joined) {
    backend_->truncate_seq(slot->seq, 0);
    slot->fed = 0;
    slot->pending = -1;
    slot->generated = 0;
    slot->sampler.emplace(slot->req.sampling);
    for (int32_t t : slot->req.prompt) slot->sampler->accept(t);
    slot->detok.emplace(vocab_);
    slot->stops.emplace(slot->req.stop);
    if (slot->req.max_tokens == 0) finish(*slot, "length");
  }
  if (expired)
    for (auto& slot : slots_)
      if (slot->busy) finish(*slot, "cancelled");
  relay_->flush();

  lock.lock();
  return !(idle_stop || (expired && queue_.empty() && active_.load() == 0));
}

void Scheduler::run_when_idle(const std::function<void(Backend&)>& task) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopping_) throw Error("scheduler: stopped before the task could run");
  idle_cv_.wait(lock, [&] { return idle_task_ == nullptr; });  // one task at a time
  idle_task_ = &task;
  idle_done_ = false;
  idle_error_ = nullptr;
  wake_.notify_all();
  idle_cv_.wait(lock, [&] { return idle_done_ || thread_exited_; });
  const bool ran = idle_done_;
  idle_task_ = nullptr;
  idle_done_ = false;
  std::exception_ptr error = std::exchange(idle_error_, nullptr);
  idle_cv_.notify_all();
  if (!ran) throw Error("scheduler: stopped before the task could run");
  if (error) std::rethrow_exception(error);
}

// Runs the idle task (called with the lock held, no slot busy); false when there is none.
bool Scheduler::run_idle_task(std::unique_lock<std::mutex>& lock) {
  if (!idle_task_ || idle_done_) return false;
  const auto* task = idle_task_;
  lock.unlock();
  std::exception_ptr error;
  try {
    (*task)(*backend_);
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  idle_error_ = error;
  idle_done_ = true;
  idle_cv_.notify_all();
  return true;
}

void Scheduler::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (active_.load() == 0 && run_idle_task(lock)) continue;
    if (!admit(lock)) break;
    if (active_.load() == 0) {
      if (!queue_.empty() && !pending_idle_task()) continue;
      if (stopping_)
        wake_.wait_until(lock, deadline_, [&] { return !queue_.empty(); });
      else
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || pending_idle_task(); });
      continue;
    }
    lock.unlock();
    step();
    relay_->flush();  // the clients hear about this step while the next one runs
    lock.lock();
  }
  relay_->flush();
  thread_exited_ = true;
  idle_cv_.notify_all();
}

namespace {

// Whether a batch item asked for the prediction after its tokens (a row or a greedy pick).
bool predicts(const SeqTokens& item) {
  return item.logits || item.argmax;
}

}  // namespace

// Rows an audited request will most likely keep: its max_tokens or what the context leaves,
// at most 256 (beyond that the vector grows as usual).
size_t Scheduler::audit_rows_to_reserve(const Slot& slot) const {
  const int64_t left = slot.req.max_tokens >= 0
                           ? int64_t(slot.req.max_tokens)
                           : int64_t(n_ctx_) - int64_t(slot.req.prompt.size()) + 1;
  return size_t(std::clamp<int64_t>(left, 1, 256));
}

void Scheduler::step() {
  std::vector<SeqTokens> batch;
  std::vector<Slot*> in_batch;
  for (auto& owned : slots_) {
    Slot& slot = *owned;
    if (!slot.busy) continue;
    if (cancelled(slot.req)) {
      finish(slot, "cancelled");
      continue;
    }
    const auto& prompt = slot.req.prompt;
    SeqTokens item;
    item.seq = slot.seq;
    bool wants_next = true;
    if (slot.fed < prompt.size()) {
      const size_t n = std::min(prompt.size() - slot.fed, size_t(options_.prompt_chunk));
      item.tokens = std::span<const int32_t>(prompt).subspan(slot.fed, n);
      // Only the chunk that completes the prompt needs the prediction after it.
      wants_next = slot.fed + n == prompt.size();
    } else {
      item.tokens = {&slot.pending, 1};
    }
    slot.pick_only =
        wants_next && slot.sampler->plain_greedy() && slot.req.logprobs < 0 && !slot.req.on_logits;
    if (slot.pick_only) {
      item.argmax = &slot.picked;
      item.argmax_cols = int(n_sample_);
    } else if (wants_next) {
      slot.row = slot.logits.data();
      if (slot.req.on_logits) {
        // An audited request keeps every row: the backend writes it straight into audit_rows,
        // whose room for the expected rows was reserved once (growing a row at a time would copy
        // the rows kept so far on every reallocation, on the serving thread).
        const size_t kept = slot.audit_rows.size();
        if (kept == 0) slot.audit_rows.reserve(audit_rows_to_reserve(slot) * n_logits_);
        slot.audit_rows.resize(kept + n_logits_);
        slot.row = slot.audit_rows.data() + kept;
      }
      item.logits = slot.row;
    }
    batch.push_back(item);
    in_batch.push_back(&slot);
  }
  if (batch.empty()) return;

  const auto t0 = std::chrono::steady_clock::now();
  try {
    backend_->forward_batch(batch);
  } catch (const std::exception& e) {
    // Nothing was computed for anyone (forward_batch validates first) or the backend failed
    // midway: either way no slot of this batch can go on.
    for (Slot* slot : in_batch) finish(*slot, "error", e.what());
    return;
  }
  ++steps_;
  const auto t1 = std::chrono::steady_clock::now();

  // Each slot samples from its own row with its own sampler, detokenizer and stop filter: side
  // by side on the sample pool. Then, in slot order on this thread, the events and the ends.
  sample_pool_->parallel_for(int64_t(batch.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Slot& slot = *in_batch[size_t(i)];
      if (slot.fed < slot.req.prompt.size()) slot.fed += batch[size_t(i)].tokens.size();
      if (!predicts(batch[size_t(i)])) continue;
      slot.sample_error.clear();
      slot.shown.clear();
      try {
        if (slot.pick_only && slot.picked == kNoGreedyPick)
          throw Error("sampler: the backend produced a NaN or +inf logit, or none finite");
        const int32_t token =
            slot.pick_only ? slot.picked : slot.sampler->sample({slot.row, n_sample_});
        slot.sampled = token;
        if (slot.req.logprobs >= 0 && !vocab_.is_eog(token))  // the end token is not text
          slot.sampled_logprobs = token_logprobs({slot.row, n_sample_}, token, slot.req.logprobs);
        slot.sampler->accept_generated(token);
        if (slot.req.on_logits) {
          slot.audit_tokens.push_back(token);  // its row is already at audit_rows' end
        }
        if (!vocab_.is_eog(token)) slot.shown = slot.stops->push(slot.detok->push(token));
      } catch (const std::exception& e) {
        slot.sample_error = e.what();
        if (slot.sample_error.empty()) slot.sample_error = "sampling failed";
      }
    }
  });

  for (size_t i = 0; i < batch.size(); ++i) {
    Slot& slot = *in_batch[i];
    if (!predicts(batch[i])) continue;
    if (!slot.sample_error.empty()) {
      finish(slot, "error", slot.sample_error);
      continue;
    }
    const int32_t token = slot.sampled;
    ++slot.generated;
    StreamEvent ev;
    ev.token = token;
    if (slot.req.logprobs >= 0 && !vocab_.is_eog(token)) ev.logprobs = &slot.sampled_logprobs;
    ev.prompt_tokens = int(slot.req.prompt.size());
    ev.completion_tokens = slot.generated;
    if (vocab_.is_eog(token)) {
      notify(slot.req, ev);
      finish(slot, "eos");
      continue;
    }
    ev.text = slot.shown;
    notify(slot.req, ev);
    if (slot.stops->stopped()) {
      finish(slot, "stop");
    } else if (slot.req.max_tokens >= 0 && slot.generated >= slot.req.max_tokens) {
      finish(slot, "length");
    } else if (backend_->seq_past(slot.seq) >= n_ctx_) {
      finish(slot, "length");
    } else {
      slot.pending = token;
    }
  }
  const auto t2 = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(times_mutex_);
  ++times_.steps;
  times_.rows += int64_t(batch.size());
  times_.forward_s += std::chrono::duration<double>(t1 - t0).count();
  times_.host_s += std::chrono::duration<double>(t2 - t1).count();
}

}  // namespace lockstep
