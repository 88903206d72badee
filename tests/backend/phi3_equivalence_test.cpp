// phi3 without a llama.cpp reference: a phi3 file and the same weights written as a llama file
// must compute the same logits. phi3 is llama's block with the q/k/v rows fused in attn_qkv, the
// FFN's gate and up rows fused in ffn_up (gate first), and NeoX rope (rotating pairs (i, i+d/2)
// of each head). The llama twin gets q, k, v, gate and up as separate tensors, and the rows of q
// and k reordered within each head (row 2i <- i, row 2i+1 <- i + d/2) so that llama's rope on
// pairs (2i, 2i+1) rotates the same values by the same angles; q.k is unchanged by a permutation
// applied to both. Each way of getting phi3 wrong (the split order, the rope pairing) moves the
// logits far from the twin's (checked below), so "equal" pins all three. Fresh random weights
// and tokens every run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/reference_backend.h"
#include "backend/fast_compare.h"
#include "backend/random_data.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "model/presets.h"
#include "model/synthetic.h"
#include "parity/gate.h"
#include "quant/quantize.h"

namespace lockstep::backend_test {
namespace {

using gguf::Value;

struct Dims {
  int64_t embd = 64, n_head = 4, n_head_kv = 2, n_ff = 96, vocab = 80, layers = 2;
  int64_t head() const { return embd / n_head; }
};

// Row-major float matrices: rows x cols.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> v;
  const float* row(int64_t r) const { return v.data() + r * cols; }
};

Matrix random_matrix(std::mt19937_64& rng, int64_t rows, int64_t cols, float sigma) {
  return {rows, cols, normal(rng, size_t(rows * cols), sigma)};
}

Matrix stack(const std::vector<const Matrix*>& parts) {
  Matrix m{0, parts[0]->cols, {}};
  for (const Matrix* p : parts) {
    m.rows += p->rows;
    m.v.insert(m.v.end(), p->v.begin(), p->v.end());
  }
  return m;
}

// NeoX pairing to llama's: within each head of size d, row 2i takes row i and row 2i+1 takes
// row i + d/2.
Matrix neox_rows_to_interleaved(const Matrix& m, int64_t head) {
  Matrix out = m;
  for (int64_t h = 0; h < m.rows / head; ++h)
    for (int64_t i = 0; i < head / 2; ++i) {
      std::memcpy(&out.v[size_t((h * head + 2 * i) * m.cols)], m.row(h * head + i),
                  size_t(m.cols) * 4);
      std::memcpy(&out.v[size_t((h * head + 2 * i + 1) * m.cols)], m.row(h * head + i + head / 2),
                  size_t(m.cols) * 4);
    }
  return out;
}

struct LayerMats {
  Matrix q, k, v, o, gate, up, down;
  std::vector<float> attn_norm, ffn_norm;
};

struct Weights {
  Dims d;
  Matrix embd, output;
  std::vector<float> output_norm;
  std::vector<LayerMats> layers;
};

Weights random_weights(std::mt19937_64& rng, const Dims& d) {
  Weights w;
  w.d = d;
  const float in = 1.0f / std::sqrt(float(d.embd));
  w.embd = random_matrix(rng, d.vocab, d.embd, 1.0f);
  w.output = random_matrix(rng, d.vocab, d.embd, 3.0f * in);
  w.output_norm = uniform(rng, size_t(d.embd), 0.7f, 1.3f);
  for (int64_t l = 0; l < d.layers; ++l) {
    LayerMats L;
    // Larger q/k weights give peaked attention, so a wrong rotation shows.
    L.q = random_matrix(rng, d.n_head * d.head(), d.embd, 2.0f * in);
    L.k = random_matrix(rng, d.n_head_kv * d.head(), d.embd, 2.0f * in);
    L.v = random_matrix(rng, d.n_head_kv * d.head(), d.embd, in);
    L.o = random_matrix(rng, d.embd, d.n_head * d.head(), 1.0f / std::sqrt(float(d.embd)));
    L.gate = random_matrix(rng, d.n_ff, d.embd, in);
    L.up = random_matrix(rng, d.n_ff, d.embd, in);
    L.down = random_matrix(rng, d.embd, d.n_ff, 1.0f / std::sqrt(float(d.n_ff)));
    L.attn_norm = uniform(rng, size_t(d.embd), 0.7f, 1.3f);
    L.ffn_norm = uniform(rng, size_t(d.embd), 0.7f, 1.3f);
    w.layers.push_back(std::move(L));
  }
  return w;
}

// What the twin gets wrong on purpose, to show the comparison can fail.
enum class Twin { Faithful, NoRopePermutation, GateUpSwapped, KvSwapped };

// The phi3 file (fused) or its llama twin, with 2-D weights stored as `type`.
Model write_model(const Weights& w, bool phi3, TensorType type, Twin twin = Twin::Faithful) {
  const Dims& d = w.d;
  const std::string a = phi3 ? "phi3" : "llama";
  gguf::GgufWriter g;
  g.set("general.architecture", Value::of_string(a));
  g.set(a + ".embedding_length", Value::of_u32(uint32_t(d.embd)));
  g.set(a + ".block_count", Value::of_u32(uint32_t(d.layers)));
  g.set(a + ".feed_forward_length", Value::of_u32(uint32_t(d.n_ff)));
  g.set(a + ".attention.head_count", Value::of_u32(uint32_t(d.n_head)));
  g.set(a + ".attention.head_count_kv", Value::of_u32(uint32_t(d.n_head_kv)));
  g.set(a + ".context_length", Value::of_u32(4096));
  g.set(a + ".attention.layer_norm_rms_epsilon", Value::of_f32(1e-5f));
  g.set(a + ".rope.freq_base", Value::of_f32(10000.0f));
  if (phi3) g.set(a + ".attention.sliding_window", Value::of_u32(2047));  // ignored, as Phi-3's
  auto matrix = [&](const std::string& name, const Matrix& m) {
    const uint64_t rb = *row_bytes(type, m.cols);
    std::vector<uint8_t> bytes(size_t(rb * uint64_t(m.rows)));
    for (int64_t r = 0; r < m.rows; ++r)
      quantize_row(type, m.row(r), bytes.data() + r * rb, m.cols);
    g.add_tensor(name, type, {m.cols, m.rows}, std::move(bytes));
  };
  auto vec = [&](const std::string& name, const std::vector<float>& v) {
    std::vector<uint8_t> bytes(v.size() * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    g.add_tensor(name, TensorType::F32, {int64_t(v.size())}, std::move(bytes));
  };
  matrix("token_embd.weight", w.embd);
  vec("output_norm.weight", w.output_norm);
  matrix("output.weight", w.output);
  for (int64_t l = 0; l < d.layers; ++l) {
    const LayerMats& L = w.layers[size_t(l)];
    const std::string b = "blk." + std::to_string(l) + ".";
    vec(b + "attn_norm.weight", L.attn_norm);
    if (phi3) {
      matrix(b + "attn_qkv.weight", stack({&L.q, &L.k, &L.v}));
    } else {
      const bool permute = twin != Twin::NoRopePermutation;
      matrix(b + "attn_q.weight", permute ? neox_rows_to_interleaved(L.q, d.head()) : L.q);
      const Matrix k = permute ? neox_rows_to_interleaved(L.k, d.head()) : L.k;
      matrix(b + "attn_k.weight", twin == Twin::KvSwapped ? L.v : k);
      matrix(b + "attn_v.weight", twin == Twin::KvSwapped ? k : L.v);
    }
    matrix(b + "attn_output.weight", L.o);
    vec(b + "ffn_norm.weight", L.ffn_norm);
    if (phi3) {
      matrix(b + "ffn_up.weight", stack({&L.gate, &L.up}));
    } else {
      const bool swap = twin == Twin::GateUpSwapped;
      matrix(b + "ffn_gate.weight", swap ? L.up : L.gate);
      matrix(b + "ffn_up.weight", swap ? L.gate : L.up);
    }
    matrix(b + "ffn_down.weight", L.down);
  }
  return Model::from_file(gguf::GgufFile::from_bytes(g.to_bytes(), a + "-twin"));
}

template <class B>
std::vector<float> all_logits(B& b, const std::vector<int32_t>& tokens) {
  std::vector<float> out(tokens.size() * size_t(b.model().hp.n_vocab));
  b.truncate(0);
  b.forward(tokens, out.data(), true);
  return out;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, size_t n, int64_t vocab) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng() % uint64_t(vocab));
  return t;
}

TEST(Phi3, EqualsItsLlamaTwinOnTheReferenceAndTheFastPath) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const Dims d;
  const Weights w = random_weights(rng, d);
  const auto tokens = random_tokens(rng, 48, d.vocab);
  for (TensorType type : {TensorType::F32, TensorType::Q8_0}) {
    SCOPED_TRACE(tensor_type_info(type).name);
    const Model phi3 = write_model(w, true, type);
    const Model twin = write_model(w, false, type);
    ASSERT_TRUE(phi3.hp.fused_qkv && phi3.hp.fused_gate_up);
    ASSERT_EQ(phi3.hp.rope_type, RopeType::Neox);
    ASSERT_FALSE(twin.hp.fused_qkv || twin.hp.fused_gate_up);
    ReferenceBackend ref_phi3(phi3, 2, 128), ref_twin(twin, 2, 128);
    const auto a = all_logits(ref_phi3, tokens), b = all_logits(ref_twin, tokens);
    const double scale = max_abs(b);
    ASSERT_GT(scale, 1.0);
    // The same products summed in another order (the permuted q.k): float rounding only.
    EXPECT_LE(max_abs_diff(a.data(), b.data(), int64_t(a.size())), 1e-5 * scale);
    auto fast_phi3 = make_fast(phi3, 2, 128), fast_twin = make_fast(twin, 2, 128);
    const auto fa = all_logits(*fast_phi3, tokens), fb = all_logits(*fast_twin, tokens);
    // The fast path quantizes activations to int8 terms, so a rounding difference upstream can
    // move an element by one step (d/508) downstream: the two fast runs may differ by about as
    // much as each differs from the reference, not more.
    const double fast_error = std::max(max_abs_diff(fa.data(), a.data(), int64_t(a.size())),
                                       max_abs_diff(fb.data(), b.data(), int64_t(b.size())));
    EXPECT_LE(fast_error, 0.01 * scale);
    EXPECT_LE(max_abs_diff(fa.data(), fb.data(), int64_t(fa.size())),
              2 * fast_error + 1e-5 * scale);
    // Token by token gives the batch's logits (the fused views serve decode as well).
    std::vector<float> one(size_t(d.vocab));
    ref_phi3.truncate(0);
    for (size_t i = 0; i < tokens.size(); ++i) {
      ref_phi3.forward(std::span(tokens.data() + i, 1), one.data(), false);
      ASSERT_LE(max_abs_diff(one.data(), a.data() + i * size_t(d.vocab), d.vocab), 1e-5 * scale)
          << "position " << i;
    }
  }
}

TEST(Phi3, EachWrongReadingIsFarFromTheTwin) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937_64 rng(seed);
  const Dims d;
  const Weights w = random_weights(rng, d);
  const auto tokens = random_tokens(rng, 48, d.vocab);
  const Model phi3 = write_model(w, true, TensorType::F32);
  ReferenceBackend ref_phi3(phi3, 2, 128);
  const auto a = all_logits(ref_phi3, tokens);
  for (Twin t : {Twin::NoRopePermutation, Twin::GateUpSwapped, Twin::KvSwapped}) {
    SCOPED_TRACE(int(t));
    const Model twin = write_model(w, false, TensorType::F32, t);
    ReferenceBackend ref_twin(twin, 2, 128);
    const auto b = all_logits(ref_twin, tokens);
    EXPECT_GT(max_abs_diff(a.data(), b.data(), int64_t(a.size())), 0.1);
  }
}

// A make-model phi3 file (the tiny preset in Q4_K_M: fused attn_qkv in Q5_K, ffn_down Q6_K where
// llama.cpp gives it more bits) passes the gate on the fast CPU path; Vulkan refuses phi3 by name
// before touching a device (CUDA runs it: tests/backend_cuda/arch_gpu_test.cpp).
TEST(Phi3, MakeModelFilePassesTheGateOnTheFastPathAndVulkanRefusesIt) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_trace(seed));
  const QuantScheme& q4km = *find_quant_scheme("q4_k_m");
  const SyntheticPlan plan =
      plan_synthetic_model(*find_model_preset("tiny"), Arch::Phi3, q4km, seed);
  const Model model =
      Model::from_file(gguf::GgufFile::from_bytes(synthetic_model_bytes(plan), "tiny-phi3"));
  ASSERT_EQ(model.hp.arch, Arch::Phi3);
  EXPECT_EQ(model.layers[0].wq.type, TensorType::Q5_K);
  std::mt19937_64 rng(seed);
  const auto probe = random_tokens(rng, 32, model.hp.n_vocab);

  OpenRequest request;
  request.backend = "cpu";
  request.options.threads = 2;
  request.options.n_ctx = 128;
  ParityConfig config;
  config.policy = ParityPolicy::Strict;
  ServingBackend served = ParityGate::open(model, request, config, probe, true);
  ASSERT_EQ(served.verdict.status, ParityVerdict::Status::Passed) << served.verdict.failure_text();
  EXPECT_EQ(served.backend_used, "cpu");

  request.backend = "vulkan";
  try {
    ParityGate::open(model, request, config, probe, true);
    ADD_FAILURE() << "forced vulkan accepted phi3";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), kExitDevice) << e.what();
    EXPECT_NE(std::string(e.what()).find("does not implement phi3's fused QKV and gate/up"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace lockstep::backend_test
