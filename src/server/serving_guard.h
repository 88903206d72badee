// Serving stays verified (docs/server.md, "Audits and quarantine"). Every generation request goes
// through the guard, which
//  - routes it: to the candidate's scheduler (the backend the gate let through at load), or, while
//    the candidate is quarantined, to a second scheduler on a CPU reference backend (created at
//    the first quarantine), or refuses it (503) once serving has failed;
//  - samples it for an online audit (--audit-rate / --audit-every): the candidate's logits of its
//    generated positions are kept and re-scored by the Auditor (engine/audit.h) off the serving
//    path;
//  - applies --on-drift when an audit fails: one tagged stderr line in the gate's format, then
//    quarantine (re-probe after --reprobe-after with the gate's probe, restore only if it passes),
//    fail (503 from then on) or log. Quarantine falls back only where the load-time gate would
//    have (--backend auto with --parity auto); a forced backend or --parity strict fails instead;
//  - records the request metrics and renders /metrics and /parity.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "engine/audit.h"
#include "engine/scheduler.h"
#include "parity/comparison.h"
#include "server/metrics.h"
#include "tokenizer/vocab.h"

namespace lockstep::server {

struct GuardOptions {
  double audit_rate = 0.02;  // fraction of candidate-served requests audited (0: none)
  int audit_every = 0;       // > 0: audit every N-th request instead of audit_rate
  int audit_threads = 1;     // the auditor's reference threads
  size_t audit_queue = 8;    // audits captured or waiting at once; more are dropped (counted)
  DriftPolicy on_drift = DriftPolicy::Quarantine;
  double reprobe_after_s = 60;
  bool may_fall_back = true;  // the gate would fall back: --backend auto and --parity auto
  ParityConfig parity;
  BackendOptions backend;  // the serving backend's options (threads, n_ctx, n_seq): the fallback's
  SchedulerOptions scheduler;
  size_t history = 32;  // audits and re-probes kept for /parity
};

class ServingGuard {
 public:
  // `candidate` is the scheduler of the backend the gate opened (named `candidate_name`, with
  // `load_verdict`); it must outlive the guard. Audits run only when that backend is not the
  // reference itself.
  ServingGuard(const Model& model, const tokenizer::Vocab& vocab, Scheduler& candidate,
               std::string candidate_name, ParityVerdict load_verdict, GuardOptions options);
  ~ServingGuard();
  ServingGuard(const ServingGuard&) = delete;
  ServingGuard& operator=(const ServingGuard&) = delete;

  struct Routed {
    SubmitResult result;
    std::string backend;     // where it went
    std::string request_id;  // "req-N": what an audit line names
  };
  // Throws ApiError 503 (parity_failed) once serving has failed under --on-drift fail.
  Routed submit(ScheduledRequest request);

  std::string serving_backend() const;  // the backend new requests go to
  const char* state_name() const;       // "serving", "quarantined", "failed"
  const ParityVerdict& load_verdict() const { return load_verdict_; }
  size_t queued() const;  // waiting requests, both schedulers
  int active() const;     // busy slots, both schedulers

  std::string metrics_text() const;            // GET /metrics
  nlohmann::ordered_json parity_json() const;  // GET /parity

  // Stops audits and re-probes and both schedulers (in-flight requests get `grace`).
  void shutdown(std::chrono::milliseconds grace);

 private:
  enum class State { Serving, Quarantined, Failed };
  void on_audit(const AuditResult& result);
  void policy_loop();
  void reprobe();
  bool sampled();

  const Model& model_;
  const tokenizer::Vocab& vocab_;
  Scheduler& candidate_;
  const std::string candidate_name_;
  const ParityVerdict load_verdict_;
  const GuardOptions options_;
  const bool audits_on_;
  RequestMetrics requests_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  State state_ = State::Serving;
  bool drift_pending_ = false;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point reprobe_at_;
  uint64_t next_request_ = 0;
  uint64_t audits_run_ = 0, audits_failed_ = 0, audits_dropped_ = 0;
  uint64_t reprobes_passed_ = 0, reprobes_rejected_ = 0, quarantines_ = 0;
  double worst_cosine_ = 1, worst_kl_ = 0;
  std::deque<nlohmann::ordered_json> recent_audits_, recent_reprobes_;

  std::unique_ptr<Scheduler> fallback_;  // on the reference, from the first quarantine
  std::unique_ptr<Auditor> auditor_;
  std::thread policy_thread_;
};

}  // namespace lockstep::server
