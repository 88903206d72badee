// ReferenceBackend on tiny synthetic llama and qwen2 models against the independent float64
// forward pass of forward_f64_util.cpp: prefill of 8 tokens, then 4 single-token steps.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/reference_backend.h"
#include "backend/error_stats.h"
#include "backend/fast_compare.h"
#include "backend/forward_f64.h"
#include "backend/random_data.h"
#include "backend/synthetic_model.h"
#include "util/error.h"

namespace lockstep::backend_test {
namespace {

struct Variant {
  const char* name;
  SyntheticSpec spec;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  SyntheticSpec s;
  v.push_back({"llama-f32", s});
  s.type = TensorType::F16;
  v.push_back({"llama-f16", s});
  s = {};
  s.arch = Arch::Qwen2;
  s.rope_freq_base = 1e6f;
  v.push_back({"qwen2-f32", s});
  s.type = TensorType::F16;
  v.push_back({"qwen2-f16", s});
  // Partial rotary dimensions, linear rope scaling, tied embeddings and 4 query heads per KV head.
  s = {};
  s.rope_dim = 8;
  s.rope_linear_factor = 4;
  s.tied_embeddings = true;
  s.n_head_kv = 1;
  v.push_back({"llama-partial-rope-linear-tied", s});
  s.arch = Arch::Qwen2;
  s.type = TensorType::Q8_0;
  v.push_back({"qwen2-q8_0-partial-rope-linear-tied", s});
  // YaRN: base 100 and an original context of 64 put the blend band inside the 8 pairs of a
  // 16-wide head (pair 0 keeps its frequency, 1..4 blend, 5..7 are interpolated), so every part
  // of it is exercised.
  s = {};
  s.arch = Arch::Qwen2;
  s.rope_freq_base = 100.0f;
  s.rope_yarn_factor = 4;
  s.rope_yarn_orig_ctx = 64;
  v.push_back({"qwen2-yarn", s});
  return v;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n, int64_t n_vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

// Runs prefill of 8 + 4 single steps; returns 12 rows of logits.
std::vector<float> run_reference(ReferenceBackend& b, const std::vector<int32_t>& tokens) {
  const int64_t V = b.model().hp.n_vocab;
  std::vector<float> logits(tokens.size() * size_t(V));
  b.forward(std::span(tokens.data(), 8), logits.data(), true);
  for (size_t i = 8; i < tokens.size(); ++i)
    b.forward(std::span(tokens.data() + i, 1), logits.data() + i * size_t(V), false);
  return logits;
}

TEST(ReferenceForward, MatchesFloat64ForwardOnSyntheticModels) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (Variant variant : variants()) {
    SCOPED_TRACE(variant.name);
    variant.spec.seed = rng();
    Model model = make_synthetic_model(variant.spec);
    const int64_t V = model.hp.n_vocab;
    auto tokens = random_tokens(rng, 12, V);

    ReferenceBackend backend(model, 2, 64);
    auto got = run_reference(backend, tokens);
    EXPECT_EQ(backend.n_past(), 12);

    ForwardF64 ref(model);
    double scale = 0;
    std::vector<double> want;
    for (int32_t t : tokens) {
      auto row = ref.step(t);
      want.insert(want.end(), row.begin(), row.end());
    }
    for (double x : want) scale = std::max(scale, std::fabs(x));
    ASSERT_GT(scale, 0.5) << "synthetic logits should be O(1)";
    WorstError err;
    for (size_t i = 0; i < want.size(); ++i) err.add(got[i], want[i], 1e-4 * scale);
    EXPECT_LE(err.excess(), 1.0) << "max |logit error| " << err.abs() << ", logit scale " << scale;
    std::printf("[ %s ] max |logit - f64| = %.3g (logit scale %.3g)\n", variant.name, err.abs(),
                scale);
  }
}

// A YaRN file with factor 1 is the unscaled model: the same logits, bit for bit, on the reference
// and on the fast path (every pair's blend is of two equal angles, the magnitude 1). At factor 4
// the logits move (the scaling is not ignored).
TEST(ReferenceForward, YarnAtFactorOneEqualsTheUnscaledFile) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  SyntheticSpec spec;
  spec.arch = Arch::Qwen2;
  spec.type = TensorType::Q8_0;
  spec.rope_freq_base = 1000.0f;
  spec.seed = rng();
  const Model plain = make_synthetic_model(spec);
  spec.rope_yarn_factor = 1;
  spec.rope_yarn_orig_ctx = 128;
  const Model yarn1 = make_synthetic_model(spec);
  spec.rope_yarn_factor = 4;
  const Model yarn4 = make_synthetic_model(spec);
  ASSERT_TRUE(yarn1.hp.rope_yarn);
  const auto tokens = random_tokens(rng, 40, plain.hp.n_vocab);
  auto logits = [&](auto& backend) {
    std::vector<float> out(tokens.size() * size_t(plain.hp.n_vocab));
    backend.forward(tokens, out.data(), true);
    return out;
  };
  ReferenceBackend ref_plain(plain, 2, 64), ref_yarn1(yarn1, 2, 64), ref_yarn4(yarn4, 2, 64);
  const auto a = logits(ref_plain);
  EXPECT_EQ(logits(ref_yarn1), a);
  EXPECT_GT(max_abs_diff(logits(ref_yarn4).data(), a.data(), int64_t(a.size())), 1e-3);
  auto fast_plain = make_fast(plain, 2, 64), fast_yarn1 = make_fast(yarn1, 2, 64);
  EXPECT_EQ(logits(*fast_yarn1), logits(*fast_plain));
}

TEST(ReferenceForward, IndependentOfBatchingAndThreadCount) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  SyntheticSpec spec;
  spec.arch = Arch::Qwen2;
  spec.type = TensorType::F16;
  spec.seed = rng();
  Model model = make_synthetic_model(spec);
  const size_t V = size_t(model.hp.n_vocab);
  auto tokens = random_tokens(rng, 12, model.hp.n_vocab);

  // One call of 12 (max_batch 64), one call split into batches of 5, and 12 single-token calls.
  ReferenceBackend whole(model, 1, 64), split(model, 3, 64, 5), single(model, 2, 64);
  std::vector<float> a(12 * V), b(12 * V), c(12 * V);
  whole.forward(tokens, a.data(), true);
  split.forward(tokens, b.data(), true);
  for (size_t i = 0; i < 12; ++i)
    single.forward(std::span(tokens.data() + i, 1), c.data() + i * V, false);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);

  // Without all_logits only the last row is written.
  ReferenceBackend last(model, 2, 64);
  std::vector<float> d(V);
  last.forward(tokens, d.data(), false);
  EXPECT_TRUE(std::equal(d.begin(), d.end(), a.begin() + 11 * V));
}

TEST(ReferenceForward, TruncateRecomputesTheSameLogits) {
  std::mt19937_64 rng(fresh_seed());
  SyntheticSpec spec;
  spec.seed = rng();
  Model model = make_synthetic_model(spec);
  const size_t V = size_t(model.hp.n_vocab);
  auto tokens = random_tokens(rng, 10, model.hp.n_vocab);
  ReferenceBackend b(model, 2, 32);
  std::vector<float> first(10 * V), again(3 * V);
  b.forward(tokens, first.data(), true);
  b.truncate(7);
  EXPECT_EQ(b.n_past(), 7);
  b.forward(std::span(tokens.data() + 7, 3), again.data(), true);
  EXPECT_TRUE(std::equal(again.begin(), again.end(), first.begin() + 7 * V));
  b.truncate(100);  // beyond n_past: nothing to drop
  EXPECT_EQ(b.n_past(), 10);
  EXPECT_THROW(b.truncate(-1), Error);
  b.truncate(0);
  EXPECT_EQ(b.n_past(), 0);
}

// Collects every observer call.
struct Recorder : LayerObserver {
  struct Call {
    int layer;
    std::string stage;
    int pos;
    std::vector<float> hidden;
  };
  std::vector<Call> calls;
  void on_hidden(int layer, const char* stage, int pos, std::span<const float> hidden) override {
    calls.push_back({layer, stage, pos, {hidden.begin(), hidden.end()}});
  }
};

TEST(ReferenceForward, ObserverSeesEveryLayerStageAndPositionWithCorrectStates) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  SyntheticSpec spec;
  spec.arch = Arch::Qwen2;
  spec.seed = rng();
  Model model = make_synthetic_model(spec);
  auto tokens = random_tokens(rng, 5, model.hp.n_vocab);
  ReferenceBackend b(model, 2, 16);
  Recorder rec;
  b.set_observer(&rec);
  std::vector<float> logits(size_t(model.hp.n_vocab));
  b.forward(std::span(tokens.data(), 4), logits.data(), false);
  b.forward(std::span(tokens.data() + 4, 1), logits.data(), false);

  ASSERT_EQ(rec.calls.size(), size_t(2 * 2 * 5));  // 2 layers x 2 stages x 5 positions
  ForwardF64 ref(model);
  std::vector<std::vector<std::vector<double>>> attn(5), ffn(5);  // [pos][layer]
  for (int p = 0; p < 5; ++p) {
    ref.step(tokens[size_t(p)]);
    attn[size_t(p)] = ref.attn_out();
    ffn[size_t(p)] = ref.ffn_out();
  }
  int seen[2][2][5] = {};
  for (const auto& c : rec.calls) {
    ASSERT_TRUE(c.layer >= 0 && c.layer < 2 && c.pos >= 0 && c.pos < 5);
    ASSERT_TRUE(c.stage == "attn_out" || c.stage == "ffn_out") << c.stage;
    const bool is_ffn = c.stage == "ffn_out";
    ++seen[c.layer][is_ffn][c.pos];
    const auto& want = (is_ffn ? ffn : attn)[size_t(c.pos)][size_t(c.layer)];
    ASSERT_EQ(c.hidden.size(), want.size());
    double scale = 0;
    for (double x : want) scale = std::max(scale, std::fabs(x));
    WorstError err;
    for (size_t i = 0; i < want.size(); ++i) err.add(c.hidden[i], want[i], 1e-5 * scale);
    EXPECT_LE(err.excess(), 1.0) << "layer " << c.layer << " " << c.stage << " pos " << c.pos;
  }
  for (auto& l : seen)
    for (auto& s : l)
      for (int count : s) EXPECT_EQ(count, 1);
}

TEST(ReferenceForward, RejectsBadTokensOverflowAndEmptyBatchesWithoutSideEffects) {
  std::mt19937_64 rng(fresh_seed());
  SyntheticSpec spec;
  spec.seed = rng();
  Model model = make_synthetic_model(spec);
  ReferenceBackend b(model, 1, 8);
  EXPECT_EQ(b.n_ctx(), 8);
  EXPECT_EQ(b.name(), "cpu-ref");
  std::vector<float> logits(size_t(8 * model.hp.n_vocab));
  std::vector<int32_t> bad = {1, 2, 96};
  try {
    b.forward(bad, logits.data(), true);
    ADD_FAILURE() << "token 96 of a 96-token vocabulary was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 96 at batch index 2"), std::string::npos)
        << e.what();
  }
  std::vector<int32_t> negative = {-1};
  EXPECT_THROW(b.forward(negative, logits.data(), true), InputError);
  EXPECT_THROW(b.forward({}, logits.data(), true), Error);
  EXPECT_EQ(b.n_past(), 0);

  std::vector<int32_t> six = {1, 2, 3, 4, 5, 6}, three = {7, 8, 9};
  b.forward(six, logits.data(), false);
  try {
    b.forward(three, logits.data(), false);
    ADD_FAILURE() << "context overflow was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context overflow"), std::string::npos) << e.what();
  }
  EXPECT_EQ(b.n_past(), 6);
  b.forward(std::span(three.data(), 2), logits.data(), false);  // exactly fills the context
  EXPECT_EQ(b.n_past(), 8);
}

TEST(ReferenceForward, DefaultContextIsTrainingContextCappedAt4096) {
  SyntheticSpec spec;
  spec.n_ctx_train = 256;
  Model small = make_synthetic_model(spec);
  EXPECT_EQ(ReferenceBackend(small, 1).n_ctx(), 256);
  spec.n_ctx_train = 32768;
  Model large = make_synthetic_model(spec);
  EXPECT_EQ(ReferenceBackend(large, 1).n_ctx(), 4096);
}

}  // namespace
}  // namespace lockstep::backend_test
