// The CUDA backend on the architectures beyond llama/qwen2, end to end, against the CPU reference
// backend row by row (the bounds of backend_gpu_test.cpp: cosine 0.999 at every position, top-1
// wherever the reference leads by more than 0.1 in the default precision):
//   - the tiny random-weight models of ../shared/models/arch (qwen3, gemma2, gemma3, llama with
//     Llama 3.1 rope factors; F32),
//   - synthetic models built in memory from make-model's tiny preset, in F32 and Q4_K_M: phi3
//     (fused qkv and gate/up, bound as row views), gemma3 with six layers and a window of 8
//     (global and sliding layers, each with its own rope base), gemma2 (soft-caps), qwen3,
//     qwen2 with YaRN, llama with rope factors. Their norm weights are random around 1 (make-model
//     writes ones), so a norm weight applied to the wrong element shows.
// Each model runs a prompt of 120 tokens (15 windows of 8) as one prefill, as prefill chunks of
// 40 (windows across chunk boundaries), and token by token (decode steps far past the window).
// Batched multi-sequence decode (gemma3, qwen3, gemma2, phi3) must give each sequence bit for bit
// what it gets alone, and the parity gate must pass CUDA on every model.
#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include <cstdlib>
#include <cstring>

#include "backend/cpu/reference_backend.h"
#include "gguf/gguf_reader.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "model/synthetic_quant_mix.h"
#include "parity/gate.h"

namespace lockstep::cuda_test {
namespace {

constexpr double kCosineMin = 0.999;     // as backend_gpu_test.cpp
constexpr double kF16ClearMargin = 0.1;  // as backend_gpu_test.cpp
// F32 precision (F32 KV cache, split-F16 GEMMs, float activations): top-1 wherever the lead is
// above float noise (logits of magnitude ~15 agree to ~1e-4 there).
constexpr double kF32ClearMargin = 5e-3;
constexpr int kPromptTokens = 120;
constexpr int kCtx = 160;

const char* const kSharedArchModels[] = {"tiny-qwen3", "tiny-gemma2", "tiny-gemma3",
                                         "tiny-llama3-ropefreqs"};

Model load_arch(const std::string& name) {
  return Model::load(shared_path("models/arch/" + name + ".gguf"));
}

struct SynthSpec {
  std::string name;
  Arch arch;
  std::string quant;  // "f32", "q4_k_m"
  int64_t n_layer = 2;
  int64_t sliding_window = 0;  // 0: the preset's
  bool yarn = false;
  bool rope_factors = false;
  float rope_base = 0;  // the global layers' rope base; 0: the preset's (10000)
};

Model make_synthetic(const SynthSpec& s, uint64_t seed) {
  ModelPreset preset = *find_model_preset("tiny");
  preset.n_layer = s.n_layer;
  preset.sliding_window = s.sliding_window;
  if (s.rope_base > 0) preset.rope_freq_base = s.rope_base;
  // A short original context, so that the 64-wide heads' factors span 1 .. 8.
  if (s.rope_factors) preset.rope_scaling = Llama3RopeScaling{8, 1, 4, 64};
  SyntheticPlan plan = plan_synthetic_model(preset, s.arch, *find_quant_scheme(s.quant), seed);
  if (s.yarn) {
    // Factor 4 over an original context of 64: pairs 0 .. 9 of 32 blend (ops_ref.cpp).
    plan.hp.rope_yarn = true;
    plan.hp.rope_freq_scale = 0.25f;
    plan.hp.rope_yarn_orig_ctx = 64;
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (SyntheticTensor& t : plan.tensors) {
    if (!t.ones) continue;
    t.ones = false;
    t.values.resize(size_t(t.ne[0]));
    for (float& v : t.values) v = 1.0f + nd(rng);
  }
  return Model::from_file(
      gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "synthetic-" + s.name));
}

std::vector<SynthSpec> synthetic_specs() {
  std::vector<SynthSpec> v;
  for (const char* q : {"f32", "q4_k_m"}) {
    const std::string sq = q;
    v.push_back({"phi3-" + sq, Arch::Phi3, sq});
    // Global layers at base 1e6, sliding ones at 10000, as in Gemma 3.
    v.push_back({"gemma3-" + sq, Arch::Gemma3, sq, 6, 8, false, false, 1e6f});
    v.push_back({"gemma2-" + sq, Arch::Gemma2, sq, 2, 8});
    v.push_back({"qwen3-" + sq, Arch::Qwen3, sq});
    v.push_back({"qwen2-yarn-" + sq, Arch::Qwen2, sq, 2, 0, true});
    v.push_back({"llama-ropefreqs-" + sq, Arch::Llama, sq, 2, 0, false, true});
  }
  return v;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n, int64_t n_vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

struct CudaOpen {
  bool f32 = false;
  int max_batch = 512;
  int n_seq = 1;
  int batch_gemm_min = 16;
  bool gemm_route_fused = false;
  bool poison = false;
  int batch_mmq_min = 16;
};

std::unique_ptr<Backend> open_cuda(const Model& m, const CudaOpen& o) {
  OpenRequest req;
  req.backend = "cuda";
  req.options.n_ctx = kCtx;
  req.options.n_seq = o.n_seq;
  req.options.cuda.set_precision_f32(o.f32);
  req.options.cuda.max_batch = o.max_batch;
  req.options.cuda.batch_gemm_min = o.batch_gemm_min;
  req.options.cuda.gemm_route_fused = o.gemm_route_fused;
  req.options.cuda.poison_scratch = o.poison;
  req.options.cuda.batch_mmq_min = o.batch_mmq_min;
  // For the GEMM-route hunt (DISABLED_GemmRouteRepeat): the same tests without programmatic
  // launches or CUDA graphs.
  if (std::getenv("LOCKSTEP_TEST_NO_PDL")) req.options.cuda.tuning.pdl = false;
  if (std::getenv("LOCKSTEP_TEST_NO_GRAPHS")) req.options.cuda.cuda_graphs = false;
  ParityConfig cfg;
  cfg.policy = ParityPolicy::Off;
  ServingBackend r = ParityGate::open(m, req, cfg, {}, false);
  EXPECT_EQ(r.backend_used, "cuda");
  return std::move(r.backend);
}

// Logits of every position: in one forward call (prefill, in chunks of the backend's max_batch)
// or one token per call (decode).
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

// Every row: cosine >= kCosineMin (NaN fails); top-1 equal wherever the reference's margin
// exceeds clear_margin. Returns the worst cosine.
double expect_rows_agree(const std::vector<float>& got, const std::vector<float>& want, size_t V,
                         double clear_margin, const std::string& what) {
  EXPECT_EQ(got.size(), want.size());
  const size_t rows = std::min(got.size(), want.size()) / V;
  int failures = 0;
  double worst = 1;
  for (size_t r = 0; r < rows; ++r) {
    const float* g = got.data() + r * V;
    const float* w = want.data() + r * V;
    const double cos = cosine(g, w, V);
    worst = std::isnan(cos) ? cos : std::min(worst, cos);
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
  return worst;
}

// The model's rows through every CUDA path against the CPU reference.
void expect_matches_reference(const Model& m, const std::string& label, uint64_t seed) {
  SCOPED_TRACE(label);
  std::mt19937_64 rng(seed);
  const auto tokens = random_tokens(rng, kPromptTokens, m.hp.n_vocab);
  const size_t V = size_t(m.hp.n_vocab);
  ReferenceBackend reference(m, 0, kCtx);
  const auto want = teacher_forced(reference, tokens, true);
  for (bool f32 : {false, true}) {
    const double margin = f32 ? kF32ClearMargin : kF16ClearMargin;
    const std::string mode = f32 ? "f32" : "default";
    auto one = open_cuda(m, {f32, 512});
    const double w_prefill = expect_rows_agree(teacher_forced(*one, tokens, true), want, V, margin,
                                               label + " " + mode + " prefill");
    const double w_decode = expect_rows_agree(teacher_forced(*one, tokens, false), want, V, margin,
                                              label + " " + mode + " decode");
    auto chunked = open_cuda(m, {f32, 40});
    const double w_chunks = expect_rows_agree(teacher_forced(*chunked, tokens, true), want, V,
                                              margin, label + " " + mode + " prefill chunks of 40");
    std::printf("[ %s %s ] worst cosine: prefill %.7f, decode %.7f, chunked %.7f\n", label.c_str(),
                mode.c_str(), w_prefill, w_decode, w_chunks);
  }
}

// ---- against the CPU reference ------------------------------------------------------------

TEST(CudaArch, SharedTinyModelsMatchCpuReference) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (const char* name : kSharedArchModels) {
    const Model m = load_arch(name);
    ASSERT_FALSE(extended_features(m.hp).empty()) << name;
    expect_matches_reference(m, name, seed);
  }
  // The window is smaller than the prompt, so the sliding layers' masks matter.
  const Model g3 = load_arch("tiny-gemma3");
  EXPECT_GT(g3.hp.sliding_window, 0);
  EXPECT_LT(g3.hp.sliding_window, kPromptTokens / 4);
}

TEST(CudaArch, SyntheticModelsMatchCpuReference) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (const SynthSpec& s : synthetic_specs()) {
    const Model m = make_synthetic(s, seed);
    // What each model is there to exercise.
    switch (s.arch) {
      case Arch::Phi3:
        EXPECT_TRUE(m.hp.fused_qkv && m.hp.fused_gate_up);
        EXPECT_NE(m.layers[0].wk.data, m.layers[0].wq.data);
        break;
      case Arch::Gemma3:
        EXPECT_EQ(m.hp.sliding_window, 8);
        EXPECT_FALSE(m.hp.layer_slides(5));
        EXPECT_TRUE(m.hp.layer_slides(0));
        EXPECT_NE(m.hp.rope_freq_base_swa, m.hp.rope_freq_base);
        break;
      case Arch::Gemma2:
        EXPECT_GT(m.hp.attn_softcap, 0);
        EXPECT_GT(m.hp.final_softcap, 0);
        break;
      case Arch::Qwen2:
        EXPECT_TRUE(m.hp.rope_yarn);
        break;
      case Arch::Llama:
        EXPECT_TRUE(m.hp.has_rope_freqs);
        break;
      default:
        break;
    }
    expect_matches_reference(m, s.name, seed);
  }
}

// ---- batched multi-sequence decode -------------------------------------------------------

// The routes of a batched decode step (CudaBackendOptions::batch_mmq_min, batch_gemm_min).
enum class StepRoute { Matvec, Mmq, Gemm };

// Four sequences with prompts of 3 to 50 tokens, then 16 greedy steps of all four together
// (each step one batched decode step; positions run past the window): every row equals, bit for
// bit, what the sequence gets alone through forward(), and agrees with the CPU reference. The
// same with mmq steps (batch_mmq_min 2) or GEMM steps (batch_gemm_min 2, off by default, forced
// on for fused-tensor models too): reference agreement only. The scratch starts poisoned, so a
// read of a value never written fails in every process.
void expect_batched_matches_alone(const Model& m, const std::string& label, uint64_t seed,
                                  std::initializer_list<StepRoute> routes = {StepRoute::Matvec,
                                                                             StepRoute::Mmq}) {
  SCOPED_TRACE(label);
  std::mt19937_64 rng(seed);
  const size_t V = size_t(m.hp.n_vocab);
  constexpr int kSeqs = 4, kSteps = 16;
  const int lengths[kSeqs] = {50, 3, 21, 9};
  std::vector<std::vector<int32_t>> prompts, steps(kSeqs);
  for (int s = 0; s < kSeqs; ++s) prompts.push_back(random_tokens(rng, lengths[s], m.hp.n_vocab));
  for (StepRoute route : routes) {
    const int gemm_min = route == StepRoute::Gemm ? 2 : 0;
    const int mmq_min = route == StepRoute::Mmq ? 2 : 0;
    SCOPED_TRACE("batch_gemm_min " + std::to_string(gemm_min) + ", batch_mmq_min " +
                 std::to_string(mmq_min));
    auto batched = open_cuda(m, {false, 512, kSeqs, gemm_min, true, true, mmq_min});
    std::vector<std::vector<float>> rows(kSeqs);  // each sequence's logits, one row per step
    std::vector<float> scratch(size_t(kSeqs) * V);
    std::vector<SeqTokens> batch;
    for (int s = 0; s < kSeqs; ++s)
      batch.push_back({s, prompts[size_t(s)], &scratch[s * V], false});
    batched->forward_batch(batch);
    std::vector<int32_t> next(kSeqs);
    for (int k = 0; k < kSteps; ++k) {
      batch.clear();
      for (int s = 0; s < kSeqs; ++s) {
        rows[size_t(s)].insert(rows[size_t(s)].end(), &scratch[s * V], &scratch[s * V] + V);
        next[size_t(s)] = argmax(&scratch[s * V], V);
        steps[size_t(s)].push_back(next[size_t(s)]);
      }
      for (int s = 0; s < kSeqs; ++s) batch.push_back({s, {&next[size_t(s)], 1}, &scratch[s * V]});
      batched->forward_batch(batch);
    }
    for (int s = 0; s < kSeqs; ++s)
      rows[size_t(s)].insert(rows[size_t(s)].end(), &scratch[s * V], &scratch[s * V] + V);

    auto alone = open_cuda(m, {false, 512, 1, 16});
    ReferenceBackend reference(m, 0, kCtx);
    for (int s = 0; s < kSeqs; ++s) {
      SCOPED_TRACE("sequence " + std::to_string(s));
      std::vector<float> single((kSteps + 1) * V), want((kSteps + 1) * V);
      for (Backend* b : {static_cast<Backend*>(alone.get()), static_cast<Backend*>(&reference)}) {
        float* out = b == alone.get() ? single.data() : want.data();
        b->truncate(0);
        b->forward(prompts[size_t(s)], out, false);
        for (int k = 0; k < kSteps; ++k)
          b->forward({&steps[size_t(s)][size_t(k)], 1}, out + (k + 1) * V, false);
      }
      expect_rows_agree(rows[size_t(s)], want, V, kF16ClearMargin, label + " batched");
      for (float x : rows[size_t(s)]) ASSERT_TRUE(std::isfinite(x));
      if (route != StepRoute::Matvec) continue;
      for (int k = 0; k <= kSteps; ++k)
        EXPECT_EQ(0, std::memcmp(rows[size_t(s)].data() + k * V, single.data() + k * V,
                                 V * sizeof(float)))
            << "step " << k << ": batched differs from the sequence alone";
    }
  }
}

TEST(CudaArch, BatchedDecodeEqualsEachSequenceAlone) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (const char* name : {"tiny-gemma3", "tiny-qwen3", "tiny-gemma2"})
    expect_batched_matches_alone(load_arch(name), name, seed);
  for (const SynthSpec& s : synthetic_specs())
    if (s.quant == "q4_k_m" && (s.arch == Arch::Gemma3 || s.arch == Arch::Phi3))
      expect_batched_matches_alone(make_synthetic(s, seed), s.name, seed);
}

// Not a test (run with --gtest_also_run_disabled_tests): why the GEMM route gave phi3 wrong rows
// (2026-12-06). Four sequences as above, 16 batched steps through the GEMM route (forced on for
// fused models) in each precision, and every step's cosine against the reference per sequence,
// with the reference's top-2 margin and largest |logit|; unfused llama-like models beside it.
TEST(CudaArch, DISABLED_GemmRouteDiagnosis) {
  REQUIRE_CUDA_DEVICE();
  for (uint64_t seed : {uint64_t(7027318527099937821ull), uint64_t(fresh_seed())}) {
    for (const SynthSpec& s : synthetic_specs()) {
      if (s.name != "phi3-q4_k_m" && s.name != "llama-ropefreqs-q4_k_m") continue;
      const Model m = make_synthetic(s, seed);
      std::mt19937_64 rng(seed);
      const size_t V = size_t(m.hp.n_vocab);
      constexpr int kSeqs = 4, kSteps = 16;
      const int lengths[kSeqs] = {50, 3, 21, 9};
      std::vector<std::vector<int32_t>> prompts;
      for (int q = 0; q < kSeqs; ++q)
        prompts.push_back(random_tokens(rng, lengths[q], m.hp.n_vocab));
      for (int mode = 0; mode < 6; ++mode) {
        // 0: GEMM route f16, 1: GEMM route f32, 2: matvec route, 3: GEMM route, prompts alone,
        // 4: GEMM route f16 with the scratch poisoned (NaN), 5: mmq route, poisoned
        const bool f32 = mode == 1;
        CudaOpen o{
            f32, 512, kSeqs, mode == 2 || mode == 5 ? 0 : 2, true, mode >= 4, mode == 5 ? 2 : 16};
        auto batched = open_cuda(m, o);
        std::vector<std::vector<float>> rows(kSeqs);
        std::vector<std::vector<int32_t>> steps(kSeqs);
        std::vector<float> scratch(size_t(kSeqs) * V);
        std::vector<SeqTokens> batch;
        if (mode == 3) {
          for (int q = 0; q < kSeqs; ++q)
            batched->forward_batch(
                std::vector<SeqTokens>{{q, prompts[size_t(q)], &scratch[q * V], false}});
        } else {
          for (int q = 0; q < kSeqs; ++q)
            batch.push_back({q, prompts[size_t(q)], &scratch[q * V], false});
          batched->forward_batch(batch);
        }
        std::vector<int32_t> next(kSeqs);
        for (int k = 0; k <= kSteps; ++k) {
          for (int q = 0; q < kSeqs; ++q) {
            rows[size_t(q)].insert(rows[size_t(q)].end(), &scratch[q * V], &scratch[q * V] + V);
            next[size_t(q)] = argmax(&scratch[q * V], V);
            steps[size_t(q)].push_back(next[size_t(q)]);
          }
          if (k == kSteps) break;
          batch.clear();
          for (int q = 0; q < kSeqs; ++q)
            batch.push_back({q, {&next[size_t(q)], 1}, &scratch[q * V]});
          batched->forward_batch(batch);
        }
        ReferenceBackend reference(m, 0, kCtx);
        for (int q = 0; q < kSeqs; ++q) {
          std::vector<float> want((kSteps + 1) * V);
          reference.truncate(0);
          reference.forward(prompts[size_t(q)], want.data(), false);
          for (int k = 0; k < kSteps; ++k)
            reference.forward({&steps[size_t(q)][size_t(k)], 1}, want.data() + (k + 1) * V, false);
          std::printf("[diag %s seed %llu mode %d seq %d]", s.name.c_str(),
                      static_cast<unsigned long long>(seed), mode, q);
          double worst = 1;
          for (int k = 0; k <= kSteps; ++k) {
            const float* g = rows[size_t(q)].data() + k * V;
            const float* w = want.data() + k * V;
            const double c = cosine(g, w, V);
            worst = std::min(worst, c);
            float mx = 0;
            for (size_t i = 0; i < V; ++i) mx = std::max(mx, std::fabs(w[i]));
            if (c < 0.999) std::printf(" k%d:%.3f(m%.2f,|%.0f|)", k, c, top2_margin(w, V), mx);
          }
          std::printf(" worst %.6f\n", worst);
        }
      }
    }
  }
}

// Not a test: the batched comparison above on gemma3 and phi3 with LOCKSTEP_TEST_REPEAT (default
// 4) fresh seeds, to count how often the GEMM route goes wrong (it did on the H100 for one model
// in a few, never in a process of its own so far).
TEST(CudaArch, DISABLED_GemmRouteRepeat) {
  REQUIRE_CUDA_DEVICE();
  const char* r = std::getenv("LOCKSTEP_TEST_REPEAT");
  const int repeat = r ? std::atoi(r) : 4;
  for (int i = 0; i < repeat; ++i) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (const SynthSpec& s : synthetic_specs())
      if (s.quant == "q4_k_m" && (s.arch == Arch::Gemma3 || s.arch == Arch::Phi3))
        expect_batched_matches_alone(make_synthetic(s, seed), s.name, seed,
                                     {StepRoute::Matvec, StepRoute::Gemm});
  }
}

// ---- the gate -----------------------------------------------------------------------------

TEST(CudaArch, GatePassesCudaOnEveryArchitecture) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<std::pair<std::string, Model>> models;
  for (const char* name : kSharedArchModels) models.emplace_back(name, load_arch(name));
  for (const SynthSpec& s : synthetic_specs())
    if (s.quant == "q4_k_m") models.emplace_back(s.name, make_synthetic(s, seed));
  std::mt19937_64 rng(seed);
  for (auto& [name, m] : models) {
    SCOPED_TRACE(name);
    const auto probe = random_tokens(rng, 40, m.hp.n_vocab);
    OpenRequest req;
    req.backend = "cuda";
    req.options.n_ctx = kCtx;
    ServingBackend r = ParityGate::open(m, req, ParityConfig{}, probe, true);
    EXPECT_EQ(r.backend_used, "cuda") << r.verdict.failure_text();
    EXPECT_EQ(r.verdict.status, ParityVerdict::Status::Passed) << r.verdict.failure_text();
    std::printf("[ %s gate ] worst cosine %.7f at %s\n", name.c_str(), r.verdict.worst_cosine,
                r.verdict.worst_cosine_at.c_str());
  }
}

// A fault in the CUDA backend alone is still caught on these architectures (the gate compares,
// it does not just pass), and the same fault on both backends passes: the knobs act at the same
// place of the gemma3 block (after the post-FFN norm's residual add) on both.
TEST(CudaArch, FaultKnobsAreCaughtAndMatchTheReferenceOnGemma3) {
  REQUIRE_CUDA_DEVICE();
  const Model m = load_arch("tiny-gemma3");
  std::mt19937_64 rng(fresh_seed());
  const auto probe = random_tokens(rng, 40, m.hp.n_vocab);
  ParityConfig cfg;
  auto ref = std::make_unique<ReferenceBackend>(m, 0, kCtx);
  auto cuda = open_cuda(m, {});
  ASSERT_EQ(ParityComparison::compare(*ref, *cuda, probe, cfg).status,
            ParityVerdict::Status::Passed);
  FaultSpec drift{FaultSpec::KvDrift, 5.0f, 0, 0};
  FaultSpec corrupt_global{FaultSpec::LayerCorrupt, 5.0f, 5, 20};  // layer 5: the global one
  FaultSpec corrupt_sliding{FaultSpec::LayerCorrupt, 5.0f, 2, 30};
  for (const FaultSpec& f : {drift, corrupt_global, corrupt_sliding}) {
    SCOPED_TRACE("fault kind " + std::to_string(int(f.kind)) + " layer " + std::to_string(f.layer));
    ref->set_fault(FaultSpec{});
    cuda->set_fault(f);
    EXPECT_EQ(ParityComparison::compare(*ref, *cuda, probe, cfg).status,
              ParityVerdict::Status::Rejected);
    // Both anew: set_fault restarts the fault's call count, which scales KvDrift.
    ref->set_fault(f);
    cuda->set_fault(f);
    const auto same = ParityComparison::compare(*ref, *cuda, probe, cfg);
    EXPECT_EQ(same.status, ParityVerdict::Status::Passed) << same.failure_text();
  }
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaArch, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
