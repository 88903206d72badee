#include "server/serving_guard.h"

#include <cmath>
#include <cstdio>

#include "backend/registry.h"
#include "parity/probe.h"
#include "server/api_error.h"
#include "util/error.h"

namespace lockstep::server {

namespace {

using Clock = std::chrono::steady_clock;
using ojson = nlohmann::ordered_json;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// NaN and infinities have no JSON spelling: null.
ojson finite_or_null(double v) {
  return std::isfinite(v) ? ojson(v) : ojson(nullptr);
}

void keep(std::deque<ojson>& list, ojson item, size_t limit) {
  list.push_back(std::move(item));
  while (list.size() > limit) list.pop_front();
}

}  // namespace

ServingGuard::ServingGuard(const Model& model, const tokenizer::Vocab& vocab, Scheduler& candidate,
                           std::string candidate_name, ParityVerdict load_verdict,
                           GuardOptions options)
    : model_(model),
      vocab_(vocab),
      candidate_(candidate),
      candidate_name_(std::move(candidate_name)),
      load_verdict_(std::move(load_verdict)),
      options_(std::move(options)),
      audits_on_((options_.audit_rate > 0 || options_.audit_every > 0) &&
                 candidate_name_ != reference_backend_entry().name) {
  if (audits_on_) {
    AuditorOptions a;
    a.threads = options_.audit_threads;
    a.n_ctx = candidate_.n_ctx();
    a.queue_capacity = options_.audit_queue;
    a.parity = options_.parity;
    a.backend = options_.backend;
    auditor_ = std::make_unique<Auditor>(model_, a, [this](const AuditResult& r) { on_audit(r); });
    policy_thread_ = std::thread([this] { policy_loop(); });
  }
}

ServingGuard::~ServingGuard() {
  shutdown(std::chrono::milliseconds(0));
}

void ServingGuard::shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  candidate_.shutdown(grace);
  Scheduler* fallback = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fallback = fallback_.get();
  }
  if (fallback) fallback->shutdown(grace);
  // A re-probe waiting for the candidate's scheduler has been told it stopped by now.
  if (policy_thread_.joinable()) policy_thread_.join();
  auditor_.reset();
}

bool ServingGuard::sampled() {
  // Called under mutex_. Deterministic spacing: request n (0-based) is audited when n * rate
  // crosses an integer, so rate 1 audits all and 0.02 every 50th.
  const uint64_t n = next_request_;
  if (options_.audit_every > 0) return (n + 1) % uint64_t(options_.audit_every) == 0;
  return std::floor(double(n + 1) * options_.audit_rate) >
         std::floor(double(n) * options_.audit_rate);
}

ServingGuard::Routed ServingGuard::submit(ScheduledRequest request) {
  Routed routed;
  Scheduler* target = &candidate_;
  bool audit = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ == State::Failed)
      throw unavailable("the " + candidate_name_ +
                            " backend failed an online parity audit and --on-drift fail (or a "
                            "forced backend / --parity strict) stops serving; restart the server",
                        "parity_failed", 0);
    if (state_ == State::Quarantined && fallback_) target = fallback_.get();
    routed.request_id = "req-" + std::to_string(next_request_ + 1);
    audit = audits_on_ && target == &candidate_ && sampled();
    ++next_request_;
    if (audit && !auditor_->reserve()) {
      audit = false;
      ++audits_dropped_;
    }
  }
  routed.backend = target == &candidate_ ? candidate_name_ : reference_backend_entry().name;

  auto consumed = std::make_shared<std::atomic<bool>>(!audit);
  if (audit) {
    request.on_logits = [this, consumed, id = routed.request_id, prompt = request.prompt](
                            std::vector<int32_t> generated, std::vector<float> rows) {
      consumed->store(true);
      if (generated.empty()) {
        auditor_->release();
        return;
      }
      auditor_->submit(AuditJob{id, prompt, std::move(generated), std::move(rows)});
    };
  }
  const auto start = Clock::now();
  auto last = std::make_shared<Clock::time_point>();
  request.on_event = [this, inner = std::move(request.on_event), start, last,
                      consumed](const StreamEvent& ev) {
    if (ev.token >= 0) {
      const auto now = Clock::now();
      if (*last == Clock::time_point{})
        requests_.first_token(seconds_between(start, now));
      else
        requests_.next_token(seconds_between(*last, now));
      *last = now;
    }
    if (ev.done) {
      requests_.finished(ev.prompt_tokens, ev.completion_tokens, ev.finish_reason);
      if (!consumed->exchange(true)) auditor_->release();  // failed or cancelled: no audit
    }
    if (inner) inner(ev);
  };
  routed.result = target->submit(std::move(request));
  if (!routed.result.accepted()) {
    if (!consumed->exchange(true)) auditor_->release();
  } else {
    requests_.started(routed.backend);
  }
  return routed;
}

void ServingGuard::on_audit(const AuditResult& r) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++audits_run_;
    if (!r.passed) ++audits_failed_;
    if (!(r.worst_cosine >= worst_cosine_)) worst_cosine_ = r.worst_cosine;  // NaN sticks
    worst_kl_ = std::max(worst_kl_, r.worst_kl);
    keep(recent_audits_,
         {{"request", r.request_id},
          {"time_ms", unix_ms()},
          {"prompt_tokens", r.prompt_tokens},
          {"generated_tokens", r.generated_tokens},
          {"passed", r.passed},
          {"worst_cosine", finite_or_null(r.worst_cosine)},
          {"worst_kl", finite_or_null(r.worst_kl)},
          {"failure", r.failure},
          {"ms", r.ms}},
         options_.history);
    if (!r.passed && state_ == State::Serving) drift_pending_ = true;
  }
  if (!r.passed) {
    std::fprintf(stderr, "%s %s path rejected while serving: %s\n", kParityTag,
                 candidate_name_.c_str(), r.failure.c_str());
    std::fflush(stderr);
    wake_.notify_all();
  }
}

void ServingGuard::policy_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    const bool waiting_reprobe = state_ == State::Quarantined;
    auto ready = [&] { return stopping_ || drift_pending_; };
    if (waiting_reprobe)
      wake_.wait_until(lock, reprobe_at_, ready);
    else
      wake_.wait(lock, ready);
    if (stopping_) return;
    if (drift_pending_) {
      drift_pending_ = false;
      if (options_.on_drift == DriftPolicy::Log) continue;
      if (options_.on_drift == DriftPolicy::Fail || !options_.may_fall_back) {
        state_ = State::Failed;
        std::fprintf(stderr,
                     "lockstep serve: %s failed an audit; new requests are refused (503) from "
                     "now on (%s)\n",
                     candidate_name_.c_str(),
                     options_.on_drift == DriftPolicy::Fail
                         ? "--on-drift fail"
                         : "the backend was forced or --parity strict: no fallback");
        continue;
      }
      if (!fallback_) {
        // Created here, on a thread of normal priority (the auditor's threads run at nice 19),
        // with the serving backend's slots and context.
        lock.unlock();
        std::unique_ptr<Scheduler> fallback;
        try {
          BackendOptions o = options_.backend;
          o.fault.reset();
          fallback =
              std::make_unique<Scheduler>(create_reference(model_, o), vocab_, options_.scheduler);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "lockstep serve: cannot open the reference to fall back to: %s\n",
                       e.what());
        }
        lock.lock();
        if (!fallback) {
          state_ = State::Failed;
          continue;
        }
        fallback_ = std::move(fallback);
        if (stopping_) return;
      }
      state_ = State::Quarantined;
      ++quarantines_;
      reprobe_at_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(options_.reprobe_after_s));
      std::fprintf(
          stderr, "lockstep serve: %s quarantined: new requests go to %s; re-probe in %.0f s\n",
          candidate_name_.c_str(), reference_backend_entry().name, options_.reprobe_after_s);
      std::fflush(stderr);
      continue;
    }
    if (state_ == State::Quarantined && Clock::now() >= reprobe_at_) {
      lock.unlock();
      reprobe();
      lock.lock();
    }
  }
}

// The gate's probe (the built-in text) on the candidate, once its in-flight requests are done:
// the reference's half on the auditor's reference, the candidate's on its scheduler thread.
void ServingGuard::reprobe() {
  ParityVerdict verdict;
  std::string error;
  try {
    const Probe probe = make_probe(vocab_, {}, options_.parity.positions, options_.parity.steps,
                                   candidate_.n_ctx());
    const ReferenceProbe ref = auditor_->reference_probe(probe.tokens, options_.parity.steps);
    candidate_.run_when_idle([&](Backend& backend) {
      verdict = ParityComparison::compare_with(ref, backend, probe.tokens, options_.parity, true);
      for (int s = 0; s < backend.n_seq(); ++s) backend.truncate_seq(s, 0);
    });
  } catch (const std::exception& e) {
    error = e.what();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return;
  const bool passed = error.empty() && verdict.status == ParityVerdict::Status::Passed;
  keep(recent_reprobes_,
       {{"time_ms", unix_ms()},
        {"status", error.empty() ? verdict.status_name() : "error"},
        {"summary", error.empty() ? verdict.summary() : error},
        {"failure", verdict.failure_text()}},
       options_.history);
  if (passed) {
    ++reprobes_passed_;
    state_ = State::Serving;
    std::fprintf(stderr, "lockstep serve: %s re-probed: %s; restored\n", candidate_name_.c_str(),
                 verdict.summary().c_str());
  } else {
    ++reprobes_rejected_;
    reprobe_at_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options_.reprobe_after_s));
    if (error.empty())
      std::fprintf(stderr, "%s %s path rejected on re-probe, staying on %s: %s\n", kParityTag,
                   candidate_name_.c_str(), reference_backend_entry().name,
                   verdict.failure_text().c_str());
    else
      std::fprintf(stderr, "lockstep serve: re-probe of %s not run (%s); staying on %s\n",
                   candidate_name_.c_str(), error.c_str(), reference_backend_entry().name);
  }
  std::fflush(stderr);
}

std::string ServingGuard::serving_backend() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (state_ == State::Quarantined && fallback_) return reference_backend_entry().name;
  if (state_ == State::Failed) return "none";
  return candidate_name_;
}

const char* ServingGuard::state_name() const {
  std::lock_guard<std::mutex> lock(mutex_);
  switch (state_) {
    case State::Serving:
      return "serving";
    case State::Quarantined:
      return "quarantined";
    case State::Failed:
      return "failed";
  }
  return "unknown";
}

size_t ServingGuard::queued() const {
  size_t n = candidate_.queued();
  std::lock_guard<std::mutex> lock(mutex_);
  if (fallback_) n += fallback_->queued();
  return n;
}

int ServingGuard::active() const {
  int n = candidate_.active_slots();
  std::lock_guard<std::mutex> lock(mutex_);
  if (fallback_) n += fallback_->active_slots();
  return n;
}

std::string ServingGuard::metrics_text() const {
  std::string out;
  requests_.render(out);
  const std::string serving = serving_backend();
  const std::string state = state_name();
  const size_t waiting = queued();
  const int busy = active();
  std::lock_guard<std::mutex> lock(mutex_);
  metric_header(out, "lockstep_queue_depth", "gauge", "Requests waiting for a slot.");
  metric_line(out, "lockstep_queue_depth", "", double(waiting));
  metric_header(out, "lockstep_batch_size", "gauge",
                "Sequences being decoded together now (busy slots).");
  metric_line(out, "lockstep_batch_size", "", double(busy));
  metric_header(out, "lockstep_slots", "gauge", "Slots of the serving scheduler (--parallel).");
  metric_line(out, "lockstep_slots", "", double(candidate_.n_slots()));
  // The candidate's scheduler thread: how long its steps spent in the backend and on the host.
  const StepTimes times = candidate_.step_times();
  metric_header(out, "lockstep_steps_total", "counter",
                "Scheduler steps (one forward of every busy slot) of the candidate backend.");
  metric_line(out, "lockstep_steps_total", "", double(times.steps));
  metric_header(out, "lockstep_step_rows_total", "counter",
                "Sequences summed over those steps (divided by the steps: the mean batch).");
  metric_line(out, "lockstep_step_rows_total", "", double(times.rows));
  metric_header(out, "lockstep_step_forward_seconds_total", "counter",
                "Time of those steps in the backend's forward pass.");
  metric_line(out, "lockstep_step_forward_seconds_total", "", times.forward_s);
  metric_header(out, "lockstep_step_host_seconds_total", "counter",
                "Time of those steps after the forward pass: sampling, detokenizing, stop strings, "
                "posting the events (the relay thread hands them to the clients meanwhile).");
  metric_line(out, "lockstep_step_host_seconds_total", "", times.host_s);
  metric_header(out, "lockstep_parity_gate_verdict", "gauge",
                "The load-time parity gate's verdict on the candidate (1 for the status it has).");
  metric_line(
      out, "lockstep_parity_gate_verdict",
      "candidate=" +
          label_value(load_verdict_.candidate.empty() ? candidate_name_ : load_verdict_.candidate) +
          ",status=" + label_value(load_verdict_.status_name()),
      1);
  metric_header(out, "lockstep_serving_backend", "gauge",
                "The backend new requests go to (1), and the state of the candidate.");
  metric_line(out, "lockstep_serving_backend",
              "backend=" + label_value(serving) + ",state=" + label_value(state), 1);
  metric_header(out, "lockstep_quarantined", "gauge",
                "1 while the candidate is quarantined after a failed audit.");
  metric_line(out, "lockstep_quarantined", "", state_ == State::Quarantined ? 1 : 0);
  metric_header(out, "lockstep_audits_total", "counter", "Online parity audits completed.");
  metric_line(out, "lockstep_audits_total", "", double(audits_run_));
  metric_header(out, "lockstep_audits_failed_total", "counter",
                "Online parity audits the candidate failed.");
  metric_line(out, "lockstep_audits_failed_total", "", double(audits_failed_));
  metric_header(out, "lockstep_audits_dropped_total", "counter",
                "Sampled requests not audited because the audit queue was full.");
  metric_line(out, "lockstep_audits_dropped_total", "", double(audits_dropped_));
  metric_header(out, "lockstep_audits_waiting", "gauge", "Audits queued for the reference.");
  metric_line(out, "lockstep_audits_waiting", "", auditor_ ? double(auditor_->waiting()) : 0);
  metric_header(out, "lockstep_audit_worst_cosine", "gauge",
                "Lowest cosine of any audited position (1 before any audit).");
  metric_line(out, "lockstep_audit_worst_cosine", "", worst_cosine_);
  metric_header(out, "lockstep_audit_worst_kl", "gauge",
                "Highest KL divergence of any audited position.");
  metric_line(out, "lockstep_audit_worst_kl", "", worst_kl_);
  metric_header(out, "lockstep_quarantines_total", "counter",
                "Times the candidate was quarantined.");
  metric_line(out, "lockstep_quarantines_total", "", double(quarantines_));
  metric_header(out, "lockstep_reprobes_total", "counter", "Re-probes of a quarantined candidate.");
  metric_line(out, "lockstep_reprobes_total", "result=\"passed\"", double(reprobes_passed_));
  metric_line(out, "lockstep_reprobes_total", "result=\"rejected\"", double(reprobes_rejected_));
  return out;
}

ojson ServingGuard::parity_json() const {
  const std::string serving = serving_backend();
  const std::string state = state_name();
  std::lock_guard<std::mutex> lock(mutex_);
  const ParityVerdict& v = load_verdict_;
  ojson load = {{"candidate", v.candidate},
                {"status", v.status_name()},
                {"summary", v.summary()},
                {"positions", v.positions},
                {"steps", v.steps},
                {"worst_cosine", finite_or_null(v.worst_cosine)},
                {"worst_kl", finite_or_null(v.worst_kl)},
                {"failure", v.failure_text()}};
  ojson audits = {{"enabled", audits_on_},
                  {"rate", options_.audit_rate},
                  {"every", options_.audit_every},
                  {"on_drift", drift_policy_name(options_.on_drift)},
                  {"reprobe_after_s", options_.reprobe_after_s},
                  {"run", audits_run_},
                  {"failed", audits_failed_},
                  {"dropped", audits_dropped_},
                  {"waiting", auditor_ ? auditor_->waiting() : 0},
                  {"worst_cosine", finite_or_null(worst_cosine_)},
                  {"worst_kl", finite_or_null(worst_kl_)}};
  ojson recent = ojson::array(), reprobes = ojson::array();
  for (const auto& a : recent_audits_) recent.push_back(a);
  for (const auto& r : recent_reprobes_) reprobes.push_back(r);
  return {{"candidate", candidate_name_},
          {"serving", serving},
          {"state", state},
          {"load", load},
          {"audits", audits},
          {"recent_audits", recent},
          {"reprobes", reprobes}};
}

}  // namespace lockstep::server
