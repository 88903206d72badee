// The fast CPU path ("cpu") against the reference ("cpu-ref") on tiny synthetic llama and qwen2
// models in the weight types real files use: logits of a teacher-forced sequence, greedy
// continuations, batching and thread-count independence, the fault knob, and the parity gate
// accepting it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/fast_backend.h"
#include "backend/cpu/reference_backend.h"
#include "backend/fast_compare.h"
#include "backend/random_data.h"
#include "backend/synthetic_model.h"
#include "parity/gate.h"
#include "quant/vec_dot.h"
#include "util/error.h"

namespace lockstep::backend_test {
namespace {

struct Case {
  std::string name;
  SyntheticSpec spec;
};

// K-quants need rows of 256: those models are 256 wide with 64-dim heads; the 32-block and F16
// ones keep the default 64-wide shape with 16-dim heads.
std::vector<Case> cases() {
  std::vector<Case> out;
  for (Arch arch : {Arch::Llama, Arch::Qwen2}) {
    for (TensorType type : {TensorType::Q4_K, TensorType::Q6_K, TensorType::Q8_0, TensorType::Q4_0,
                            TensorType::F16}) {
      SyntheticSpec s;
      s.arch = arch;
      s.type = type;
      if (type == TensorType::Q4_K || type == TensorType::Q6_K) {
        s.n_embd = 256;
        s.n_ff = 512;
      }
      if (arch == Arch::Qwen2) s.rope_freq_base = 1e6f;
      out.push_back({std::string(arch_name(arch)) + "-" + tensor_type_info(type).name, s});
    }
  }
  return out;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n, int64_t n_vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

// All logits of `tokens` in one forward call from an empty cache.
template <class B>
std::vector<float> teacher_forced(B& b, const std::vector<int32_t>& tokens) {
  std::vector<float> logits(tokens.size() * size_t(b.model().hp.n_vocab));
  b.truncate(0);
  b.forward(tokens, logits.data(), true);
  return logits;
}

// Logit cosine vs the reference, at every position. F16 weights keep float activations (only the
// F16 KV cache rounds): 0.9999; measured worst 0.999998. Quantized weights: the activations are
// quantized to 8 bits before every matmul, as llama.cpp does, and that alone costs far more than
// 1e-4 on these models (1 - cosine about 1e-3 on average; worst 0.99654 over 40 runs x 32
// positions x 8 models x 3 ISAs x 2 KV types: each of the 15 matmuls adds ~0.5% relative noise
// and the peaked synthetic attention amplifies it; with every layer matmul exact and only the
// vocabulary projection quantized it is 4e-5). So the bound is the parity gate's own, 0.99: the
// fast path must pass the gate everywhere, and indexing or scaling errors fall far below it (the
// kernels themselves are pinned tightly against float64 in matmul_fast_test / gemm_q8_0_test).
double min_cosine(TensorType type) {
  return type == TensorType::F16 ? 0.9999 : 0.99;
}

// Greedy agreement is required where the reference's top-2 margin is clear: a flip needs the
// two logits to move towards each other by the margin, i.e. a logit error of half the margin.
// Quantized weights: one int8 activation term moved logits by up to 0.5 here (logit scale ~11;
// the same size as llama.cpp's Q8_0 path vs FP32 on stories260K, 0.35-0.44, ../shared/reference
// README), so 1.2 (2 x 0.6); the two-term activations move them far less (0.02-0.03 on the real
// models, bench/NOTES.md), which this bound leaves room for. F16 weights (float activations,
// only the F16 KV cache rounds): logits move by < 0.01, so 0.05.
double clear_margin(TensorType type) {
  return type == TensorType::F16 ? 0.05 : 1.2;
}

struct IsaGuard {
  ~IsaGuard() { force_isa(best_isa()); }
};

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

TEST(FastBackend, TeacherForcedLogitsMatchTheReferenceAtEveryPosition) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  IsaGuard restore;
  for (Case c : cases()) {
    SCOPED_TRACE(c.name);
    c.spec.seed = rng();
    Model model = make_synthetic_model(c.spec);
    const int64_t V = model.hp.n_vocab;
    const auto tokens = random_tokens(rng, 32, V);
    ReferenceBackend ref(model, 2, 64);
    const auto want = teacher_forced(ref, tokens);
    // Every kernel variant: each ISA the CPU has, and both KV cache types.
    for (Isa isa : supported_isas()) {
      force_isa(isa);
      for (cpu::KvType kv : {cpu::KvType::F16, cpu::KvType::F32}) {
        SCOPED_TRACE(std::string(isa_name(isa)) + " kv " + cpu::kv_type_name(kv));
        auto fast = make_fast(model, 2, 64, kv);
        const auto got = teacher_forced(*fast, tokens);
        double worst_cos = 1, worst_abs = 0, scale = 0;
        for (size_t p = 0; p < tokens.size(); ++p) {
          const double cs = cosine(got.data() + p * V, want.data() + p * V, V);
          EXPECT_GE(cs, min_cosine(c.spec.type)) << "position " << p;
          worst_cos = std::isnan(cs) ? cs : std::min(worst_cos, cs);
          worst_abs = std::max(worst_abs, max_abs_diff(got.data() + p * V, want.data() + p * V, V));
        }
        for (float x : want) scale = std::max(scale, double(std::fabs(x)));
        std::printf("[ %-10s %-6s kv %s ] worst cosine %.7f, max |d logit| %.3g (scale %.3g)\n",
                    c.name.c_str(), isa_name(isa), cpu::kv_type_name(kv), worst_cos, worst_abs,
                    scale);
      }
    }
  }
}

// The reference generates 32 tokens greedily; the fast path is fed the same tokens in lockstep
// (as the parity gate does) and must choose the reference's token at every step whose reference
// margin is clear. So a free-running fast generation equals the reference's for as long as the
// reference's margins stay clear; after a near-tie both continuations are legitimate.
TEST(FastBackend, GreedyTokensMatchTheReferenceWhereTheMarginIsClear) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  int compared = 0, total = 0;
  for (Case c : cases()) {
    SCOPED_TRACE(c.name);
    c.spec.seed = rng();
    Model model = make_synthetic_model(c.spec);
    const int64_t V = model.hp.n_vocab;
    const auto prompt = random_tokens(rng, 4, V);
    ReferenceBackend ref(model, 2, 64);
    std::vector<double> margins;
    const auto want = greedy(ref, prompt, 32, &margins);

    auto fast = make_fast(model, 2, 64);
    std::vector<float> logits(static_cast<size_t>(V));
    fast->forward(prompt, logits.data(), false);
    int clear = 0, free_run_equal = 0;
    bool diverged = false;
    for (size_t s = 0; s < want.size(); ++s) {
      const int32_t mine = argmax(logits.data(), V);
      if (margins[s] > clear_margin(c.spec.type)) {
        ++clear;
        EXPECT_EQ(mine, want[s]) << "step " << s << ", reference top-2 margin " << margins[s];
      }
      diverged = diverged || mine != want[s];
      free_run_equal += !diverged;
      if (s + 1 < want.size()) fast->forward(std::span(&want[s], 1), logits.data(), false);
    }
    compared += clear;
    total += int(want.size());
    std::printf("[ %-10s ] %2d/32 clear-margin steps compared; free-running equal for %d steps\n",
                c.name.c_str(), clear, free_run_equal);
  }
  // The rule must not make the test vacuous.
  EXPECT_GE(compared, total / 4) << "too few clear-margin steps";
}

TEST(FastBackend, BatchingAndThreadCountDoNotChangeTheResult) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  for (TensorType type : {TensorType::Q4_K, TensorType::Q8_0}) {
    SCOPED_TRACE(tensor_type_info(type).name);
    SyntheticSpec spec;
    spec.arch = Arch::Qwen2;
    spec.type = type;
    spec.n_embd = 256;
    spec.n_ff = 512;
    spec.seed = rng();
    Model model = make_synthetic_model(spec);
    const size_t V = size_t(model.hp.n_vocab);
    const auto tokens = random_tokens(rng, 20, model.hp.n_vocab);
    // One call of 20 (a prefill batch), batches of 7, and 20 single-token calls (decode matvecs).
    auto whole = make_fast(model, 1, 64);
    auto split = make_fast(model, 3, 64, cpu::KvType::F16, 7);
    auto single = make_fast(model, 2, 64);
    std::vector<float> a(20 * V), b(20 * V), c(20 * V);
    whole->forward(tokens, a.data(), true);
    split->forward(tokens, b.data(), true);
    for (size_t i = 0; i < 20; ++i)
      single->forward(std::span(tokens.data() + i, 1), c.data() + i * V, false);
    // Every logit is the same vec_dot of the same quantized rows, whatever the split.
    EXPECT_EQ(a, b);
    EXPECT_EQ(a, c);
    std::vector<float> last(V);
    whole->truncate(0);
    whole->forward(tokens, last.data(), false);
    EXPECT_TRUE(std::equal(last.begin(), last.end(), a.begin() + 19 * V));
  }
}

// ---- TEST KNOB: the faults behave on the fast path exactly as on the reference ---------------

class FastFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = fresh_seed();
    std::mt19937_64 rng(seed_);
    SyntheticSpec spec;
    spec.arch = Arch::Qwen2;
    spec.type = TensorType::Q8_0;
    spec.seed = rng();
    model_ = std::make_unique<Model>(make_synthetic_model(spec));
    tokens_ = random_tokens(rng, 12, model_->hp.n_vocab);
  }
  size_t V() const { return size_t(model_->hp.n_vocab); }

  // Prefill of 8 (all logits), then 4 single steps: 5 calls, 12 rows.
  template <class B>
  std::vector<std::vector<float>> run(B& b) {
    std::vector<std::vector<float>> calls;
    calls.emplace_back(8 * V());
    b.forward(std::span(tokens_.data(), 8), calls.back().data(), true);
    for (size_t i = 8; i < 12; ++i) {
      calls.emplace_back(V());
      b.forward(std::span(tokens_.data() + i, 1), calls.back().data(), false);
    }
    return calls;
  }

  uint64_t seed_ = 0;
  std::unique_ptr<Model> model_;
  std::vector<int32_t> tokens_;
};

TEST_F(FastFaults, KvDriftLeavesTheFirstCallsExactAndGrowsAfterwards) {
  SCOPED_TRACE(seed_trace(seed_));
  for (cpu::KvType kv : {cpu::KvType::F16, cpu::KvType::F32}) {
    SCOPED_TRACE(cpu::kv_type_name(kv));
    auto clean = make_fast(*model_, 2, 32, kv);
    auto faulty = make_fast(*model_, 2, 32, kv);
    FaultSpec f;
    f.kind = FaultSpec::KvDrift;
    f.magnitude = 0.5f;
    faulty->set_fault(f);
    const auto want = run(*clean);
    const auto got = run(*faulty);
    EXPECT_EQ(got[0], want[0]);
    EXPECT_EQ(got[1], want[1]);
    // The fast path re-quantizes the attention output to Q8 before the output projection, so a
    // drift that moves the reference's logits by ~1e-4 (one drifted position that the next token
    // barely attends to) can round back to the same codes in every block: call 2 was seen
    // unchanged in CI at magnitude 0.05. What must hold: the drift shows once it has piled up
    // (the last call), and no call turns non-finite.
    double last = 0;
    for (size_t call = 2; call < got.size(); ++call) {
      const double d = max_abs_diff(got[call].data(), want[call].data(), int64_t(V()));
      EXPECT_TRUE(std::isfinite(d)) << "call " << call;
      std::printf("[ kv-drift %s ] call %zu: max |logit change| %.3g\n", cpu::kv_type_name(kv),
                  call, d);
      last = d;
    }
    EXPECT_GT(last, 0.0);
  }
}

TEST_F(FastFaults, LayerCorruptMovesTheSameElementsByTheSameSignsAsOnTheReference) {
  SCOPED_TRACE(seed_trace(seed_));
  struct HiddenAt : LayerObserver {
    int layer = 0;
    std::vector<float> h;
    void on_hidden(int l, const char* stage, int p, std::span<const float> hidden) override {
      if (l == layer && p == 5 && std::string(stage) == "ffn_out")
        h.assign(hidden.begin(), hidden.end());
    }
  };
  FaultSpec f;
  f.kind = FaultSpec::LayerCorrupt;
  f.magnitude = 0.5f;
  f.layer = 0;
  f.position = 5;

  // Sign pattern of the corruption on each path: faulty minus clean hidden state.
  auto deltas = [&](auto make) {
    auto clean = make();
    auto faulty = make();
    faulty->set_fault(f);
    HiddenAt clean_obs, faulty_obs;
    clean->set_observer(&clean_obs);
    faulty->set_observer(&faulty_obs);
    const auto want = run(*clean);
    const auto got = run(*faulty);
    for (size_t row = 0; row < 8; ++row) {
      const double d =
          max_abs_diff(got[0].data() + row * V(), want[0].data() + row * V(), int64_t(V()));
      // Rows after 5 see the corruption only through attention in layer 1; with peaked
      // attention that change can be smaller than a step of the fast path's quantized
      // activations and vanish, so only rows 0-5 are pinned.
      if (row < 5) {
        EXPECT_EQ(d, 0.0) << "row " << row;
      } else if (row == 5) {
        EXPECT_GT(d, 0.0) << "row " << row;
      }
    }
    std::vector<float> delta(clean_obs.h.size());
    for (size_t i = 0; i < delta.size(); ++i) delta[i] = faulty_obs.h[i] - clean_obs.h[i];
    return delta;
  };
  const auto fast = deltas([&] { return make_fast(*model_, 2, 32); });
  const auto ref = deltas([&] { return std::make_unique<ReferenceBackend>(*model_, 2, 32); });
  ASSERT_EQ(fast.size(), size_t(model_->hp.n_embd));
  ASSERT_EQ(ref.size(), fast.size());
  for (size_t i = 0; i < fast.size(); ++i) {
    EXPECT_NEAR(std::fabs(fast[i]), 0.5f, 1e-5f) << "element " << i;
    EXPECT_EQ(fast[i] > 0, ref[i] > 0) << "element " << i;
  }
}

TEST_F(FastFaults, NaNAppearsInTheFirstRowAtOrAfterItsPositionOnly) {
  SCOPED_TRACE(seed_trace(seed_));
  auto b = make_fast(*model_, 2, 32);
  FaultSpec f;
  f.kind = FaultSpec::NaN;
  f.position = 9;
  b->set_fault(f);
  const auto calls = run(*b);  // calls: [0..7], 8, 9, 10, 11
  auto count_nan = [](const std::vector<float>& v) {
    return std::count_if(v.begin(), v.end(), [](float x) { return std::isnan(x); });
  };
  EXPECT_EQ(count_nan(calls[0]), 0);
  EXPECT_EQ(count_nan(calls[1]), 0);
  EXPECT_EQ(count_nan(calls[2]), int64_t(V()));
  EXPECT_EQ(count_nan(calls[3]), 0);
  EXPECT_EQ(count_nan(calls[4]), 0);

  FaultSpec bad;
  bad.kind = FaultSpec::LayerCorrupt;
  bad.layer = 2;  // the model has layers 0 and 1
  EXPECT_THROW(b->set_fault(bad), InputError);
}

// ---- Through the gate ----------------------------------------------------------------------

TEST(FastBackend, TheParityGateAcceptsItAndHandsItOut) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  SyntheticSpec spec;
  spec.arch = Arch::Qwen2;
  spec.type = TensorType::Q4_K;
  spec.n_embd = 256;
  spec.n_ff = 512;
  spec.seed = rng();
  Model model = make_synthetic_model(spec);
  const auto probe = random_tokens(rng, 16, model.hp.n_vocab);
  OpenRequest request;
  request.backend = "cpu";
  request.options.threads = 2;
  request.options.n_ctx = 64;
  ParityConfig config;
  config.policy = ParityPolicy::Strict;
  ServingBackend r = ParityGate::open(model, request, config, probe, true);
  ASSERT_EQ(r.verdict.status, ParityVerdict::Status::Passed) << r.verdict.failure_text();
  EXPECT_EQ(r.backend_used, "cpu");
  EXPECT_EQ(r.backend->name(), "cpu");
  EXPECT_EQ(r.backend->n_past(), 16);  // the probe was the prompt: it stays cached
  std::printf("[ gate ] worst cosine %.7f at %s, worst KL %.3g\n", r.verdict.worst_cosine,
              r.verdict.worst_cosine_at.c_str(), r.verdict.worst_kl);
  // The reference's probe ran on its own thread while the candidate was created; the verdict
  // says so and carries the times.
  EXPECT_TRUE(r.verdict.reference_overlapped);
  EXPECT_GT(r.verdict.reference_ms, 0.0);
  EXPECT_GE(r.verdict.reference_ms, r.verdict.reference_prefill_ms);
  EXPECT_GT(r.verdict.candidate_ms, 0.0);
  EXPECT_GE(r.verdict.ms, r.verdict.candidate_ms);

  // An error on the reference's thread (here: probe + steps longer than the context) reaches the
  // caller as the same one-line InputError, after the thread is joined.
  const auto too_long = random_tokens(rng, 62, model.hp.n_vocab);
  try {
    ParityGate::open(model, request, config, too_long, true);
    ADD_FAILURE() << "a probe that does not fit the context was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit the context"), std::string::npos)
        << e.what();
  }

  // It serves: the next step matches the reference's.
  ReferenceBackend ref(model, 2, 64);
  std::vector<float> want(size_t(model.hp.n_vocab) * 17), got(size_t(model.hp.n_vocab));
  std::vector<int32_t> seq = probe;
  seq.push_back(argmax(r.prefix_logits.data(), model.hp.n_vocab));
  ref.forward(seq, want.data(), true);
  r.backend->forward(std::span(&seq.back(), 1), got.data(), false);
  EXPECT_GE(cosine(got.data(), want.data() + 16 * model.hp.n_vocab, model.hp.n_vocab),
            min_cosine(spec.type));
}

TEST(FastBackend, DefaultsAndErrors) {
  SyntheticSpec spec;
  spec.seed = fresh_seed();
  Model model = make_synthetic_model(spec);
  FastCpuBackend::Options o;
  o.n_threads = 1;
  FastCpuBackend b(model, o);
  EXPECT_EQ(b.name(), "cpu");
  EXPECT_EQ(b.kv_type(), cpu::KvType::F16);
  EXPECT_EQ(b.n_ctx(), 256);  // min(n_ctx_train, 4096)
  // Gated: no computation before the parity gate let it.
  std::vector<float> logits(size_t(model.hp.n_vocab));
  const int32_t t = 1;
  try {
    b.forward(std::span(&t, 1), logits.data(), false);
    ADD_FAILURE() << "forward() ran before the gate";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitParity);
  }

  auto fast = make_fast(model, 1, 8);
  const int32_t bad = int32_t(model.hp.n_vocab);
  EXPECT_THROW(fast->forward(std::span(&bad, 1), logits.data(), false), InputError);
  std::vector<int32_t> nine(9, 1);
  std::vector<float> rows(9 * size_t(model.hp.n_vocab));
  EXPECT_THROW(fast->forward(nine, rows.data(), true), Error);  // overflows n_ctx 8
  EXPECT_EQ(fast->n_past(), 0);
}

}  // namespace
}  // namespace lockstep::backend_test
