// End-to-end tests of the CUDA backend, obtained only through the parity gate (ParityGate::open;
// with --parity off where a test compares by itself) and compared with
//   - llama.cpp's outputs on the real stories260K model (../shared/reference: greedy ids, and
//     teacher-forced logits that llama2.c's FP32 run.c reproduces to 1.3e-5),
//   - the CPU reference backend, on the stories260K quantizations and on synthetic models with
//     the block-type mix of real Q4_K_M / Q3_K_M files.
// Precision modes: the default ("f16": F16 KV cache, F16 GEMM operands, int8 activations in the
// Q4_K/Q6_K decode matvecs, two int8 terms each: error <= max|x|/64516 per group of 32) must
// reach cosine 0.999 at every position and top-1 wherever the reference's lead is clear;
// LOCKSTEP_CUDA_PRECISION=f32 (F32 KV cache, split-F16 GEMMs, float activations) must reproduce
// the CPU reference's greedy tokens and top-1 at every position.
#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include <cstdlib>
#include <map>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/reference_backend.h"
#include "parity/gate.h"

namespace lockstep::cuda_test {
namespace {

constexpr double kCosineMin = 0.999;  // the bound of the task; the gate's default is 0.99
// Top-1 must agree wherever the reference leads its runner-up by more than this in f16 mode: an
// F16 KV cache alone moves stories260K logits by up to 0.0186 (shared/reference/README.md).
constexpr double kF16ClearMargin = 0.1;

// The precision open_cuda_unchecked() asks for while one is in scope (what
// LOCKSTEP_CUDA_PRECISION sets from the command line: CudaBackendOptions::set_precision_f32).
bool g_precision_f32 = false;
class PrecisionEnv {
 public:
  explicit PrecisionEnv(const char* v) { g_precision_f32 = std::string(v) == "f32"; }
  ~PrecisionEnv() { g_precision_f32 = false; }
};

std::unique_ptr<Backend> open_cuda_unchecked(const Model& m, int n_ctx = 0) {
  OpenRequest req;
  req.backend = "cuda";
  req.options.n_ctx = n_ctx;
  req.options.cuda.set_precision_f32(g_precision_f32);
  ParityConfig cfg;
  cfg.policy = ParityPolicy::Off;
  ServingBackend r = ParityGate::open(m, req, cfg, {}, false);
  EXPECT_EQ(r.backend_used, "cuda");
  EXPECT_EQ(r.backend->name(), "cuda");
  return std::move(r.backend);
}

std::vector<int32_t> greedy(Backend& b, const std::vector<int32_t>& prompt, int n) {
  const size_t V = size_t(b.model().hp.n_vocab);
  std::vector<float> logits(V);
  b.truncate(0);
  b.forward(prompt, logits.data(), false);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    const int32_t t = argmax(logits.data(), V);
    out.push_back(t);
    if (i + 1 < n) b.forward({&t, 1}, logits.data(), false);
  }
  return out;
}

// Logits of every position of `tokens`: in one forward call (prefill path for >= 8 tokens) or
// one token per call (decode path).
std::vector<float> teacher_forced(Backend& b, const std::vector<int32_t>& tokens, bool one_call) {
  const size_t V = size_t(b.model().hp.n_vocab);
  std::vector<float> logits(tokens.size() * V);
  b.truncate(0);
  if (one_call) {
    b.forward(tokens, logits.data(), true);
  } else {
    for (size_t i = 0; i < tokens.size(); ++i)
      b.forward({&tokens[i], 1}, logits.data() + i * V, false);
  }
  return logits;
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

// Every row: cosine >= kCosineMin; top-1 equal wherever the reference's margin exceeds
// `clear_margin` (0: everywhere).
void expect_rows_agree(const std::vector<float>& got, const std::vector<float>& want, size_t V,
                       double clear_margin, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  const size_t rows = got.size() / V;
  int failures = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float* g = got.data() + r * V;
    const float* w = want.data() + r * V;
    const double cos = cosine(g, w, V);
    if (!(cos >= kCosineMin) && failures < 5) {
      ADD_FAILURE() << what << ": position " << r << ": cosine " << cos;
      ++failures;
    }
    if (argmax(g, V) != argmax(w, V) && top2_margin(w, V) > clear_margin && failures < 5) {
      ADD_FAILURE() << what << ": position " << r << ": top-1 " << argmax(g, V) << " vs "
                    << argmax(w, V) << " (reference margin " << top2_margin(w, V) << ")";
      ++failures;
    }
  }
}

Model load_stories(const std::string& file) {
  return Model::load(shared_path("models/" + file));
}

// ---- against llama.cpp on the real model -------------------------------------------------------

TEST(CudaBackendStories, GreedyMatchesLlamaCpp) {
  REQUIRE_CUDA_DEVICE();
  const Model m = load_stories("stories260K.gguf");
  const auto cases = load_greedy_reference(shared_path("reference/greedy-stories260K.json"));
  ASSERT_EQ(cases.size(), 4u);
  for (const char* precision : {"f16", "f32"}) {
    PrecisionEnv env(precision);
    auto cuda = open_cuda_unchecked(m);
    for (const auto& c : cases) {
      const auto got = greedy(*cuda, c.prompt_ids, int(c.generated_ids.size()));
      EXPECT_EQ(got, c.generated_ids)
          << precision << ", prompt of " << c.prompt_ids.size() << " tokens";
    }
  }
}

TEST(CudaBackendStories, TeacherForcedLogitsMatchLlamaCpp) {
  REQUIRE_CUDA_DEVICE();
  const Model m = load_stories("stories260K.gguf");
  const auto fp32 =
      load_logits_reference(shared_path("reference/logits-stories260K.kvf32-nofa.json"));
  const auto dflt = load_logits_reference(shared_path("reference/logits-stories260K.json"));
  ASSERT_EQ(fp32.tokens, dflt.tokens);
  const size_t V = size_t(m.hp.n_vocab);
  auto flat = [](const LogitsReference& r) {
    std::vector<float> f;
    for (const auto& row : r.logits) f.insert(f.end(), row.begin(), row.end());
    return f;
  };
  const auto want32 = flat(fp32), want16 = flat(dflt);
  for (bool one_call : {true, false}) {
    const std::string path = one_call ? "prefill" : "decode";
    {
      auto cuda = open_cuda_unchecked(m);  // default precision: F16 cache as llama.cpp's default
      const auto got = teacher_forced(*cuda, fp32.tokens, one_call);
      expect_rows_agree(got, want16, V, 0.0, path + " f16 vs llama.cpp default");
      expect_rows_agree(got, want32, V, 0.0, path + " f16 vs llama.cpp fp32");
    }
    {
      // F32 cache: within 1e-3 of llama.cpp's FP32 run (which llama2.c matches to 1.3e-5).
      PrecisionEnv env("f32");
      auto cuda = open_cuda_unchecked(m);
      const auto got = teacher_forced(*cuda, fp32.tokens, one_call);
      expect_rows_agree(got, want32, V, 0.0, path + " f32 vs llama.cpp fp32");
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i)
        worst = std::max(worst, double(std::fabs(got[i] - want32[i])));
      EXPECT_LE(worst, 1e-3) << path;
    }
  }
}

// ---- against the CPU reference --------------------------------------------------------------

void expect_greedy_equals_reference(const Model& m,
                                    const std::vector<std::vector<int32_t>>& prompts, int n,
                                    const std::string& what) {
  auto ref = std::make_unique<ReferenceBackend>(m, 0, 0);
  PrecisionEnv env("f32");
  auto cuda = open_cuda_unchecked(m);
  for (const auto& p : prompts) {
    const auto want = greedy(*ref, p, n);
    const auto got = greedy(*cuda, p, n);
    EXPECT_EQ(got, want) << what << ", prompt of " << p.size() << " tokens";
  }
}

void expect_teacher_forced_matches_reference(const Model& m, const std::vector<int32_t>& tokens,
                                             const std::string& what) {
  auto ref = std::make_unique<ReferenceBackend>(m, 0, 0);
  const size_t V = size_t(m.hp.n_vocab);
  const auto want = teacher_forced(*ref, tokens, true);
  for (const char* precision : {"f32", "f16"}) {
    PrecisionEnv env(precision);
    auto cuda = open_cuda_unchecked(m);
    const double margin = std::string(precision) == "f32" ? 0.0 : kF16ClearMargin;
    for (bool one_call : {true, false})
      expect_rows_agree(teacher_forced(*cuda, tokens, one_call), want, V, margin,
                        what + " " + precision + (one_call ? " prefill" : " decode"));
  }
}

TEST(CudaBackendStories, QuantizedModelsMatchCpuReference) {
  REQUIRE_CUDA_DEVICE();
  const auto cases = load_greedy_reference(shared_path("reference/greedy-stories260K.json"));
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& c : cases) prompts.push_back(c.prompt_ids);
  for (const char* file : {"stories260K.gguf", "stories260K-Q8_0.gguf", "stories260K-Q4_0.gguf",
                           "stories260K-Q4_K_M.gguf"}) {
    const Model m = load_stories(file);
    expect_greedy_equals_reference(m, prompts, 64, file);
    std::vector<int32_t> seq = cases[0].prompt_ids;
    seq.insert(seq.end(), cases[0].generated_ids.begin(), cases[0].generated_ids.end());
    expect_teacher_forced_matches_reference(m, seq, file);
  }
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n, int64_t n_vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

TinyModelSpec q4_k_m_like(uint64_t seed) {
  TinyModelSpec s;
  s.arch = Arch::Qwen2;
  s.matrix_type = TensorType::Q4_K, s.down_type = TensorType::Q6_K;
  s.embd_type = TensorType::Q8_0;
  s.n_head = 4, s.n_head_kv = 2;  // head_dim 64, GQA 2
  s.seed = seed;
  return s;
}

TinyModelSpec q3_k_m_like(uint64_t seed) {
  TinyModelSpec s;
  s.arch = Arch::Llama;
  s.matrix_type = TensorType::Q3_K, s.down_type = TensorType::Q5_K;
  s.embd_type = TensorType::F16;
  s.tied_embeddings = true;
  s.n_layer = 3, s.n_head = 8, s.n_head_kv = 8;  // head_dim 32, no GQA
  s.seed = seed;
  return s;
}

TEST(CudaBackendSynthetic, GreedyAndTeacherForcedMatchCpuReference) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const auto& spec : {q4_k_m_like(rng()), q3_k_m_like(rng())}) {
    const Model m = make_tiny_model(spec);
    const std::string what = m.file->path();
    expect_greedy_equals_reference(
        m, {random_tokens(rng, 5, m.hp.n_vocab), random_tokens(rng, 20, m.hp.n_vocab)}, 64, what);
    expect_teacher_forced_matches_reference(m, random_tokens(rng, 256, m.hp.n_vocab), what);
  }
}

// Long context: positions past 4096 on a synthetic model whose context is 6144. Both backends
// teacher-force 4 400 random tokens: the CPU reference in one call; CUDA through the prefill path
// (in chunks of its batch) up to position 4 299 and one token per call after it (decode attention
// split over ~35 chunks of 128 positions). Every row from position 4096 on must agree like
// the short sequences above: cosine >= 0.999, top-1 where the reference's lead is clear.
TEST(CudaBackendSynthetic, LongContextPast4096MatchesCpuReference) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TinyModelSpec spec = q4_k_m_like(rng());
  spec.n_ctx_train = 6144;
  const Model m = make_tiny_model(spec);
  const size_t V = size_t(m.hp.n_vocab);
  constexpr int kTokens = 4400, kDecodeFrom = 4300, kCompareFrom = 4096;
  const std::vector<int32_t> tokens = random_tokens(rng, kTokens, m.hp.n_vocab);
  auto ref = std::make_unique<ReferenceBackend>(m, 0, 6144);
  std::vector<float> want(size_t(kTokens) * V);
  ref->forward(tokens, want.data(), true);
  for (const char* precision : {"f32", "f16"}) {
    PrecisionEnv env(precision);
    auto cuda = open_cuda_unchecked(m, 6144);
    ASSERT_EQ(cuda->n_ctx(), 6144);
    std::vector<float> got(size_t(kTokens) * V, NAN);
    cuda->forward(std::span(tokens.data(), kDecodeFrom), got.data(), true);
    for (int i = kDecodeFrom; i < kTokens; ++i)
      cuda->forward({&tokens[size_t(i)], 1}, got.data() + size_t(i) * V, false);
    const double margin = std::string(precision) == "f32" ? 0.0 : kF16ClearMargin;
    // Positions 4096..4299 come from the prefill path, 4300.. from decode.
    auto rows = [&](const std::vector<float>& v, int from, int to) {
      return std::vector<float>(v.begin() + ptrdiff_t(size_t(from) * V),
                                v.begin() + ptrdiff_t(size_t(to) * V));
    };
    const std::string label = std::string(precision) + ", position = first + row";
    expect_rows_agree(rows(got, kCompareFrom, kDecodeFrom), rows(want, kCompareFrom, kDecodeFrom),
                      V, margin, label + ", prefill rows from 4096");
    expect_rows_agree(rows(got, kDecodeFrom, kTokens), rows(want, kDecodeFrom, kTokens), V, margin,
                      label + ", decode rows from 4300");
  }
}

// ---- the gate -------------------------------------------------------------------------------

std::vector<int32_t> stories_probe() {
  return load_logits_reference(shared_path("reference/logits-stories260K.kvf32-nofa.json")).tokens;
}

TEST(CudaBackendGate, GatePassesCudaOnRealAndSyntheticModels) {
  REQUIRE_CUDA_DEVICE();
  for (int which = 0; which < 2; ++which) {
    const Model m =
        which == 0 ? load_stories("stories260K-Q4_K_M.gguf") : make_tiny_model(q4_k_m_like(7));
    std::vector<int32_t> probe = stories_probe();
    for (auto& t : probe) t %= int32_t(m.hp.n_vocab);
    OpenRequest req;
    req.backend = "cuda";
    ServingBackend r = ParityGate::open(m, req, ParityConfig{}, probe, true);
    EXPECT_EQ(r.backend_used, "cuda") << r.verdict.failure_text();
    EXPECT_EQ(r.verdict.status, ParityVerdict::Status::Passed) << r.verdict.failure_text();
    EXPECT_EQ(int(r.cached_prefix.size()), int(probe.size()));
    // The served backend continues from the cached probe.
    ASSERT_EQ(r.backend->n_past(), int(probe.size()));
    std::vector<float> logits(static_cast<size_t>(m.hp.n_vocab));
    const int32_t next = argmax(r.prefix_logits.data(), logits.size());
    r.backend->forward({&next, 1}, logits.data(), false);
    for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  }
}

// Each fault knob makes the gate reject the CUDA backend; the same fault set on both backends
// passes (same semantics as the CPU reference's knob, so falsification tests mean the same).
TEST(CudaBackendGate, FaultKnobsAreCaughtAndMatchTheReference) {
  REQUIRE_CUDA_DEVICE();
  const Model m = load_stories("stories260K.gguf");
  const auto probe = stories_probe();
  ParityConfig cfg;
  auto ref = std::make_unique<ReferenceBackend>(m, 0, 0);
  auto cuda = open_cuda_unchecked(m);
  ASSERT_EQ(ParityComparison::compare(*ref, *cuda, probe, cfg).status,
            ParityVerdict::Status::Passed);

  FaultSpec drift{FaultSpec::KvDrift, 5.0f, 0, 0};
  FaultSpec corrupt{FaultSpec::LayerCorrupt, 5.0f, 3, 20};
  FaultSpec nan{FaultSpec::NaN, 0, 0, 30};
  for (const FaultSpec& f : {drift, corrupt, nan}) {
    SCOPED_TRACE("fault kind " + std::to_string(int(f.kind)));
    ref->set_fault(FaultSpec{});
    cuda->set_fault(f);
    const auto v = ParityComparison::compare(*ref, *cuda, probe, cfg);
    EXPECT_EQ(v.status, ParityVerdict::Status::Rejected);
    if (f.kind != FaultSpec::NaN) {
      ref->set_fault(f);
      cuda->set_fault(f);
      const auto same = ParityComparison::compare(*ref, *cuda, probe, cfg);
      EXPECT_EQ(same.status, ParityVerdict::Status::Passed) << same.failure_text();
    }
  }
  cuda->set_fault(FaultSpec{});
  EXPECT_THROW(cuda->set_fault(FaultSpec{FaultSpec::LayerCorrupt, 1.0f, 99, 0}), InputError);
}

// ---- observer, graphs, errors -----------------------------------------------------------------

struct Recorder : LayerObserver {
  std::map<std::tuple<int, std::string, int>, std::vector<float>> seen;
  void on_hidden(int layer, const char* stage, int pos, std::span<const float> h) override {
    seen[{layer, stage, pos}] = std::vector<float>(h.begin(), h.end());
  }
};

TEST(CudaBackendObserver, HiddenStatesMatchReferenceInBothPaths) {
  REQUIRE_CUDA_DEVICE();
  const Model m = make_tiny_model(q4_k_m_like(11));
  std::mt19937_64 rng(fresh_seed());
  const auto prompt = random_tokens(rng, 12, m.hp.n_vocab);
  const int32_t extra[2] = {3, 5};
  PrecisionEnv env("f32");
  auto ref = std::make_unique<ReferenceBackend>(m, 0, 0);
  auto cuda = open_cuda_unchecked(m);
  Recorder r_ref, r_cuda;
  ref->set_observer(&r_ref);
  cuda->set_observer(&r_cuda);
  std::vector<float> logits(static_cast<size_t>(m.hp.n_vocab));
  for (Backend* b : {static_cast<Backend*>(ref.get()), cuda.get()}) {
    b->forward(prompt, logits.data(), false);      // prefill path
    b->forward({extra, 2}, logits.data(), false);  // decode path
  }
  ASSERT_EQ(r_cuda.seen.size(), size_t(m.hp.n_layer * 2 * 14));
  for (const auto& [key, want] : r_ref.seen) {
    const auto it = r_cuda.seen.find(key);
    ASSERT_NE(it, r_cuda.seen.end());
    EXPECT_GE(cosine(it->second.data(), want.data(), want.size()), 0.9999)
        << "layer " << std::get<0>(key) << " " << std::get<1>(key) << " pos " << std::get<2>(key);
  }
}

TEST(CudaBackendGraph, GraphReplayEqualsEagerLaunches) {
  REQUIRE_CUDA_DEVICE();
  const Model m = make_tiny_model(q4_k_m_like(5));
  std::mt19937_64 rng(fresh_seed());
  const auto tokens = random_tokens(rng, 40, m.hp.n_vocab);
  auto cuda = open_cuda_unchecked(m);
  const auto graphed = teacher_forced(*cuda, tokens, false);
  Recorder rec;  // an observer forces eager launches
  cuda->set_observer(&rec);
  const auto eager = teacher_forced(*cuda, tokens, false);
  cuda->set_observer(nullptr);
  ASSERT_EQ(graphed.size(), eager.size());
  EXPECT_EQ(std::memcmp(graphed.data(), eager.data(), graphed.size() * sizeof(float)), 0);
  // truncate + recompute gives the same logits as the first time.
  const auto again = teacher_forced(*cuda, tokens, false);
  EXPECT_EQ(std::memcmp(graphed.data(), again.data(), graphed.size() * sizeof(float)), 0);
}

TEST(CudaBackendErrors, OutOfMemoryOverflowAndBadTokens) {
  REQUIRE_CUDA_DEVICE();
  const Model m = load_stories("stories260K.gguf");
  try {
    open_cuda_unchecked(m, 1 << 30);  // a KV cache of ~640 GiB
    ADD_FAILURE() << "no error for an impossible KV cache";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitDevice);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model needs"), std::string::npos) << msg;
    EXPECT_NE(msg.find("GiB free"), std::string::npos) << msg;
  }
  auto cuda = open_cuda_unchecked(m, 16);
  std::vector<float> logits(size_t(m.hp.n_vocab) * 20);
  const std::vector<int32_t> bad = {1, 512};
  EXPECT_THROW(cuda->forward(bad, logits.data(), false), InputError);
  EXPECT_EQ(cuda->n_past(), 0);
  const std::vector<int32_t> twenty(20, 1);
  EXPECT_THROW(cuda->forward(twenty, logits.data(), true), Error);
  EXPECT_THROW(cuda->truncate(-1), Error);
  const std::vector<int32_t> ok(16, 1);
  cuda->forward(ok, logits.data(), false);
  EXPECT_EQ(cuda->n_past(), 16);
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaBackend, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
