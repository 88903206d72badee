// The CUDA backend with several sequences (continuous batching), end to end:
//   - every sequence's rows agree with the CPU reference run on that sequence alone (cosine
//     0.999, top-1 where the reference's lead is clear), on the batched matvecs, on the mmq route
//     (int8 tensor cores) and on the GEMM path of large steps, for the weight types of Q4_K_M
//     files (Q4_K, Q6_K, Q8_0) and of the mmq kernels' other formats (Q4_0, Q5_0);
//   - batch invariance: a sequence decoded among 31 others gets bit for bit the logits it gets
//     alone, and the same as the single-sequence forward() path; on the mmq route, bit for bit
//     the same rows among 2 others as among 31 others;
//   - the gate runs batched steps on CUDA too: a fault of the batched path alone is caught.
#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include "backend/cpu/reference_backend.h"
#include "backend/greedy_pick.h"
#include "parity/gate.h"

namespace lockstep::cuda_test {
namespace {

constexpr double kCosineMin = 0.999;
constexpr double kF16ClearMargin = 0.1;  // as in backend_gpu_test.cpp

// The mmq kernels' 32-wide formats: Q5_0 matrices, Q8_0 ffn_down, Q4_0 embeddings/output.
TinyModelSpec q5_0_mix(uint64_t seed) {
  TinyModelSpec s;
  s.arch = Arch::Qwen2;
  s.matrix_type = TensorType::Q5_0, s.down_type = TensorType::Q8_0;
  s.embd_type = TensorType::Q4_0;
  s.n_head = 4, s.n_head_kv = 2;
  s.seed = seed;
  return s;
}

TinyModelSpec q4_k_m_like(uint64_t seed) {
  TinyModelSpec s;
  s.arch = Arch::Qwen2;
  s.matrix_type = TensorType::Q4_K, s.down_type = TensorType::Q6_K;
  s.embd_type = TensorType::Q8_0;
  s.n_head = 4, s.n_head_kv = 2;
  s.seed = seed;
  return s;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n, int64_t n_vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

// batch_mmq_min, batch_gemm_min: CudaBackendOptions' route thresholds (0: that route off).
std::unique_ptr<Backend> open_cuda(const Model& m, int n_seq, int n_ctx, int batch_gemm_min,
                                   int batch_mmq_min = 0) {
  OpenRequest req;
  req.backend = "cuda";
  req.options.n_ctx = n_ctx;
  req.options.n_seq = n_seq;
  req.options.cuda.batch_gemm_min = batch_gemm_min;
  req.options.cuda.batch_mmq_min = batch_mmq_min;
  ParityConfig cfg;
  cfg.policy = ParityPolicy::Off;
  ServingBackend r = ParityGate::open(m, req, cfg, {}, false);
  EXPECT_EQ(r.backend_used, "cuda");
  return std::move(r.backend);
}

double top2_margin(const float* v, size_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    if (v[i] > a)
      b = a, a = v[i];
    else if (v[i] > b)
      b = v[i];
  }
  return double(a) - double(b);
}

// Sequences of different prompt lengths (1 token, shorter and longer than the GEMM threshold),
// then teacher-forced decode steps of all of them in one call each. Returns every sequence's
// logits rows: its prompt's rows, then one per step.
std::vector<std::vector<float>> run_batched(Backend& b, const std::vector<std::vector<int32_t>>& p,
                                            const std::vector<std::vector<int32_t>>& steps) {
  const size_t V = size_t(b.model().hp.n_vocab), S = p.size();
  std::vector<std::vector<float>> rows(S);
  std::vector<SeqTokens> batch;
  for (size_t s = 0; s < S; ++s) {
    b.truncate_seq(int(s), 0);
    rows[s].assign((p[s].size() + steps[s].size()) * V, NAN);
    batch.push_back({int(s), p[s], rows[s].data(), true});
  }
  b.forward_batch(batch);
  for (size_t k = 0; k < steps[0].size(); ++k) {
    batch.clear();
    for (size_t s = 0; s < S; ++s)
      batch.push_back({int(s), {&steps[s][k], 1}, rows[s].data() + (p[s].size() + k) * V, false});
    b.forward_batch(batch);
  }
  return rows;
}

TEST(CudaBatched, SequencesMatchCpuReferenceRowByRow) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const bool k_quants : {true, false}) {
    SCOPED_TRACE(k_quants ? "Q4_K / Q6_K / Q8_0 model" : "Q5_0 / Q8_0 / Q4_0 model");
    const Model m = make_tiny_model(k_quants ? q4_k_m_like(rng()) : q5_0_mix(rng()));
    const size_t V = size_t(m.hp.n_vocab);
    const std::vector<int> lengths = {1, 5, 12, 40, 3, 9};
    std::vector<std::vector<int32_t>> prompts, steps;
    for (int n : lengths) {
      prompts.push_back(random_tokens(rng, n, m.hp.n_vocab));
      steps.push_back(random_tokens(rng, 24, m.hp.n_vocab));
    }
    // The reference: each sequence alone, prompt then its steps.
    std::vector<std::vector<float>> want;
    for (size_t s = 0; s < prompts.size(); ++s) {
      ReferenceBackend ref(m, 0, 128);
      std::vector<int32_t> all = prompts[s];
      all.insert(all.end(), steps[s].begin(), steps[s].end());
      want.emplace_back(all.size() * V);
      ref.forward(all, want.back().data(), true);
    }
    // Batched matvecs (0, 0), the GEMMs for every step of at least 4 tokens, the mmq route for
    // every step of at least 2 (and the matvecs for the one-token steps of the prompts).
    const std::pair<int, int> routes[] = {{0, 0}, {4, 0}, {0, 2}};
    for (const auto& [gemm_min, mmq_min] : routes) {
      SCOPED_TRACE("batch_gemm_min " + std::to_string(gemm_min) + ", batch_mmq_min " +
                   std::to_string(mmq_min));
      auto cuda = open_cuda(m, 8, 128, gemm_min, mmq_min);
      ASSERT_EQ(cuda->n_seq(), 8);
      const auto got = run_batched(*cuda, prompts, steps);
      for (size_t s = 0; s < prompts.size(); ++s) {
        EXPECT_EQ(cuda->seq_past(int(s)), int(prompts[s].size() + steps[s].size()));
        int failures = 0;
        for (size_t r = 0; r * V < got[s].size() && failures < 5; ++r) {
          const float* g = got[s].data() + r * V;
          const float* w = want[s].data() + r * V;
          const double cos = cosine(g, w, V);
          if (!(cos >= kCosineMin)) {
            ADD_FAILURE() << "sequence " << s << " row " << r << ": cosine " << cos;
            ++failures;
          }
          if (argmax(g, V) != argmax(w, V) && top2_margin(w, V) > kF16ClearMargin) {
            ADD_FAILURE() << "sequence " << s << " row " << r << ": top-1 differs";
            ++failures;
          }
        }
      }
    }
  }
}

// Greedy decoding of one sequence: alone (forward(), and forward_batch with it alone) and as one
// of 32 sequences decoding together (the others on their own prompts). Every logits row must be
// bit for bit the same, with the batch-invariant setting and with a GEMM threshold above this
// batch (the mmq route stays off here: from its default, 16, steps take the int8 tensor-core
// products, checked against the reference in SequencesMatchCpuReferenceRowByRow and for their own
// batch invariance in MmqRouteRowsDoNotDependOnTheBatch).
TEST(CudaBatched, ASequenceGetsTheSameBitsAloneAndAmong31Others) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Model m = make_tiny_model(q4_k_m_like(rng()));
  const size_t V = size_t(m.hp.n_vocab);
  constexpr int kSeqs = 32, kSteps = 20;
  std::vector<std::vector<int32_t>> prompts;
  for (int s = 0; s < kSeqs; ++s)
    prompts.push_back(random_tokens(rng, 1 + int(rng() % 30), m.hp.n_vocab));
  for (int gemm_min : {0, kSeqs + 1}) {
    SCOPED_TRACE("batch_gemm_min " + std::to_string(gemm_min));
    auto cuda = open_cuda(m, kSeqs, 96, gemm_min);
    // Alone through forward(): sequence 0.
    std::vector<float> alone(size_t(kSteps + 1) * V);
    std::vector<int32_t> tokens;
    cuda->truncate(0);
    cuda->forward(prompts[0], alone.data(), false);
    for (int k = 0; k < kSteps; ++k) {
      const int32_t t = argmax(alone.data() + size_t(k) * V, V);
      tokens.push_back(t);
      cuda->forward({&t, 1}, alone.data() + size_t(k + 1) * V, false);
    }
    // Alone through forward_batch, in sequence 5.
    std::vector<float> batch_alone(size_t(kSteps + 1) * V);
    cuda->truncate_seq(5, 0);
    cuda->forward_batch(std::vector<SeqTokens>{{5, prompts[0], batch_alone.data(), false}});
    for (int k = 0; k < kSteps; ++k)
      cuda->forward_batch(std::vector<SeqTokens>{
          {5, {&tokens[size_t(k)], 1}, batch_alone.data() + size_t(k + 1) * V, false}});
    // Among 31 others: sequence 7 holds it; all prompts in one call, then greedy steps of all.
    std::vector<float> among(size_t(kSteps + 1) * V), scratch(size_t(kSeqs) * V);
    std::vector<int32_t> next(kSeqs);
    std::vector<SeqTokens> batch;
    for (int s = 0; s < kSeqs; ++s) {
      cuda->truncate_seq(s, 0);
      const int slot = s == 0 ? 7 : (s == 7 ? 0 : s);
      batch.push_back(
          {slot, prompts[size_t(s)], s == 0 ? among.data() : scratch.data() + s * V, false});
    }
    cuda->forward_batch(batch);
    for (int k = 0; k < kSteps; ++k) {
      batch.clear();
      for (int s = 1; s < kSeqs; ++s) next[size_t(s)] = argmax(scratch.data() + s * V, V);
      for (int s = 0; s < kSeqs; ++s) {
        const int slot = s == 0 ? 7 : (s == 7 ? 0 : s);
        const int32_t* t = s == 0 ? &tokens[size_t(k)] : &next[size_t(s)];
        batch.push_back({slot,
                         {t, 1},
                         s == 0 ? among.data() + size_t(k + 1) * V : scratch.data() + s * V,
                         false});
      }
      cuda->forward_batch(batch);
    }
    for (float x : alone) ASSERT_TRUE(std::isfinite(x));
    for (int k = 0; k <= kSteps; ++k) {
      const size_t off = size_t(k) * V;
      EXPECT_EQ(0, std::memcmp(alone.data() + off, batch_alone.data() + off, V * sizeof(float)))
          << "row " << k << ": forward_batch alone differs from forward()";
      EXPECT_EQ(0, std::memcmp(alone.data() + off, among.data() + off, V * sizeof(float)))
          << "row " << k << ": among 31 others differs from alone";
    }
  }
}

// The mmq route's promise (mmq.cu): a token's row does not depend on the batch it is computed in.
// Sequence 0's teacher-forced steps among 2 others and among 31 others (at other positions, on
// their own prompts), both on the mmq route (from 2 rows): every row bit for bit the same, and
// finite. For both weight mixes, so that each mmq format is covered.
TEST(CudaBatched, MmqRouteRowsDoNotDependOnTheBatch) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const bool k_quants : {true, false}) {
    SCOPED_TRACE(k_quants ? "Q4_K / Q6_K / Q8_0 model" : "Q5_0 / Q8_0 / Q4_0 model");
    const Model m = make_tiny_model(k_quants ? q4_k_m_like(rng()) : q5_0_mix(rng()));
    const size_t V = size_t(m.hp.n_vocab);
    constexpr int kSeqs = 32, kSteps = 12;
    std::vector<std::vector<int32_t>> prompts;
    for (int s = 0; s < kSeqs; ++s)
      // At least 2 tokens: a one-token prompt would be decoded together with the other
      // sequences' one-token prompts, on the matvecs or the mmq route depending on how many
      // there are, so sequence 0's cache would depend on the batch.
      prompts.push_back(random_tokens(rng, 2 + int(rng() % 30), m.hp.n_vocab));
    const std::vector<int32_t> steps = random_tokens(rng, kSteps, m.hp.n_vocab);
    auto cuda = open_cuda(m, kSeqs, 96, 0, 2);
    // Sequence 0's step rows when decoded with n - 1 others (each fed its own random tokens).
    auto rows_among = [&](int n) {
      std::vector<float> rows(size_t(kSteps) * V), scratch(V);
      std::vector<SeqTokens> batch;
      for (int s = 0; s < n; ++s) {
        cuda->truncate_seq(s, 0);
        batch.push_back({s, prompts[size_t(s)], nullptr, false});
      }
      cuda->forward_batch(batch);
      std::vector<int32_t> other(static_cast<size_t>(n));
      for (int k = 0; k < kSteps; ++k) {
        batch.clear();
        for (int s = 0; s < n; ++s) {
          other[size_t(s)] = int32_t((rng() % uint64_t(m.hp.n_vocab)));
          batch.push_back({s,
                           {s == 0 ? &steps[size_t(k)] : &other[size_t(s)], 1},
                           s == 0 ? rows.data() + size_t(k) * V : scratch.data(),
                           false});
        }
        cuda->forward_batch(batch);
      }
      return rows;
    };
    const std::vector<float> three = rows_among(3), all = rows_among(kSeqs);
    for (float x : three) ASSERT_TRUE(std::isfinite(x));
    for (int k = 0; k < kSteps; ++k)
      EXPECT_EQ(0, std::memcmp(three.data() + size_t(k) * V, all.data() + size_t(k) * V,
                               V * sizeof(float)))
          << "step " << k << ": among 31 others differs from among 2 others";
  }
}

// Greedy picks made on the device in a batched step (SeqTokens::argmax) are greedy_pick of the
// rows: checked against the row where an item asks for both, and, for items that ask only for the
// pick (over fewer columns than the vocabulary), against the rows of a twin backend fed the same
// steps of the same size (on every route: the batched matvecs, the GEMMs and the mmq products).
TEST(CudaBatched, DevicePicksAreTheGreedyPicksOfTheRows) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Model m = make_tiny_model(q4_k_m_like(rng()));
  const size_t V = size_t(m.hp.n_vocab);
  const int cols = int(V) - 3;
  constexpr int kSeqs = 20, kSteps = 6;
  std::vector<std::vector<int32_t>> prompts;
  for (int s = 0; s < kSeqs; ++s)
    prompts.push_back(random_tokens(rng, 1 + int(rng() % 12), m.hp.n_vocab));
  for (const auto& [gemm_min, mmq_min] : {std::pair{0, 0}, std::pair{2, 0}, std::pair{0, 2}}) {
    SCOPED_TRACE("batch_gemm_min " + std::to_string(gemm_min) + " batch_mmq_min " +
                 std::to_string(mmq_min));
    auto cuda = open_cuda(m, kSeqs, 64, gemm_min, mmq_min);
    auto twin = open_cuda(m, kSeqs, 64, gemm_min, mmq_min);
    std::vector<float> rows(kSeqs * V), twin_rows(kSeqs * V);
    std::vector<int32_t> picks(kSeqs, -7), next(kSeqs);
    std::vector<SeqTokens> a, b;
    for (int s = 0; s < kSeqs; ++s) {
      a.push_back({s, prompts[size_t(s)], rows.data() + s * V, false});
      b.push_back({s, prompts[size_t(s)], twin_rows.data() + s * V, false});
    }
    cuda->forward_batch(a);
    twin->forward_batch(b);
    for (int s = 0; s < kSeqs; ++s) next[size_t(s)] = argmax(rows.data() + s * V, V);
    for (int k = 0; k < kSteps; ++k) {
      a.clear();
      b.clear();
      for (int s = 0; s < kSeqs; ++s) {
        const bool both = s % 2 == 0;
        a.push_back({s,
                     {&next[size_t(s)], 1},
                     both ? rows.data() + s * V : nullptr,
                     false,
                     &picks[size_t(s)],
                     both ? 0 : cols});
        b.push_back({s, {&next[size_t(s)], 1}, twin_rows.data() + s * V, false});
      }
      cuda->forward_batch(a);
      twin->forward_batch(b);
      for (int s = 0; s < kSeqs; ++s) {
        const bool both = s % 2 == 0;
        const float* row = both ? rows.data() + s * V : twin_rows.data() + s * V;
        const int32_t want = greedy_pick({row, both ? V : size_t(cols)});
        ASSERT_NE(want, kNoGreedyPick);
        EXPECT_EQ(picks[size_t(s)], want) << "sequence " << s << " step " << k;
        if (both) {  // the twin agrees bit for bit, so the odd rows' check means what it says
          EXPECT_EQ(0, std::memcmp(row, twin_rows.data() + s * V, V * sizeof(float)));
        }
        next[size_t(s)] = want;
      }
    }
  }
}

// The gate's batched steps run CUDA's batched path: a fault there alone (BatchCorrupt) passes a
// one-sequence gate and is rejected by a gate of several sequences, naming the batched row.
TEST(CudaBatched, GateCatchesAFaultOfTheBatchedPathAlone) {
  REQUIRE_CUDA_DEVICE();
  const Model m = Model::load(shared_path("models/stories260K-Q4_K_M.gguf"));
  const auto probe =
      load_logits_reference(shared_path("reference/logits-stories260K.kvf32-nofa.json")).tokens;
  FaultSpec fault;
  fault.kind = FaultSpec::BatchCorrupt;
  fault.layer = 1;
  fault.magnitude = 4.0f;
  auto open = [&](int n_seq, std::optional<FaultSpec> f) {
    OpenRequest req;
    req.backend = "cuda";
    req.options.n_seq = n_seq;
    req.options.fault = f;
    ParityConfig cfg;
    cfg.policy = ParityPolicy::Strict;
    return ParityGate::open(m, req, cfg, probe, true);
  };
  const ServingBackend healthy = open(4, std::nullopt);
  EXPECT_EQ(healthy.verdict.status, ParityVerdict::Status::Passed)
      << healthy.verdict.failure_text();
  EXPECT_EQ(healthy.verdict.rows.size(), probe.size() + 6u);  // each step has a batched twin
  const ServingBackend one = open(1, fault);
  EXPECT_EQ(one.verdict.status, ParityVerdict::Status::Passed) << one.verdict.failure_text();
  try {
    open(2, fault);
    FAIL() << "the batched fault passed the gate";
  } catch (const ParityError& e) {
    const std::string line = e.what();
    EXPECT_NE(line.find("[lockstep-parity-v1] cuda path rejected (--parity strict)"),
              std::string::npos)
        << line;
    EXPECT_NE(line.find("(batched: sequence 1 at position"), std::string::npos) << line;
  }
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaBatched, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
