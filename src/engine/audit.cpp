#include "engine/audit.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>

#include "backend/registry.h"
#include "parity/metrics.h"
#include "util/error.h"

namespace lockstep {

DriftPolicy parse_drift_policy(const std::string& text) {
  if (text == "quarantine") return DriftPolicy::Quarantine;
  if (text == "fail") return DriftPolicy::Fail;
  if (text == "log") return DriftPolicy::Log;
  throw InputError("--on-drift must be one of quarantine, fail, log; got '" + text + "'");
}

const char* drift_policy_name(DriftPolicy policy) {
  switch (policy) {
    case DriftPolicy::Quarantine:
      return "quarantine";
    case DriftPolicy::Fail:
      return "fail";
    case DriftPolicy::Log:
      return "log";
  }
  return "unknown";
}

AuditResult audit_request(Backend& reference, const AuditJob& job, const ParityConfig& config) {
  const auto t0 = std::chrono::steady_clock::now();
  const size_t V = size_t(reference.model().hp.n_vocab);
  const size_t n_gen = job.generated.size();
  if (job.prompt.empty() || n_gen == 0)
    throw InputError("audit of request " + job.request_id + ": no prompt or no generated token");
  if (job.rows.size() != n_gen * V)
    throw InputError("audit of request " + job.request_id + ": " + std::to_string(job.rows.size()) +
                     " logits for " + std::to_string(n_gen) + " tokens of " + std::to_string(V));
  // The context as served: the prompt, then every generated token but the last (whose successor
  // was never computed). Row prompt-1+k of the reference predicts generated[k].
  std::vector<int32_t> context = job.prompt;
  context.insert(context.end(), job.generated.begin(), job.generated.end() - 1);
  if (int64_t(context.size()) > reference.n_ctx())
    throw InputError("audit of request " + job.request_id + ": " + std::to_string(context.size()) +
                     " positions do not fit the reference's " + std::to_string(reference.n_ctx()));
  const size_t first = job.prompt.size() - 1;
  std::vector<float> ref_rows((context.size() - first) * V);
  reference.truncate(0);
  // Only the rows of generated positions are needed: the prompt's first positions go in without
  // logits, the rest with all of them.
  if (first > 0) reference.forward(std::span(context).first(first), nullptr, false);
  reference.forward(std::span(context).subspan(first), ref_rows.data(), true);
  reference.truncate(0);

  AuditResult r;
  r.request_id = job.request_id;
  r.prompt_tokens = int(job.prompt.size());
  r.generated_tokens = int(n_gen);
  for (size_t k = 0; k < n_gen; ++k) {
    ParityRow row;
    row.is_step = true;
    row.index = int(k);
    row.total = int(n_gen);
    row.token = job.generated[k];
    row.m = compare_logits({ref_rows.data() + k * V, V}, {job.rows.data() + k * V, V});
    if (row.m.finite && row.m.cosine < r.worst_cosine) {
      r.worst_cosine = row.m.cosine;
      r.worst_cosine_token = int(k);
    }
    if (row.m.finite) r.worst_kl = std::max(r.worst_kl, row.m.kl);
    ParityVerdict v;
    if (!ParityComparison::row_passes(row, config, v)) {
      v.failed_at = "token " + std::to_string(k) + " of request " + job.request_id;
      r.passed = false;
      r.failure = v.failure_text();
      if (!row.m.finite) r.worst_cosine = std::numeric_limits<double>::quiet_NaN();
      break;
    }
  }
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

Auditor::Auditor(const Model& model, AuditorOptions options, OnResult on_result)
    : model_(model), options_(std::move(options)), on_result_(std::move(on_result)) {
  thread_ = std::thread([this] { run(); });
}

Auditor::~Auditor() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Auditor::reserve() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_ || reserved_ >= options_.queue_capacity) return false;
  ++reserved_;
  return true;
}

void Auditor::release() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (reserved_ > 0) --reserved_;
}

void Auditor::submit(AuditJob job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    queue_.push_back(std::move(job));
  }
  wake_.notify_one();
}

size_t Auditor::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

Backend& Auditor::reference(std::unique_lock<std::mutex>& lock) {
  reference_cv_.wait(lock, [&] { return reference_ready_; });
  if (reference_error_) std::rethrow_exception(reference_error_);
  return *reference_;
}

ReferenceProbe Auditor::reference_probe(std::span<const int32_t> probe, int steps) {
  std::unique_lock<std::mutex> lock(reference_mutex_);
  Backend& ref = reference(lock);
  ReferenceProbe p = ParityComparison::run_reference(ref, probe, steps);
  ref.truncate(0);
  return p;
}

void Auditor::run() {
  // The lowest priority for this thread; the reference's pool threads, created below from it,
  // inherit it (Linux schedules threads, and a new thread takes its creator's nice value).
  setpriority(PRIO_PROCESS, pid_t(syscall(SYS_gettid)), 19);
  {
    std::lock_guard<std::mutex> lock(reference_mutex_);
    try {
      BackendOptions o = options_.backend;
      o.threads = std::max(1, options_.threads);
      o.n_ctx = options_.n_ctx;
      o.n_seq = 1;
      o.fault.reset();  // the TEST KNOB fault is the candidate's, never the auditor's
      reference_ = create_reference(model_, o);
    } catch (...) {
      reference_error_ = std::current_exception();
    }
    reference_ready_ = true;
  }
  reference_cv_.notify_all();

  for (;;) {
    AuditJob job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    AuditResult result;
    try {
      std::unique_lock<std::mutex> lock(reference_mutex_);
      result = audit_request(reference(lock), job, options_.parity);
    } catch (const std::exception& e) {
      // An audit that cannot run is reported, never a verdict on the candidate.
      std::fprintf(stderr, "lockstep serve: audit of request %s not run: %s\n",
                   job.request_id.c_str(), e.what());
      release();
      continue;
    }
    job = AuditJob{};  // its rows are freed before the next one is taken
    release();
    if (on_result_) on_result_(result);
  }
}

}  // namespace lockstep
