// Several sequences in one backend (Backend::forward_batch, the basis of continuous batching):
// every sequence's logits are exactly, bit for bit, what it gets alone, on both CPU backends,
// whatever joins, leaves or is cut back around it; bad batches are refused before anything runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu/reference_backend.h"
#include "backend/fast_compare.h"
#include "backend/greedy_pick.h"
#include "backend/random_data.h"
#include "backend/synthetic_model.h"
#include "util/error.h"

namespace lockstep::backend_test {
namespace {

constexpr int kCtx = 48;

std::unique_ptr<Backend> make(bool fast, const Model& m, int n_seq, int max_batch = 64) {
  if (!fast)
    return std::make_unique<ReferenceBackend>(m, 2, kCtx, max_batch, RefMatmulTuning{}, n_seq);
  cpu::TransformerOptions o;
  o.name = "cpu";
  o.n_threads = 2;
  o.n_ctx = kCtx;
  o.max_batch = max_batch;
  o.n_seq = n_seq;
  return std::make_unique<UngatedFast>(m, o);
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, size_t n, int64_t n_vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// One sequence's script: a prompt, then `steps` greedy tokens; rows[i] are the logits after
// prompt[..i] (all prompt rows) and then after each fed step token.
struct Script {
  std::vector<int32_t> prompt;
  int steps = 0;
  std::vector<std::vector<float>> rows;
};

// The sequence alone, on a one-sequence backend.
void run_alone(Backend& b, Script& s) {
  const size_t V = size_t(b.model().hp.n_vocab);
  std::vector<float> all(s.prompt.size() * V);
  b.forward(s.prompt, all.data(), true);
  for (size_t i = 0; i < s.prompt.size(); ++i)
    s.rows.emplace_back(all.begin() + ptrdiff_t(i * V), all.begin() + ptrdiff_t((i + 1) * V));
  for (int k = 0; k < s.steps; ++k) {
    const int32_t next = argmax(s.rows.back().data(), int64_t(V));
    std::vector<float> row(V);
    b.forward({&next, 1}, row.data(), false);
    s.rows.push_back(std::move(row));
  }
}

class MultiSequence : public ::testing::TestWithParam<bool> {};

TEST_P(MultiSequence, EverySequenceGetsExactlyItsLogitsAlone) {
  const bool fast = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (TensorType type : {TensorType::Q8_0, TensorType::Q4_K, TensorType::F16}) {
    SCOPED_TRACE(tensor_type_info(type).name);
    SyntheticSpec spec;
    spec.arch = Arch::Qwen2;
    spec.type = type;
    spec.n_embd = 256;
    spec.n_ff = 512;
    spec.seed = rng();
    const Model model = make_synthetic_model(spec);
    const size_t V = size_t(model.hp.n_vocab);

    // Four sequences of different prompt lengths; sequence 3 joins after two decode steps of
    // the others, and sequence 1 is cut back and re-fed midway, as a server's slots would be.
    std::vector<Script> alone(4);
    for (int s = 0; s < 4; ++s) {
      alone[size_t(s)].prompt = random_tokens(rng, size_t(3 + 5 * s), model.hp.n_vocab);
      alone[size_t(s)].steps = 6;
      auto single = make(fast, model, 1);
      run_alone(*single, alone[size_t(s)]);
    }

    // A small max_batch splits the joint prefill across chunks, mixing sequences in a chunk.
    auto b = make(fast, model, 4, 7);
    std::vector<std::vector<float>> got(4);
    std::vector<std::vector<float>> prefill(4);
    std::vector<SeqTokens> batch;
    for (int s : {0, 1, 2}) {
      prefill[size_t(s)].resize(alone[size_t(s)].prompt.size() * V);
      batch.push_back({s, alone[size_t(s)].prompt, prefill[size_t(s)].data(), true});
    }
    b->forward_batch(batch);
    std::vector<std::vector<std::vector<float>>> rows(4);
    for (int s : {0, 1, 2})
      for (size_t i = 0; i < alone[size_t(s)].prompt.size(); ++i)
        rows[size_t(s)].emplace_back(prefill[size_t(s)].begin() + ptrdiff_t(i * V),
                                     prefill[size_t(s)].begin() + ptrdiff_t((i + 1) * V));
    // Sequence 3 joins at round 2 with its prompt beside the others' decode steps.
    std::vector<int> fed(4, 0);  // steps fed so far
    auto next_of = [&](int s) { return argmax(rows[size_t(s)].back().data(), int64_t(V)); };
    for (int round = 0; round < 16; ++round) {
      if (round == 2) prefill[3].resize(alone[3].prompt.size() * V);
      if (round == 4) {  // sequence 1 drops its last step and feeds it again
        b->truncate_seq(1, b->seq_past(1) - 1);
        rows[1].pop_back();
        --fed[1];
      }
      batch.clear();
      std::vector<int32_t> tok(4);
      std::vector<std::vector<float>> out(4, std::vector<float>(V));
      for (int s = 0; s < 4; ++s) {
        if (s == 3 && round < 2) continue;
        if (s == 3 && round == 2) {
          batch.push_back({3, alone[3].prompt, prefill[3].data(), true});
          continue;
        }
        if (fed[size_t(s)] >= alone[size_t(s)].steps) continue;
        tok[size_t(s)] = next_of(s);
        batch.push_back({s, {&tok[size_t(s)], 1}, out[size_t(s)].data(), false});
      }
      if (batch.empty()) break;
      b->forward_batch(batch);
      for (const SeqTokens& item : batch) {
        if (item.all_logits) {
          for (size_t i = 0; i < item.tokens.size(); ++i)
            rows[size_t(item.seq)].emplace_back(prefill[3].begin() + ptrdiff_t(i * V),
                                                prefill[3].begin() + ptrdiff_t((i + 1) * V));
        } else {
          rows[size_t(item.seq)].push_back(out[size_t(item.seq)]);
          ++fed[size_t(item.seq)];
        }
      }
    }
    for (int s = 0; s < 4; ++s) {
      SCOPED_TRACE("sequence " + std::to_string(s));
      ASSERT_EQ(rows[size_t(s)].size(), alone[size_t(s)].rows.size());
      for (size_t i = 0; i < rows[size_t(s)].size(); ++i)
        ASSERT_EQ(rows[size_t(s)][i], alone[size_t(s)].rows[i]) << "row " << i;
      EXPECT_EQ(b->seq_past(s), int(alone[size_t(s)].prompt.size()) + alone[size_t(s)].steps);
    }
  }
}

// More sequences than max_batch, as a server with many slots has: the fast path computes a decode
// step of all of them as one chunk (its max_batch grows to n_seq, so each weight is read once
// per step), the reference splits it; every row is still exactly the sequence's own alone.
TEST_P(MultiSequence, ADecodeStepOfMoreSequencesThanMaxBatchIsExact) {
  const bool fast = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  SyntheticSpec spec;
  spec.arch = Arch::Qwen2;
  spec.type = TensorType::Q4_K;
  spec.n_embd = 256;
  spec.n_ff = 512;
  spec.seed = rng();
  const Model model = make_synthetic_model(spec);
  const size_t V = size_t(model.hp.n_vocab);
  constexpr int kSeqs = 72;
  constexpr int kSteps = 3;
  std::vector<Script> alone(kSeqs);
  auto single = make(fast, model, 1);
  for (int s = 0; s < kSeqs; ++s) {
    alone[size_t(s)].prompt = random_tokens(rng, size_t(2 + s % 5), model.hp.n_vocab);
    alone[size_t(s)].steps = kSteps;
    single->truncate(0);
    run_alone(*single, alone[size_t(s)]);
  }
  auto b = make(fast, model, kSeqs, 16);
  std::vector<std::vector<float>> out(kSeqs, std::vector<float>(V));
  std::vector<SeqTokens> batch;
  for (int s = 0; s < kSeqs; ++s)
    batch.push_back({s, alone[size_t(s)].prompt, out[size_t(s)].data(), false});
  b->forward_batch(batch);
  std::vector<int32_t> tok(kSeqs);
  for (int k = 0; k <= kSteps; ++k) {
    for (int s = 0; s < kSeqs; ++s) {
      const Script& a = alone[size_t(s)];
      ASSERT_EQ(out[size_t(s)], a.rows[a.prompt.size() - 1 + size_t(k)])
          << "sequence " << s << " step " << k;
      tok[size_t(s)] = argmax(out[size_t(s)].data(), int64_t(V));
    }
    if (k == kSteps) break;
    batch.clear();
    for (int s = 0; s < kSeqs; ++s)
      batch.push_back({s, {&tok[size_t(s)], 1}, out[size_t(s)].data(), false});
    b->forward_batch(batch);
  }
}

TEST_P(MultiSequence, BadBatchesAreRefusedBeforeAnythingRuns) {
  SyntheticSpec spec;
  spec.arch = Arch::Llama;
  spec.type = TensorType::Q8_0;
  spec.n_embd = 64;
  spec.seed = 3;
  const Model model = make_synthetic_model(spec);
  auto b = make(GetParam(), model, 3);
  EXPECT_EQ(b->n_seq(), 3);
  const std::vector<int32_t> two = {1, 2};
  std::vector<float> logits(2 * size_t(model.hp.n_vocab));
  auto expect_error = [&](std::vector<SeqTokens> batch, const std::string& says) {
    try {
      b->forward_batch(batch);
      ADD_FAILURE() << "accepted a batch that should say: " << says;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
    for (int s = 0; s < 3; ++s) EXPECT_EQ(b->seq_past(s), 0) << "sequence " << s;
  };
  expect_error({{3, two, logits.data(), false}}, "sequence 3 out of range");
  expect_error({{-1, two, logits.data(), false}}, "sequence -1 out of range");
  expect_error({{1, two, logits.data(), false}, {1, two, logits.data(), false}},
               "sequence 1 twice");
  const std::vector<int32_t> bad = {1, int32_t(model.hp.n_vocab)};
  expect_error({{0, two, logits.data(), false}, {2, bad, logits.data(), false}},
               "sequence 2: token id");
  const std::vector<int32_t> long_prompt(kCtx + 1, 1);
  expect_error({{0, two, logits.data(), false}, {1, long_prompt, nullptr, false}},
               "sequence 1: context overflow");
  // Each sequence's context is its own: one full sequence leaves the others room.
  const std::vector<int32_t> full(kCtx, 1);
  b->forward_batch(std::vector<SeqTokens>{{0, full, nullptr, false}});
  EXPECT_EQ(b->seq_past(0), kCtx);
  b->forward_batch(std::vector<SeqTokens>{{1, two, logits.data(), true}});
  EXPECT_EQ(b->seq_past(1), 2);
  EXPECT_EQ(b->n_past(), kCtx);  // sequence 0
}

// SeqTokens::argmax: a row asked only for its greedy pick gets greedy_pick of the row it would
// have got (here: computed by the same backend in a twin step with the rows), over the first
// argmax_cols logits; with a logits fault in force the pick sees the faulted row (NaN: -1).
TEST_P(MultiSequence, AGreedyPickIsThePickOfTheRow) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  SyntheticSpec spec;
  spec.arch = Arch::Llama;
  spec.type = TensorType::Q8_0;
  spec.n_embd = 64;
  spec.seed = rng();
  const Model model = make_synthetic_model(spec);
  const size_t V = size_t(model.hp.n_vocab);
  constexpr int kSeqs = 3;
  auto with_rows = make(GetParam(), model, kSeqs);
  auto with_picks = make(GetParam(), model, kSeqs);
  std::vector<std::vector<int32_t>> prompts;
  for (int s = 0; s < kSeqs; ++s) prompts.push_back(random_tokens(rng, size_t(3 + s), int64_t(V)));
  std::vector<std::vector<float>> rows(kSeqs, std::vector<float>(V));
  std::vector<int32_t> picks(kSeqs, -7);
  const int cols = int(V) - 5;  // a model vocabulary padded past the tokenizer's
  std::vector<SeqTokens> a, b;
  for (int s = 0; s < kSeqs; ++s) {
    a.push_back({s, prompts[size_t(s)], rows[size_t(s)].data(), false});
    b.push_back({s, prompts[size_t(s)], nullptr, false, &picks[size_t(s)], cols});
  }
  std::vector<int32_t> next(kSeqs);       // outlives the steps that feed it
  for (int step = 0; step < 4; ++step) {  // the prompts, then greedy decode steps
    with_rows->forward_batch(a);
    with_picks->forward_batch(b);
    for (int s = 0; s < kSeqs; ++s) {
      const int32_t want = greedy_pick({rows[size_t(s)].data(), size_t(cols)});
      ASSERT_NE(want, kNoGreedyPick);
      EXPECT_EQ(picks[size_t(s)], want) << "sequence " << s << " step " << step;
      next[size_t(s)] = want;
      a[size_t(s)].tokens = b[size_t(s)].tokens = {&next[size_t(s)], 1};
    }
  }
  FaultSpec nan;
  nan.kind = FaultSpec::NaN;
  nan.position = 0;
  with_picks->set_fault(nan);
  const int32_t t = 1;
  std::vector<SeqTokens> one = {{1, {&t, 1}, nullptr, false, &picks[1], 0}};
  with_picks->forward_batch(one);
  EXPECT_EQ(picks[1], kNoGreedyPick);  // the NaN row is refused, not turned into a token

  std::vector<SeqTokens> too_wide = {{2, {&t, 1}, nullptr, false, &picks[2], int(V) + 1}};
  EXPECT_THROW(with_picks->forward_batch(too_wide), Error);
}

INSTANTIATE_TEST_SUITE_P(CpuBackends, MultiSequence, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Fast" : "Reference"; });

}  // namespace
}  // namespace lockstep::backend_test
