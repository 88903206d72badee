// The gate covers what serves: a backend opened for several sequences (continuous batching) is
// also compared on batched steps (a second sequence at other positions in the same calls), so a
// fault of the batched path alone is caught, while a one-sequence gate never sees it.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "backend/random_data.h"
#include "backend/synthetic_model.h"
#include "parity/gate.h"
#include "parity/parity_config.h"
#include "util/error.h"

namespace lockstep::backend_test {
namespace {

class BatchedGate : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = fresh_seed();
    std::mt19937_64 rng(seed_);
    SyntheticSpec spec;
    spec.arch = Arch::Qwen2;
    spec.type = TensorType::Q8_0;
    spec.n_embd = 128;
    spec.n_ff = 256;
    spec.seed = rng();
    model_ = std::make_unique<Model>(make_synthetic_model(spec));
    std::uniform_int_distribution<int32_t> tok(0, int32_t(model_->hp.n_vocab - 1));
    for (int i = 0; i < 24; ++i) probe_.push_back(tok(rng));
  }
  ServingBackend open(int n_seq, std::optional<FaultSpec> fault, ParityPolicy policy) {
    OpenRequest request;
    request.backend = "cpu";
    request.options.threads = 2;
    request.options.n_ctx = 64;
    request.options.n_seq = n_seq;
    request.options.fault = fault;
    ParityConfig config;
    config.policy = policy;
    return ParityGate::open(*model_, request, config, probe_, true);
  }
  uint64_t seed_ = 0;
  std::unique_ptr<Model> model_;
  std::vector<int32_t> probe_;
};

TEST_F(BatchedGate, SeveralSequencesAddBatchedRowsAndAHealthyPathPasses) {
  SCOPED_TRACE(seed_trace(seed_));
  ServingBackend one = open(1, std::nullopt, ParityPolicy::Strict);
  ServingBackend four = open(4, std::nullopt, ParityPolicy::Strict);
  ASSERT_EQ(four.verdict.status, ParityVerdict::Status::Passed) << four.verdict.failure_text();
  EXPECT_EQ(one.verdict.rows.size(), 24u + 3u);
  ASSERT_EQ(four.verdict.rows.size(), 24u + 3u + 3u);  // each step has a batched twin
  const ParityRow& twin = four.verdict.rows[24 + 1];
  EXPECT_EQ(twin.seq, 1);
  EXPECT_EQ(twin.position, 12);  // the second sequence holds half the probe
  EXPECT_EQ(twin.where(), "step 0/3 (batched: sequence 1 at position 12)");
  // What it hands out: the prompt prefix in sequence 0, every other sequence empty.
  EXPECT_EQ(four.backend->n_seq(), 4);
  EXPECT_EQ(four.backend->seq_past(0), 24);
  for (int s = 1; s < 4; ++s) EXPECT_EQ(four.backend->seq_past(s), 0) << "sequence " << s;
}

TEST_F(BatchedGate, AFaultOfTheBatchedPathAloneIsCaughtOnlyWhenTheGateBatches) {
  SCOPED_TRACE(seed_trace(seed_));
  FaultSpec fault;
  fault.kind = FaultSpec::BatchCorrupt;
  fault.layer = 1;
  fault.magnitude = 4.0f;
  // One sequence: the fault never fires, the gate passes (and so would a server of one slot).
  ServingBackend one = open(1, fault, ParityPolicy::Strict);
  EXPECT_EQ(one.verdict.status, ParityVerdict::Status::Passed) << one.verdict.failure_text();
  // Several: the first batched step rejects it, naming the batched row.
  try {
    open(2, fault, ParityPolicy::Strict);
    FAIL() << "the batched fault passed the gate";
  } catch (const ParityError& e) {
    const std::string line = e.what();
    EXPECT_NE(line.find("[lockstep-parity-v1] cpu path rejected (--parity strict)"),
              std::string::npos)
        << line;
    EXPECT_NE(line.find("at step 0/3 (batched: sequence 1 at position 12)"), std::string::npos)
        << line;
  }
  // Under auto with an unforced choice the reference serves instead, with every sequence.
  OpenRequest request;
  request.backend = "auto";
  request.options.threads = 2;
  request.options.n_ctx = 64;
  request.options.n_seq = 2;
  request.options.fault = fault;
  ServingBackend fell_back = ParityGate::open(*model_, request, ParityConfig{}, probe_, true);
  if (fell_back.verdict.candidate == "cpu") {  // no GPU here: the fast CPU path was the candidate
    EXPECT_EQ(fell_back.verdict.status, ParityVerdict::Status::Rejected);
    EXPECT_EQ(fell_back.backend_used, "cpu-ref");
    EXPECT_EQ(fell_back.backend->n_seq(), 2);
  }
}

}  // namespace
}  // namespace lockstep::backend_test
