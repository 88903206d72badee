// Online parity audits of served requests (docs/server.md, "Audits"). The load-time gate proves a
// candidate backend on one probe; a server then runs on prompts, lengths and batch mixes the probe
// never saw. A request sampled for an audit keeps the candidate's logits at every generated
// position (Scheduler: ScheduledRequest::on_logits); the Auditor re-scores its prompt and
// generated tokens teacher-forced on a CPU reference of its own, on a background thread of low
// priority (never the scheduler's), and compares every generated position with the gate's metrics
// and rules (parity/metrics.h, ParityComparison::row_passes). What a failed audit does to serving
// is the server's policy (server/serving_guard.h), not this file's.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/backend_options.h"
#include "parity/comparison.h"
#include "parity/parity_config.h"

namespace lockstep {

// What a failed audit does (--on-drift).
enum class DriftPolicy {
  Quarantine,  // new requests go to the reference until a re-probe passes
  Fail,        // new requests are refused (HTTP 503)
  Log,         // only the tagged line
};
DriftPolicy parse_drift_policy(const std::string& text);  // quarantine|fail|log, else InputError
const char* drift_policy_name(DriftPolicy policy);

// A sampled request, as it was served: the whole context and the candidate's logits row at every
// generated position (row k is the prediction that generated[k] was sampled from).
struct AuditJob {
  std::string request_id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;
  std::vector<float> rows;  // generated.size() x n_vocab
};

struct AuditResult {
  std::string request_id;
  int prompt_tokens = 0;
  int generated_tokens = 0;
  bool passed = true;
  double worst_cosine = 1, worst_kl = 0;
  int worst_cosine_token = -1;  // the generated token (0-based) where the cosine was lowest
  // The gate's failure text, its place naming the token and request:
  // "cosine vs CPU = 0.71 (< 0.99) at token 5 of request req-12". Empty when passed.
  std::string failure;
  double ms = 0;  // the reference's re-scoring and the comparison
};

// Re-scores `job` teacher-forced on `reference` (its cache is cleared) and compares each generated
// position with the candidate's row. Stops at the first rejected row. Throws InputError when the
// job does not fit the reference's context or its rows do not match its tokens.
AuditResult audit_request(Backend& reference, const AuditJob& job, const ParityConfig& config);

struct AuditorOptions {
  int threads = 1;            // the reference's threads (--audit-threads)
  int n_ctx = 0;              // the reference's context: the serving context per slot
  size_t queue_capacity = 8;  // audits captured or waiting at once; more are dropped
  ParityConfig parity;        // the gate's thresholds
  BackendOptions backend;     // the reference's options (threads, n_ctx, n_seq set here)
};

// The background auditor: one thread at the lowest scheduling priority (nice 19; the reference's
// worker threads, created by it, inherit that) with its own CPU reference backend.
class Auditor {
 public:
  using OnResult = std::function<void(const AuditResult&)>;
  // `on_result` runs on the auditor's thread after each audit.
  Auditor(const Model& model, AuditorOptions options, OnResult on_result);
  ~Auditor();  // drops what is still queued
  Auditor(const Auditor&) = delete;
  Auditor& operator=(const Auditor&) = delete;

  // A place for one audit (its capture while the request runs, then its queue entry); false when
  // all queue_capacity places are taken: the audit is dropped, serving is never slowed.
  bool reserve();
  void release();             // a reserved audit that will not come (the request failed)
  void submit(AuditJob job);  // takes over a reservation
  // The reference's half of the gate's probe, on the auditor's reference (after the audit in
  // progress); for the re-probe of a quarantined backend.
  ReferenceProbe reference_probe(std::span<const int32_t> probe, int steps);
  size_t waiting() const;

 private:
  void run();
  Backend& reference(std::unique_lock<std::mutex>& lock);

  const Model& model_;
  AuditorOptions options_;
  OnResult on_result_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<AuditJob> queue_;
  size_t reserved_ = 0;  // captures in flight + queued jobs
  bool stopping_ = false;
  std::mutex reference_mutex_;  // the reference: one user at a time
  std::unique_ptr<Backend> reference_;
  std::exception_ptr reference_error_;
  bool reference_ready_ = false;
  std::condition_variable reference_cv_;
  std::thread thread_;
};

}  // namespace lockstep
