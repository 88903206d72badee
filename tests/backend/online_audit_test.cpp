// Online audits (engine/audit.h) and the faults they exist for (backend/fault.h: AfterCalls,
// FromPosition): both faults pass the load-time gate, and an audit of a request served after them
// (its prompt and generated tokens re-scored on the reference) rejects it, naming the first bad
// token and the request; an honest candidate passes every audited token.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "backend/random_data.h"
#include "backend/registry.h"
#include "backend/synthetic_model.h"
#include "engine/audit.h"
#include "parity/fault_env.h"
#include "parity/gate.h"
#include "parity/metrics.h"
#include "util/error.h"

namespace lockstep::backend_test {
namespace {

class OnlineAudit : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = fresh_seed();
    std::mt19937_64 rng(seed_);
    SyntheticSpec spec;
    spec.arch = Arch::Llama;
    spec.type = TensorType::Q8_0;
    spec.n_embd = 128;
    spec.n_ff = 256;
    spec.seed = rng();
    model_ = std::make_unique<Model>(make_synthetic_model(spec));
    std::uniform_int_distribution<int32_t> tok(0, int32_t(model_->hp.n_vocab - 1));
    for (int i = 0; i < 24; ++i) probe_.push_back(tok(rng));
    for (int i = 0; i < 10; ++i) prompt_.push_back(tok(rng));
  }
  // The fast CPU path through the gate (strict: a rejection throws), two sequences like a server.
  ServingBackend open(std::optional<FaultSpec> fault) {
    OpenRequest request;
    request.backend = "cpu";
    request.options.threads = 2;
    request.options.n_ctx = 128;
    request.options.n_seq = 2;
    request.options.fault = fault;
    ParityConfig config;
    config.policy = ParityPolicy::Strict;
    return ParityGate::open(*model_, request, config, probe_, false);
  }
  // Serves prompt_ greedily for n tokens on `backend`, keeping every generated row: what the
  // scheduler hands an audit.
  AuditJob serve(Backend& backend, int n) {
    const size_t V = size_t(model_->hp.n_vocab);
    AuditJob job;
    job.request_id = "req-7";
    job.prompt = prompt_;
    std::vector<float> row(V);
    backend.truncate(0);
    backend.forward(prompt_, row.data(), false);
    for (int k = 0; k < n; ++k) {
      const int32_t t = argmax(row);
      job.generated.push_back(t);
      job.rows.insert(job.rows.end(), row.begin(), row.end());
      if (k + 1 < n) backend.forward({&t, 1}, row.data(), false);
    }
    return job;
  }
  std::unique_ptr<Backend> reference() {
    BackendOptions o;
    o.threads = 2;
    o.n_ctx = 128;
    return create_reference(*model_, o);
  }
  uint64_t seed_ = 0;
  std::unique_ptr<Model> model_;
  std::vector<int32_t> probe_, prompt_;
};

TEST_F(OnlineAudit, AnHonestCandidatePassesEveryToken) {
  SCOPED_TRACE(seed_trace(seed_));
  ServingBackend s = open(std::nullopt);
  const AuditJob job = serve(*s.backend, 40);
  auto ref = reference();
  const AuditResult r = audit_request(*ref, job, ParityConfig{});
  EXPECT_TRUE(r.passed) << r.failure;
  EXPECT_EQ(r.generated_tokens, 40);
  EXPECT_EQ(r.prompt_tokens, 10);
  EXPECT_GT(r.worst_cosine, 0.99);
  EXPECT_LT(r.worst_kl, 0.05);
  EXPECT_TRUE(r.failure.empty());
}

TEST_F(OnlineAudit, AFaultFromAPositionPastTheProbePassesTheGateAndFailsTheAudit) {
  SCOPED_TRACE(seed_trace(seed_));
  const FaultSpec fault = parse_fault("from_position:40:8");
  ServingBackend s = open(fault);  // throws ParityError if the gate caught it
  ASSERT_EQ(s.verdict.status, ParityVerdict::Status::Passed);
  // Positions 10 .. 49 are generated; the logits row at position 40 predicts token 31.
  const AuditJob job = serve(*s.backend, 40);
  auto ref = reference();
  const AuditResult r = audit_request(*ref, job, ParityConfig{});
  ASSERT_FALSE(r.passed);
  EXPECT_NE(r.failure.find("at token 31 of request req-7"), std::string::npos) << r.failure;
  // A request that stays short of the fault passes.
  const AuditResult short_r = audit_request(*ref, serve(*s.backend, 20), ParityConfig{});
  EXPECT_TRUE(short_r.passed) << short_r.failure;
}

TEST_F(OnlineAudit, AFaultAfterSomeCallsPassesTheGateAndFailsTheAudit) {
  SCOPED_TRACE(seed_trace(seed_));
  // The gate's probe takes 5 calls with two sequences (prefill, batched side, 3 steps).
  const FaultSpec fault = parse_fault("after_calls:5:8");
  ServingBackend s = open(fault);
  ASSERT_EQ(s.verdict.status, ParityVerdict::Status::Passed);
  const AuditJob job = serve(*s.backend, 8);  // every call from here on is corrupted
  auto ref = reference();
  const AuditResult r = audit_request(*ref, job, ParityConfig{});
  ASSERT_FALSE(r.passed);
  EXPECT_NE(r.failure.find("at token 0 of request req-7"), std::string::npos) << r.failure;
  EXPECT_LT(r.worst_cosine, 0.99);
}

TEST_F(OnlineAudit, AJobThatDoesNotMatchItsRowsIsAnInputError) {
  SCOPED_TRACE(seed_trace(seed_));
  ServingBackend s = open(std::nullopt);
  AuditJob job = serve(*s.backend, 4);
  job.rows.pop_back();
  auto ref = reference();
  EXPECT_THROW(audit_request(*ref, job, ParityConfig{}), InputError);
}

TEST(ParseFault, TheServingFaults) {
  FaultSpec f = parse_fault("after_calls:40:4");
  EXPECT_EQ(f.kind, FaultSpec::AfterCalls);
  EXPECT_EQ(f.calls, 40);
  EXPECT_EQ(f.magnitude, 4.f);
  f = parse_fault("from_position:100:2.5");
  EXPECT_EQ(f.kind, FaultSpec::FromPosition);
  EXPECT_EQ(f.position, 100);
  EXPECT_EQ(f.magnitude, 2.5f);
  for (const char* bad :
       {"after_calls:4", "after_calls:-1:4", "from_position:1e3:4", "from_position:10:x"})
    EXPECT_THROW(parse_fault(bad), InputError) << bad;
}

TEST(DriftPolicy, ParsesTheThreeAndRejectsOthers) {
  EXPECT_EQ(parse_drift_policy("quarantine"), DriftPolicy::Quarantine);
  EXPECT_EQ(parse_drift_policy("fail"), DriftPolicy::Fail);
  EXPECT_EQ(parse_drift_policy("log"), DriftPolicy::Log);
  EXPECT_THROW(parse_drift_policy("panic"), InputError);
}

}  // namespace
}  // namespace lockstep::backend_test
