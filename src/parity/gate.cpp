#include "parity/gate.h"

#include <chrono>
#include <cstdio>
#include <exception>
#include <optional>
#include <thread>

#include "backend/gate_key.h"
#include "backend/registry.h"
#include "parity/verdict_cache.h"
#include "util/stderr_line.h"

namespace lockstep {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The reference's probe needs nothing from the candidate, so it runs on a thread of its own while
// the candidate is created (a GPU backend's weight upload takes about as long as the reference's
// probe at 7B); the gate then adds only the candidate's probe and the metrics. Nothing touches
// the reference until join().
class ReferenceBesideCandidate {
 public:
  ReferenceBesideCandidate(const Model& model, const BackendOptions& options,
                           std::span<const int32_t> probe, int steps)
      : reference_(create_reference(model, options)) {
    worker_ = std::thread([this, probe, steps] {
      try {
        probe_ = ParityComparison::run_reference(*reference_, probe, steps);
      } catch (...) {
        error_ = std::current_exception();
      }
    });
  }
  ~ReferenceBesideCandidate() {
    if (worker_.joinable()) worker_.join();
  }
  const ReferenceProbe& join() {
    worker_.join();
    if (error_) std::rethrow_exception(error_);
    return probe_;
  }
  std::unique_ptr<Backend> take_backend() { return std::move(reference_); }

 private:
  std::unique_ptr<Backend> reference_;
  ReferenceProbe probe_;
  std::exception_ptr error_;
  std::thread worker_;
};

// Hands `serving` out. The probe's steps (and the probe itself unless it was the user's prompt)
// leave its cache; when the prompt prefix stays, the logits after its last token are derived
// again (the comparison produced them, but keeping every row would cost P * n_vocab floats).
ServingBackend serve(std::unique_ptr<Backend> serving, const std::string& name,
                     ParityVerdict verdict, std::span<const int32_t> probe, bool probe_is_prompt) {
  ServingBackend s;
  if (probe_is_prompt && !probe.empty()) {
    s.prefix_logits.resize(size_t(serving->model().hp.n_vocab));
    serving->truncate(int(probe.size()) - 1);
    serving->forward(probe.last(1), s.prefix_logits.data(), false);
    s.cached_prefix.assign(probe.begin(), probe.end());
  }
  serving->truncate(int(s.cached_prefix.size()));
  for (int seq = 1; seq < serving->n_seq(); ++seq) serving->truncate_seq(seq, 0);
  s.backend = std::move(serving);
  s.backend_used = name;
  s.verdict = std::move(verdict);
  return s;
}

}  // namespace

std::string ServingBackend::describe() const {
  return backend_used + " (" + verdict.summary() + ")";
}

std::unique_ptr<GatedBackend> ParityGate::create_candidate(const Model& model,
                                                           const OpenRequest& request) {
  std::unique_ptr<GatedBackend> candidate;
  if (request.backend == "auto") {
    // The best available candidate; a device that cannot take the model (e.g. out of memory) is
    // not an error under auto: the next one serves.
    const auto candidates = auto_candidates(request.options);
    for (size_t i = 0; i < candidates.size() && !candidate; ++i) {
      try {
        candidate = candidates[i]->create_gated(model, request.options, GateKey{});
      } catch (const Error& e) {
        if (!candidates[i]->is_device || i + 1 == candidates.size()) throw;
        stderr_line("[lockstep] %s unavailable (%s); trying %s\n", candidates[i]->name,
                    one_line(e.what()).c_str(), candidates[i + 1]->name);
      }
    }
    if (!candidate) throw Error("no backend available for --backend auto");
  } else {
    const BackendEntry* entry = find_backend(request.backend);
    if (!entry) throw InputError(validate_backend_name(request.backend));
    if (entry->is_reference)
      throw InputError("--backend " + request.backend +
                       " is the reference itself, not a candidate for the gate");
    candidate = entry->create_gated(model, request.options, GateKey{});
  }
  if (request.options.fault) candidate->set_fault(*request.options.fault);
  return candidate;
}

ServingBackend ParityGate::open(const Model& model, const OpenRequest& request,
                                const ParityConfig& cfg, std::span<const int32_t> probe,
                                bool probe_is_prompt) {
  if (std::string err = validate_backend_name(request.backend); !err.empty()) throw InputError(err);

  // The reference itself needs no verification.
  if (const BackendEntry* entry = find_backend(request.backend); entry && entry->is_reference) {
    ServingBackend s;
    s.backend = entry->create_reference(model, request.options);
    s.backend_used = entry->name;
    s.verdict.status = ParityVerdict::Status::NotRequired;
    s.verdict.candidate = entry->name;
    return s;
  }

  if (cfg.policy == ParityPolicy::Off) {
    std::unique_ptr<GatedBackend> candidate = create_candidate(model, request);
    const std::string name = candidate->name();
    stderr_line(
        "%s WARNING: parity gate off (--parity off): the %s path was NOT verified "
        "against the CPU reference\n",
        kParityTag, name.c_str());
    candidate->mark_unchecked(GateKey{});
    ParityVerdict v;
    v.status = ParityVerdict::Status::Off;
    v.candidate = name;
    v.config = cfg;
    return serve(std::move(candidate), name, std::move(v), {}, false);
  }

  // A deterministic candidate's pass may have been remembered (never under strict, never with a
  // fault, never for a device).
  std::optional<VerdictCacheKey> cache_key;
  const VerdictCache cache(request.verdict_cache_dir);
  const BackendEntry* planned = nullptr;
  if (request.backend == "auto") {
    if (const auto c = auto_candidates(request.options); !c.empty()) planned = c.front();
  } else {
    planned = find_backend(request.backend);
  }
  if (cfg.policy == ParityPolicy::Auto && !request.options.fault &&
      !request.verdict_cache_dir.empty() && planned && planned->deterministic_identity) {
    cache_key =
        make_verdict_key(model, planned->name, planned->deterministic_identity(request.options),
                         probe, cfg, request.options.n_seq > 1);
    if (std::optional<ParityVerdict> v = cache.lookup(*cache_key)) {
      std::unique_ptr<GatedBackend> candidate = create_candidate(model, request);
      if (candidate->name() == planned->name) {
        candidate->mark_passed(GateKey{});
        v->config = cfg;
        const std::string name = candidate->name();
        return serve(std::move(candidate), name, std::move(*v), {}, false);
      }
    }
  }

  ReferenceBesideCandidate reference(model, request.options, probe, cfg.steps);
  std::unique_ptr<GatedBackend> candidate = create_candidate(model, request);
  const std::string name = candidate->name();

  const auto candidate_ready = Clock::now();
  const ReferenceProbe& ref_probe = reference.join();
  candidate->begin_probe(GateKey{});
  ParityVerdict verdict = ParityComparison::compare_with(ref_probe, *candidate, probe, cfg, true);
  verdict.reference_overlapped = true;
  verdict.ms = ms_since(candidate_ready);  // what the gate added once the candidate existed

  if (verdict.status == ParityVerdict::Status::Passed) {
    if (cache_key && name == planned->name) cache.store(*cache_key, verdict);
    candidate->mark_passed(GateKey{});
    return serve(std::move(candidate), name, std::move(verdict), probe, probe_is_prompt);
  }

  const std::string detail = verdict.failure_text();
  if (cfg.policy == ParityPolicy::Strict)
    throw ParityError(std::string(kParityTag) + " " + name +
                      " path rejected (--parity strict): " + detail);
  if (request.backend != "auto")
    throw ParityError(std::string(kParityTag) + " " + name + " path rejected (--backend " + name +
                      " was forced, not falling back): " + detail);
  stderr_line("%s %s path rejected, falling back to cpu: %s\n", kParityTag, name.c_str(),
              detail.c_str());
  candidate.reset();
  return serve(reference.take_backend(), reference_backend_entry().name, std::move(verdict), probe,
               probe_is_prompt);
}

const std::string& builtin_probe_text() {
  static const std::string text =
      "The museum opened its doors at 9 o'clock on a cold Tuesday morning in 1987. Visitors "
      "walked slowly past paintings of ships, mountains and quiet rivers, while a guide explained "
      "how each artist had mixed colours by hand. \"Look closely,\" she said, \"and you will see "
      "three layers of blue.\" A child counted them aloud: one, two, three. Outside, the rain "
      "stopped and the streets filled with people going to work, buying bread and talking about "
      "the news of the day.";
  return text;
}

}  // namespace lockstep
