// End-to-end tests of the Vulkan backend (on lavapipe in CI), obtained only through the parity
// gate (ParityGate::open; with --parity off where a test compares by itself), compared with
//   - llama.cpp's outputs on the real stories260K model (../shared/reference: greedy ids,
//     teacher-forced logits),
//   - the CPU reference along its greedy path on the Q8_0, Q4_0 and Q4_K_M quantizations,
//   - the CPU reference backend, row by row, on synthetic models: make-model's tiny preset in its
//     Q4_K_M, Q8_0 and F16 mixes (llama and qwen2), and models whose matrices are Q4_0 / Q5_0.
// The backend computes with float activations and an F16 KV cache: every row must reach cosine
// 0.999 and the same top-1 wherever the reference leads its runner-up by more than 0.1 (an F16
// cache alone moves stories260K logits by up to 0.0186, shared/reference/README.md).
// The validation layer is on in every backend these tests create; an error it reports fails the
// forward call.
#include "backend_vulkan/vulkan_test_util.h"

#ifdef LOCKSTEP_HAVE_VULKAN

#include <cmath>
#include <map>
#include <random>
#include <tuple>

#include "backend/cpu/reference_backend.h"
#include "backend_cuda/cuda_test_util.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "parity/comparison.h"
#include "parity/gate.h"

namespace lockstep::vulkan_test {
namespace {

using cuda_test::argmax;
using cuda_test::cosine;
using cuda_test::fresh_seed;
using cuda_test::load_greedy_reference;
using cuda_test::load_logits_reference;
using cuda_test::make_tiny_model;
using cuda_test::shared_path;
using cuda_test::TinyModelSpec;

constexpr double kCosineMin = 0.999;
constexpr double kClearMargin = 0.1;

BackendOptions vulkan_options(int n_ctx = 0) {
  BackendOptions o;
  o.n_ctx = n_ctx;
  o.vulkan.device = test_device();
  o.vulkan.validation = true;
  return o;
}

// The speed knobs that change which shaders serve (defaults: both on, as users get them).
struct ProductKnobs {
  bool fuse_norm = true;       // LOCKSTEP_VULKAN_FUSE_NORM
  bool int8_inputs = true;     // LOCKSTEP_VULKAN_INT8
  int64_t int8_min_bytes = 0;  // LOCKSTEP_VULKAN_INT8_MIN_MIB
  bool q6k_padded = false;     // LOCKSTEP_VULKAN_Q6K_PAD
  // Prompt chunks of 5 tokens or more in gemm.comp (LOCKSTEP_VULKAN_GEMM_MIN_TOKENS=5, the
  // default, with chunks of up to 64 tokens); otherwise never (0).
  bool tiled_prefill = false;
  std::string describe() const {
    return std::string(fuse_norm ? "norms fused" : "norms apart") +
           (int8_inputs ? ", int8 inputs" : ", float inputs") +
           (int8_min_bytes ? " where readers hold >= " + std::to_string(int8_min_bytes) + " bytes"
                           : "") +
           (q6k_padded ? ", Q6_K padded" : "") + (tiled_prefill ? ", tiled prefill" : "");
  }
};

std::unique_ptr<Backend> open_vulkan_unchecked(const Model& m, int n_ctx = 0, int max_batch = 0,
                                               const ProductKnobs& knobs = {}) {
  OpenRequest req;
  req.backend = "vulkan";
  req.options = vulkan_options(n_ctx);
  if (max_batch > 0) req.options.vulkan.max_batch = max_batch;
  req.options.vulkan.fuse_norm = knobs.fuse_norm;
  req.options.vulkan.int8_inputs = knobs.int8_inputs;
  req.options.vulkan.int8_min_bytes = knobs.int8_min_bytes;
  req.options.vulkan.q6k_padded = knobs.q6k_padded;
  req.options.vulkan.gemm_min_tokens = knobs.tiled_prefill ? 5 : 0;
  ParityConfig cfg;
  cfg.policy = ParityPolicy::Off;
  ServingBackend r = ParityGate::open(m, req, cfg, {}, false);
  EXPECT_EQ(r.backend_used, "vulkan");
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

// Logits of every position: in one forward call (chunks of max_batch) or one token per call.
std::vector<float> teacher_forced(Backend& b, const std::vector<int32_t>& tokens, bool one_call) {
  const size_t V = size_t(b.model().hp.n_vocab);
  std::vector<float> logits(tokens.size() * V, NAN);
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

void expect_rows_agree(const std::vector<float>& got, const std::vector<float>& want, size_t V,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  int failures = 0;
  for (size_t r = 0; r < got.size() / V && failures < 5; ++r) {
    const float* g = got.data() + r * V;
    const float* w = want.data() + r * V;
    const double cos = cosine(g, w, V);
    if (!(cos >= kCosineMin)) {
      ADD_FAILURE() << what << ": row " << r << ": cosine " << cos;
      ++failures;
    }
    if (argmax(g, V) != argmax(w, V) && top2_margin(w, V) > kClearMargin) {
      ADD_FAILURE() << what << ": row " << r << ": top-1 " << argmax(g, V) << " vs " << argmax(w, V)
                    << " (reference margin " << top2_margin(w, V) << ")";
      ++failures;
    }
  }
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n, int64_t n_vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

Model load_stories(const std::string& file) {
  return Model::load(shared_path("models/" + file));
}

class VulkanBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_VULKAN_DEVICE();
    errors_before_ = vulkan_validation_errors();
    active_ = true;
  }
  void TearDown() override {
    if (active_) {
      EXPECT_EQ(vulkan_validation_errors(), errors_before_) << "validation errors";
    }
  }
  uint64_t errors_before_ = 0;
  bool active_ = false;
};

// ---- against llama.cpp on the real model ---------------------------------------------------

using VulkanStories = VulkanBackendTest;

TEST_F(VulkanStories, GreedyMatchesLlamaCpp) {
  const Model m = load_stories("stories260K.gguf");
  const auto cases = load_greedy_reference(shared_path("reference/greedy-stories260K.json"));
  ASSERT_EQ(cases.size(), 4u);
  auto vulkan = open_vulkan_unchecked(m);
  for (const auto& c : cases)
    EXPECT_EQ(greedy(*vulkan, c.prompt_ids, int(c.generated_ids.size())), c.generated_ids)
        << "prompt of " << c.prompt_ids.size() << " tokens";
}

// llama.cpp's CPU build rounds activations to 8 bits in its quantized products, so on the
// quantized files its greedy text departs from any float computation at near-ties, and an F16
// KV cache (this backend's) against the reference's F32 one can flip a near-tie too. So on the
// quantized files the CPU reference is the judge, along its own greedy path (32 tokens after each
// prompt, teacher-forced): every row within cosine 0.999 and the same top-1 wherever the
// reference's lead is clear, through both the prefill and the decode path.
TEST_F(VulkanStories, QuantizedFilesAgreeWithCpuReferenceAlongItsGreedyPath) {
  const auto cases = load_greedy_reference(shared_path("reference/greedy-stories260K.json"));
  for (const char* file :
       {"stories260K-Q8_0.gguf", "stories260K-Q4_0.gguf", "stories260K-Q4_K_M.gguf"}) {
    SCOPED_TRACE(file);
    const Model m = load_stories(file);
    const size_t V = size_t(m.hp.n_vocab);
    auto ref = std::make_unique<ReferenceBackend>(m, 0, 0);
    auto vulkan = open_vulkan_unchecked(m);
    for (const auto& c : cases) {
      std::vector<int32_t> seq = c.prompt_ids;
      const auto generated = greedy(*ref, c.prompt_ids, 32);
      seq.insert(seq.end(), generated.begin(), generated.end());
      const auto want = teacher_forced(*ref, seq, true);
      expect_rows_agree(teacher_forced(*vulkan, seq, true), want, V, "prefill");
      expect_rows_agree(teacher_forced(*vulkan, seq, false), want, V, "decode");
    }
  }
}

TEST_F(VulkanStories, TeacherForcedLogitsMatchLlamaCpp) {
  const Model m = load_stories("stories260K.gguf");
  const auto fp32 =
      load_logits_reference(shared_path("reference/logits-stories260K.kvf32-nofa.json"));
  std::vector<float> want;
  for (const auto& row : fp32.logits) want.insert(want.end(), row.begin(), row.end());
  auto vulkan = open_vulkan_unchecked(m, 0, 16);  // 69 positions: 5 chunks of 16
  for (bool one_call : {true, false})
    expect_rows_agree(teacher_forced(*vulkan, fp32.tokens, one_call), want, size_t(m.hp.n_vocab),
                      one_call ? "chunked prefill" : "decode");
  // A chunk of 64 and one of 5, both through the tiled products (but the FFN's down: rows of 172,
  // which matmul.comp takes).
  ProductKnobs tiled;
  tiled.tiled_prefill = true;
  auto vulkan_tiled = open_vulkan_unchecked(m, 0, 64, tiled);
  expect_rows_agree(teacher_forced(*vulkan_tiled, fp32.tokens, true), want, size_t(m.hp.n_vocab),
                    "tiled prefill");
}

// ---- against the CPU reference on synthetic models --------------------------------------------

void expect_matches_reference(const Model& m, std::mt19937_64& rng, const std::string& what,
                              const ProductKnobs& knobs = {}) {
  SCOPED_TRACE(what + ", " + knobs.describe());
  auto ref = std::make_unique<ReferenceBackend>(m, 0, 0);
  // Tiled: the 60 tokens in one chunk, whose products gemm.comp computes.
  auto vulkan = open_vulkan_unchecked(m, 0, knobs.tiled_prefill ? 64 : 24, knobs);
  const auto tokens = random_tokens(rng, 60, m.hp.n_vocab);
  const auto want = teacher_forced(*ref, tokens, true);
  const size_t V = size_t(m.hp.n_vocab);
  const auto prefill = teacher_forced(*vulkan, tokens, true);
  const auto decode = teacher_forced(*vulkan, tokens, false);
  expect_rows_agree(prefill, want, V,
                    knobs.tiled_prefill ? "prefill (one chunk of 60)" : "prefill (chunks of 24)");
  expect_rows_agree(decode, want, V, "decode");
  // A row's arithmetic does not depend on the chunk it is computed in: the same bits (unless
  // the chunk is long enough for the tiled products, which sum in another order).
  if (!knobs.tiled_prefill)
    EXPECT_EQ(std::memcmp(prefill.data(), decode.data(), prefill.size() * sizeof(float)), 0)
        << "prefill and decode differ";
  // Greedy through the Vulkan backend's own loop: each token the reference's top-1 on the same
  // path, or within kClearMargin of it (a near tie on random weights may flip on rounding:
  // comparing two free-running greedy loops failed about one run in four on lavapipe,
  // 2026-12-06, seed 6607868557279933757).
  const auto prompt = random_tokens(rng, 7, m.hp.n_vocab);
  const auto generated = greedy(*vulkan, prompt, 24);
  std::vector<int32_t> path = prompt;
  path.insert(path.end(), generated.begin(), generated.end() - 1);
  const auto ref_rows = teacher_forced(*ref, path, true);
  for (size_t k = 0; k < generated.size(); ++k) {
    const float* w = ref_rows.data() + (prompt.size() - 1 + k) * V;
    const int32_t top = argmax(w, V);
    if (top != generated[k])
      EXPECT_LE(w[top] - w[generated[k]], kClearMargin)
          << "greedy step " << k << ": " << generated[k] << " vs the reference's " << top;
  }
}

using VulkanSynthetic = VulkanBackendTest;

// make-model's tiny preset, llama and qwen2, in Q4_K_M, Q8_0 and F16, against the reference.
void expect_tiny_presets_match_reference(std::mt19937_64& rng, const ProductKnobs& knobs = {}) {
  for (Arch arch : {Arch::Llama, Arch::Qwen2})
    for (const char* quant : {"q4_k_m", "q8_0", "f16"}) {
      const SyntheticPlan plan =
          plan_synthetic_model(*find_model_preset("tiny"), arch, *find_quant_scheme(quant), rng());
      const Model m = Model::from_file(
          gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), std::string("tiny-") + quant));
      expect_matches_reference(m, rng, std::string(arch_name(arch)) + " " + quant, knobs);
    }
}

// A qwen2 of Q4_0 matrices, Q5_0 FFN downs and a tied Q5_0 embedding, against the reference.
void expect_q4_0_q5_0_model_matches_reference(std::mt19937_64& rng,
                                              const ProductKnobs& knobs = {}) {
  TinyModelSpec s;
  s.arch = Arch::Qwen2;
  s.matrix_type = TensorType::Q4_0, s.down_type = TensorType::Q5_0;
  s.embd_type = TensorType::Q5_0;
  s.tied_embeddings = true;
  s.seed = rng();
  expect_matches_reference(make_tiny_model(s), rng, "qwen2 Q4_0/Q5_0, tied", knobs);
}

TEST_F(VulkanSynthetic, MakeModelTinyPresetMatchesCpuReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("LOCKSTEP_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  expect_tiny_presets_match_reference(rng);
}

// Prompts through the shared-memory tiled products (gemm.comp, chunks of 5 tokens or more) on
// every weight type the tiny preset and the Q4_0/Q5_0 model use, against the reference row by row.
TEST_F(VulkanSynthetic, TiledPrefillMatchesCpuReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("LOCKSTEP_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  ProductKnobs tiled;
  tiled.tiled_prefill = true;
  expect_tiny_presets_match_reference(rng, tiled);
  expect_q4_0_q5_0_model_matches_reference(rng, tiled);
}

// The other settings of the knobs that pick the shaders (LOCKSTEP_VULKAN_FUSE_NORM=0,
// LOCKSTEP_VULKAN_INT8=0; float products are also what serves on a device without integer dot
// products; a LOCKSTEP_VULKAN_INT8_MIN_MIB that gives the FFN's gate/up pair and the output
// matrix the int8 form and every smaller product floats, so both forms serve in one step; Q6_K
// blocks padded at upload, LOCKSTEP_VULKAN_Q6K_PAD=1, with int8 and float inputs): rows against
// the reference and prefill against decode bit for bit, as above.
TEST_F(VulkanSynthetic, EveryProductPathMatchesCpuReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("LOCKSTEP_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (Arch arch : {Arch::Llama, Arch::Qwen2}) {
    const SyntheticPlan plan =
        plan_synthetic_model(*find_model_preset("tiny"), arch, *find_quant_scheme("q4_k_m"), rng());
    const Model m =
        Model::from_file(gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny-q4_k_m"));
    // Q4_K bytes of one layer's gate + up: the smallest int8 input under this threshold.
    const int64_t ffn_pair = 2 * int64_t(m.hp.n_ff) * m.hp.n_embd / 256 * 144;
    for (const ProductKnobs knobs :
         {ProductKnobs{false, false}, ProductKnobs{true, false}, ProductKnobs{false, true},
          ProductKnobs{true, true, ffn_pair}, ProductKnobs{true, true, 0, true},
          ProductKnobs{true, false, 0, true}})
      expect_matches_reference(m, rng, std::string(arch_name(arch)) + " q4_k_m", knobs);
  }
}

// Llama 3.1+ rope frequency factors and Qwen2.5's YaRN change only the host's cos/sin table
// (cpu_ref::rope_turn's floats): the shared tiny llama with rope factors (F32), and make-model's
// tiny preset with factors spanning 1 .. 8 (llama) and YaRN over an original context of 64
// (qwen2), in Q4_K_M, row by row against the reference like a plain model.
TEST_F(VulkanSynthetic, RopeFactorsAndYarnMatchCpuReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("LOCKSTEP_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Model shared = Model::load(shared_path("models/arch/tiny-llama3-ropefreqs.gguf"));
  ASSERT_TRUE(shared.hp.has_rope_freqs);
  expect_matches_reference(shared, rng, "tiny-llama3-ropefreqs");
  for (bool yarn : {false, true}) {
    ModelPreset preset = *find_model_preset("tiny");
    if (!yarn) preset.rope_scaling = Llama3RopeScaling{8, 1, 4, 64};
    SyntheticPlan plan = plan_synthetic_model(preset, yarn ? Arch::Qwen2 : Arch::Llama,
                                              *find_quant_scheme("q4_k_m"), rng());
    if (yarn) {
      plan.hp.rope_yarn = true;
      plan.hp.rope_freq_scale = 0.25f;
      plan.hp.rope_yarn_orig_ctx = 64;
    }
    const Model m =
        Model::from_file(gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny-rope"));
    ASSERT_TRUE(yarn ? m.hp.rope_yarn : m.hp.has_rope_freqs);
    expect_matches_reference(m, rng, yarn ? "qwen2 YaRN q4_k_m" : "llama rope factors q4_k_m");
  }
}

TEST_F(VulkanSynthetic, Q4_0AndQ5_0MatricesMatchCpuReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("LOCKSTEP_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  expect_q4_0_q5_0_model_matches_reference(rng);
}

// ---- the gate, faults, observer --------------------------------------------------------------

std::vector<int32_t> stories_probe() {
  return load_logits_reference(shared_path("reference/logits-stories260K.kvf32-nofa.json")).tokens;
}

using VulkanGate = VulkanBackendTest;

TEST_F(VulkanGate, GatePassesVulkanAndServesFromTheProbe) {
  const Model m = load_stories("stories260K-Q4_K_M.gguf");
  const auto probe = stories_probe();
  OpenRequest req;
  req.backend = "vulkan";
  req.options = vulkan_options();
  ServingBackend r = ParityGate::open(m, req, ParityConfig{}, probe, true);
  EXPECT_EQ(r.backend_used, "vulkan") << r.verdict.failure_text();
  EXPECT_EQ(r.verdict.status, ParityVerdict::Status::Passed) << r.verdict.failure_text();
  ASSERT_EQ(r.backend->n_past(), int(probe.size()));
  std::vector<float> logits(static_cast<size_t>(m.hp.n_vocab));
  const int32_t next = argmax(r.prefix_logits.data(), logits.size());
  r.backend->forward({&next, 1}, logits.data(), false);
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
}

// Each fault knob makes the comparison reject the Vulkan backend; the same fault on both
// backends passes (the knob means the same as the reference's, so falsification tests do too).
TEST_F(VulkanGate, FaultKnobsAreCaughtAndMatchTheReference) {
  const Model m = load_stories("stories260K.gguf");
  const auto probe = stories_probe();
  ParityConfig cfg;
  auto ref = std::make_unique<ReferenceBackend>(m, 0, 0);
  auto vulkan = open_vulkan_unchecked(m);
  ASSERT_EQ(ParityComparison::compare(*ref, *vulkan, probe, cfg).status,
            ParityVerdict::Status::Passed);
  FaultSpec drift{FaultSpec::KvDrift, 5.0f, 0, 0};
  FaultSpec corrupt{FaultSpec::LayerCorrupt, 5.0f, 3, 20};
  FaultSpec nan{FaultSpec::NaN, 0, 0, 30};
  for (const FaultSpec& f : {drift, corrupt, nan}) {
    SCOPED_TRACE("fault kind " + std::to_string(int(f.kind)));
    ref->set_fault(FaultSpec{});
    vulkan->set_fault(f);
    EXPECT_EQ(ParityComparison::compare(*ref, *vulkan, probe, cfg).status,
              ParityVerdict::Status::Rejected);
    if (f.kind != FaultSpec::NaN) {
      ref->set_fault(f);
      vulkan->set_fault(f);
      const auto same = ParityComparison::compare(*ref, *vulkan, probe, cfg);
      EXPECT_EQ(same.status, ParityVerdict::Status::Passed) << same.failure_text();
    }
  }
}

struct HiddenRecorder : LayerObserver {
  std::map<std::tuple<int, std::string, int>, std::vector<float>> seen;
  void on_hidden(int layer, const char* stage, int pos, std::span<const float> h) override {
    seen[{layer, stage, pos}] = std::vector<float>(h.begin(), h.end());
  }
};

// The observer (parity --layers) sees every stage like the reference's, and the eagerly
// submitted path it needs gives the very same logits as the replayed command buffers.
TEST_F(VulkanGate, ObserverMatchesReferenceAndEagerEqualsReplay) {
  std::mt19937_64 rng(fresh_seed());
  const SyntheticPlan plan = plan_synthetic_model(*find_model_preset("tiny"), Arch::Qwen2,
                                                  *find_quant_scheme("q4_k_m"), rng());
  const Model m = Model::from_file(gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "t"));
  const auto tokens = random_tokens(rng, 12, m.hp.n_vocab);
  auto ref = std::make_unique<ReferenceBackend>(m, 0, 0);
  auto vulkan = open_vulkan_unchecked(m);
  const auto replayed = teacher_forced(*vulkan, tokens, false);
  HiddenRecorder r_ref, r_vk;
  ref->set_observer(&r_ref);
  vulkan->set_observer(&r_vk);
  teacher_forced(*ref, tokens, true);
  const auto eager = teacher_forced(*vulkan, tokens, false);
  EXPECT_EQ(std::memcmp(replayed.data(), eager.data(), eager.size() * sizeof(float)), 0);
  vulkan->truncate(0);
  teacher_forced(*vulkan, tokens, true);  // and the prefill path
  ASSERT_EQ(r_vk.seen.size(), r_ref.seen.size());
  for (const auto& [key, want] : r_ref.seen) {
    const auto it = r_vk.seen.find(key);
    ASSERT_NE(it, r_vk.seen.end());
    EXPECT_GE(cosine(it->second.data(), want.data(), want.size()), 0.9999)
        << "layer " << std::get<0>(key) << " " << std::get<1>(key) << " pos " << std::get<2>(key);
  }
}

// ---- errors ------------------------------------------------------------------------------------

using VulkanErrors = VulkanBackendTest;

TEST_F(VulkanErrors, DeviceMemoryContextAndTokens) {
  const Model m = load_stories("stories260K.gguf");
  OpenRequest req;
  req.backend = "vulkan";
  req.options = vulkan_options();
  ParityConfig off;
  off.policy = ParityPolicy::Off;
  // A device that does not exist, and a KV cache no device holds: Error(kExitDevice), one line.
  req.options.vulkan.device = 99;
  try {
    ParityGate::open(m, req, off, {}, false);
    ADD_FAILURE() << "no error for device 99";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitDevice);
    EXPECT_NE(std::string(e.what()).find("no Vulkan device 99"), std::string::npos) << e.what();
  }
  req.options = vulkan_options(1 << 30);
  try {
    ParityGate::open(m, req, off, {}, false);
    ADD_FAILURE() << "no error for an impossible KV cache";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitDevice);
    EXPECT_NE(std::string(e.what()).find("model needs"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
  // Two sequences: not written for Vulkan.
  req.options = vulkan_options();
  req.options.n_seq = 2;
  EXPECT_THROW(ParityGate::open(m, req, off, {}, false), InputError);

  auto vulkan = open_vulkan_unchecked(m, 16);
  std::vector<float> logits(size_t(m.hp.n_vocab) * 20);
  const std::vector<int32_t> bad = {1, 512};
  EXPECT_THROW(vulkan->forward(bad, logits.data(), false), InputError);
  EXPECT_EQ(vulkan->n_past(), 0);
  const std::vector<int32_t> twenty(20, 1);
  EXPECT_THROW(vulkan->forward(twenty, logits.data(), true), Error);
  EXPECT_THROW(vulkan->truncate(-1), Error);
  const std::vector<int32_t> ok(16, 1);
  vulkan->forward(ok, logits.data(), false);
  EXPECT_EQ(vulkan->n_past(), 16);
}

// A model with features beyond the llama/qwen2 pass is refused by name, as CUDA refuses it.
TEST_F(VulkanErrors, ExtendedArchitectureIsRefused) {
  const SyntheticPlan plan =
      plan_synthetic_model(*find_model_preset("tiny"), Arch::Qwen3, *find_quant_scheme("f32"), 3);
  const Model m = Model::from_file(gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "q3"));
  OpenRequest req;
  req.backend = "vulkan";
  req.options = vulkan_options();
  try {
    ParityGate::open(m, req, ParityConfig{}, {}, false);
    ADD_FAILURE() << "qwen3 was not refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitDevice) << e.what();
    EXPECT_NE(std::string(e.what()).find("vulkan"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lockstep::vulkan_test

#else

TEST(VulkanBackend, Skipped) {
  REQUIRE_VULKAN_DEVICE();
}

#endif
