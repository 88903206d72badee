// The gate covers what serves: a backend opened for several sequences (continuous batching) is
// also compared on batched steps (a second sequence at other positions in the same calls), so a
// fault of the batched path alone is caught, while a one-sequence gate never sees it.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "backend/cpu/reference_backend.h"
#include "backend/fast_compare.h"
#include "backend/random_data.h"
#include "backend/synthetic_model.h"
#include "parity/comparison.h"
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

// A backend whose steps of at least routes[i] sequences take another route i (CUDA: the mmq
// products, the GEMMs), here the fast path with route `broken`'s rows corrupted (-1: none).
class RoutedFast final : public cpu::TransformerBackend<Backend> {
 public:
  RoutedFast(const Model& model, int n_seq, std::vector<int> routes, int broken)
      : TransformerBackend(model, cpu::make_fast_kernels(), options(n_seq)),
        routes_(std::move(routes)),
        broken_(broken),
        route_steps(routes_.size(), 0) {}
  std::string name() const override { return "cpu"; }
  std::vector<int> batch_route_rows() const override { return routes_; }

 private:
  std::vector<int> routes_;
  int broken_;

 public:
  std::vector<int64_t> route_steps;  // steps taken by each route

 protected:
  void forward_batch_impl(std::span<const SeqTokens> batch) override {
    TransformerBackend::forward_batch_impl(batch);
    for (const SeqTokens& item : batch)
      if (item.tokens.size() != 1) return;
    int route = -1;
    for (size_t i = 0; i < routes_.size(); ++i)
      if (int(batch.size()) >= routes_[i]) route = int(i);
    if (route < 0) return;
    ++route_steps[size_t(route)];
    if (route != broken_) return;
    const size_t V = size_t(model().hp.n_vocab);
    for (const SeqTokens& item : batch)
      for (size_t i = 0; i < V; ++i) item.logits[i] += 4.0f * float((i * 7919) % 13) - 24.0f;
  }

 private:
  static cpu::TransformerOptions options(int n_seq) {
    cpu::TransformerOptions o;
    o.name = "cpu";
    o.n_threads = 2;
    o.n_ctx = 64;
    o.n_seq = n_seq;
    return o;
  }
};

// The gate's batched steps reach each of a backend's large-batch routes when it has the
// sequences, largest first, then a step of two, in turn (3 steps: route 5, two, route 5): all
// side sequences fed give the reference's rows (a healthy route passes, with a row for each), a
// broken route is rejected at its first step, and a backend of fewer sequences than the route
// never takes it (nor is it asked to).
TEST_F(BatchedGate, StepsAsLargeAsTheBackendsOtherRouteCheckThatRoute) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  ReferenceBackend reference(*model_, 2, 64);
  ParityConfig config;
  {
    RoutedFast healthy(*model_, 5, {5}, -1);
    const ParityVerdict v = ParityComparison::compare(reference, healthy, probe_, config);
    EXPECT_EQ(v.status, ParityVerdict::Status::Passed) << v.failure_text();
    EXPECT_EQ(healthy.route_steps[0], 2);
    // steps of 5, 2 and 5 rows: 4 + 1 + 4 side rows
    ASSERT_EQ(v.rows.size(), 24u + 3u + 9u);
    for (int s = 1; s <= 4; ++s) EXPECT_EQ(v.rows[size_t(24 + 1 + s - 1)].seq, s);
    EXPECT_EQ(v.rows[size_t(24 + 5 + 1)].seq, 1);                    // step 1: sequence 1 only
    for (int s = 1; s <= 4; ++s) EXPECT_EQ(healthy.seq_past(s), 0);  // left empty
  }
  {
    RoutedFast broken(*model_, 5, {5}, 0);
    const ParityVerdict v = ParityComparison::compare(reference, broken, probe_, config);
    EXPECT_EQ(v.status, ParityVerdict::Status::Rejected);
    // The route's first step, where sequence 0's row is already wrong.
    EXPECT_NE(v.failure_text().find("at step 0/3"), std::string::npos) << v.failure_text();
    EXPECT_EQ(broken.route_steps[0], 1);
  }
  {
    RoutedFast small(*model_, 4, {5}, 0);  // four sequences: steps of two, the route unused
    const ParityVerdict v = ParityComparison::compare(reference, small, probe_, config);
    EXPECT_EQ(v.status, ParityVerdict::Status::Passed) << v.failure_text();
    EXPECT_EQ(small.route_steps[0], 0);
    EXPECT_EQ(v.rows.size(), 24u + 3u + 3u);
  }
}

// Two routes (CUDA: mmq from 3, GEMMs from 5): steps of 5, 3 and 2 rows, so each route serves
// one step, and a broken middle route is caught at its step (step 1) although the larger one
// passed step 0.
TEST_F(BatchedGate, EveryRouteOfTheBackendIsChecked) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  ReferenceBackend reference(*model_, 2, 64);
  ParityConfig config;
  {
    RoutedFast healthy(*model_, 5, {3, 5}, -1);
    const ParityVerdict v = ParityComparison::compare(reference, healthy, probe_, config);
    EXPECT_EQ(v.status, ParityVerdict::Status::Passed) << v.failure_text();
    EXPECT_EQ(healthy.route_steps, (std::vector<int64_t>{1, 1}));
    EXPECT_EQ(v.rows.size(), 24u + 3u + 4u + 2u + 1u);
  }
  {
    RoutedFast broken(*model_, 5, {3, 5}, 0);
    const ParityVerdict v = ParityComparison::compare(reference, broken, probe_, config);
    EXPECT_EQ(v.status, ParityVerdict::Status::Rejected);
    EXPECT_NE(v.failure_text().find("at step 1/3"), std::string::npos) << v.failure_text();
    EXPECT_EQ(broken.route_steps, (std::vector<int64_t>{1, 1}));
  }
}

}  // namespace
}  // namespace lockstep::backend_test
