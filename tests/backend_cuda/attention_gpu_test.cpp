// Attention kernels against a float64 reference softmax(q k^T * scale) v over the cached
// positions, with K and V read from the very cache contents the kernel sees (F16 values are
// exact in float64), so the bound measures the kernel alone: float32 scores, exponentials and
// sums give NMSE ~1e-13; bound 1e-10.
// Decode covers contexts shorter and longer than one split (128 positions), GQA ratios 1, 2, 7
// and 10 (more than one block of query heads per KV head); the FP32 prefill kernel covers tiles
// with and without a cached past and query counts that are not multiples of the 32-row tile.
// The tensor-core prefill kernel (F16 cache) rounds q and the softmax weights to F16, so its
// bound is derived from that rounding (kFlashNmse below); its tests cover head sizes 16 to 256
// (96: not a power of two), GQA ratios 1 to 72 (7: qwen2.5; 72: two blocks per KV head), chunks
// after a cached past, soft-cap and sliding window, contexts past 16k at selected rows, and NaN
// in a key or value row.
#include <algorithm>
#include <cstddef>
#include <cstdio>

#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include "quant/fp16.h"

namespace lockstep::cuda_test {
namespace {

constexpr double kAttentionNmse = 1e-10;

using cuda_ops::KvType;

struct Heads {
  int n_head, n_head_kv, head_dim;
};

struct Cache {
  std::vector<float> k, v;      // values as the kernel sees them (F16-rounded for F16)
  std::vector<uint8_t> kb, vb;  // bytes to upload
};

Cache random_cache(std::mt19937_64& rng, int n_ctx, int kv_dim, KvType kv) {
  Cache c;
  c.k = random_normal(rng, size_t(n_ctx) * kv_dim, 1.0f);
  c.v = random_normal(rng, size_t(n_ctx) * kv_dim, 1.0f);
  const size_t eb = cuda_ops::kv_type_bytes(kv);
  c.kb.resize(c.k.size() * eb);
  c.vb.resize(c.v.size() * eb);
  for (size_t i = 0; i < c.k.size(); ++i) {
    if (kv == KvType::F16) {
      const uint16_t hk = fp32_to_fp16(c.k[i]), hv = fp32_to_fp16(c.v[i]);
      c.k[i] = fp16_to_fp32(hk), c.v[i] = fp16_to_fp32(hv);
      std::memcpy(c.kb.data() + 2 * i, &hk, 2);
      std::memcpy(c.vb.data() + 2 * i, &hv, 2);
    } else {
      std::memcpy(c.kb.data() + 4 * i, &c.k[i], 4);
      std::memcpy(c.vb.data() + 4 * i, &c.v[i], 4);
    }
  }
  return c;
}

// Output of query head h at position pos: keys 0..pos, or the last `window` of them; scores
// soft-capped (cap * tanh(score / cap)) when softcap > 0.
void reference_head(const float* q, const Cache& c, const Heads& hs, int h, int pos, double scale,
                    double* out, double softcap = 0, int window = 0) {
  const int hd = hs.head_dim, kv_dim = hs.n_head_kv * hd;
  const int kvh = h / (hs.n_head / hs.n_head_kv);
  const int first = window > 0 ? std::max(0, pos - window + 1) : 0;
  std::vector<double> s(size_t(pos + 1 - first));
  double m = -INFINITY;
  for (int p = first; p <= pos; ++p) {
    double d = 0;
    for (int i = 0; i < hd; ++i) d += double(q[i]) * c.k[size_t(p) * kv_dim + kvh * hd + i];
    d *= scale;
    if (softcap > 0) d = softcap * std::tanh(d / softcap);
    s[size_t(p - first)] = d;
    m = std::max(m, d);
  }
  double l = 0;
  for (auto& x : s) l += (x = std::exp(x - m));
  for (int i = 0; i < hd; ++i) {
    double o = 0;
    for (int p = first; p <= pos; ++p)
      o += s[size_t(p - first)] * c.v[size_t(p) * kv_dim + kvh * hd + i];
    out[i] = o / l;
  }
}

// Sets CudaKernelTuning::flash_prefill for a scope (the tuning is process-wide).
class FlashPrefillScope {
 public:
  explicit FlashPrefillScope(bool on) : saved_(cuda_ops::kernel_tuning()) {
    CudaKernelTuning t = saved_;
    t.flash_prefill = on;
    cuda_ops::set_kernel_tuning(t);
  }
  ~FlashPrefillScope() { cuda_ops::set_kernel_tuning(saved_); }
  FlashPrefillScope(const FlashPrefillScope&) = delete;
  FlashPrefillScope& operator=(const FlashPrefillScope&) = delete;

 private:
  CudaKernelTuning saved_;
};

const Heads kHeadConfigs[] = {{8, 4, 8}, {28, 4, 128}, {14, 2, 64}, {32, 32, 128}, {40, 4, 128}};

TEST(CudaAttention, DecodeAgainstFloat64) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int max_ctx = 1100;
  for (const Heads& hs : kHeadConfigs)
    for (KvType kv : {KvType::F16, KvType::F32}) {
      const int kv_dim = hs.n_head_kv * hs.head_dim, q_dim = hs.n_head * hs.head_dim;
      const Cache c = random_cache(rng, max_ctx, kv_dim, kv);
      DeviceBuffer<uint8_t> kc(c.kb), vc(c.vb);
      const cuda_ops::AttentionParams p{hs.n_head, hs.n_head_kv, hs.head_dim,
                                        float(1.0 / std::sqrt(double(hs.head_dim)))};
      DeviceBuffer<float> partials(cuda_ops::attention_decode_scratch_floats(max_ctx, p));
      for (int pos : {0, 1, 127, 128, 129, 700, max_ctx - 1}) {
        SCOPED_TRACE("heads " + std::to_string(hs.n_head) + "/" + std::to_string(hs.n_head_kv) +
                     " x " + std::to_string(hs.head_dim) + ", pos " + std::to_string(pos) +
                     (kv == KvType::F16 ? ", f16" : ", f32"));
        const auto q = random_normal(rng, size_t(q_dim), 1.0f);
        std::vector<double> want(static_cast<size_t>(q_dim));
        for (int h = 0; h < hs.n_head; ++h)
          reference_head(q.data() + h * hs.head_dim, c, hs, h, pos, p.scale,
                         want.data() + h * hs.head_dim);
        DeviceBuffer<float> d_q(q), out(static_cast<size_t>(q_dim));
        DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{pos});
        cuda_ops::attention_decode(d_q.get(), kc.get(), vc.get(), kv, out.get(), partials.get(),
                                   d_pos.get(), max_ctx, p, nullptr);
        cuda_ops::synchronize();
        const auto got = out.download();
        EXPECT_GUARDS(out);
        EXPECT_GUARDS(partials);
        EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kAttentionNmse);
      }
    }
}

// A batched decode step's rope + KV store + attention (TokenRows: each token at its own position
// of its own sequence) against the same tokens one at a time through the single-token kernels:
// the caches and the outputs must be bit for bit equal (batch invariance; the single-token
// kernels are checked against float64 above and in ops_gpu_test). Sequences are 300 rows apart
// in one cache, as the backend lays them out; positions span several splits.
TEST(CudaAttention, TokenRowsEqualEachTokenAlone) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int seq_rows = 300, n_seq = 5;
  const std::vector<int32_t> pos = {0, 299, 31, 32, 150};
  const std::vector<int32_t> seq = {2, 0, 4, 1, 3};  // each sequence once per step
  for (const Heads& hs : {Heads{8, 4, 8}, Heads{14, 2, 64}, Heads{28, 4, 128}})
    for (KvType kv : {KvType::F16, KvType::F32}) {
      SCOPED_TRACE("heads " + std::to_string(hs.n_head) + "/" + std::to_string(hs.n_head_kv) +
                   (kv == KvType::F16 ? " f16" : " f32"));
      const int n_tok = int(pos.size());
      const int kv_dim = hs.n_head_kv * hs.head_dim, q_dim = hs.n_head * hs.head_dim;
      const Cache c = random_cache(rng, seq_rows * n_seq, kv_dim, kv);
      const auto q = random_normal(rng, size_t(n_tok * q_dim), 1.0f);
      const auto k = random_normal(rng, size_t(n_tok * kv_dim), 1.0f);
      const auto v = random_normal(rng, size_t(n_tok * kv_dim), 1.0f);
      double* table = cuda_ops::make_rope_table(1000000.0f, hs.head_dim);
      const cuda_ops::RopeParams rp{hs.n_head,      hs.n_head_kv, hs.head_dim, hs.head_dim,
                                    RopeType::Neox, 1.0f,         table};
      const cuda_ops::AttentionParams ap{hs.n_head, hs.n_head_kv, hs.head_dim,
                                         float(1.0 / std::sqrt(double(hs.head_dim)))};
      const size_t per_token = cuda_ops::attention_decode_scratch_floats(seq_rows, ap);

      // Batched: all tokens in one call of each kernel.
      DeviceBuffer<uint8_t> kc_b(c.kb), vc_b(c.vb);
      DeviceBuffer<float> q_b(q), k_b(k), v_b(v), out_b(size_t(n_tok * q_dim));
      DeviceBuffer<float> part_b(per_token * n_tok);
      DeviceBuffer<int32_t> d_pos(pos), d_seq(seq);
      const cuda_ops::TokenRows rows{d_pos.get(), d_seq.get(), seq_rows};
      const int max_pos = *std::max_element(pos.begin(), pos.end());
      cuda_ops::rope_and_store_kv_rows(q_b.get(), k_b.get(), v_b.get(), kc_b.get(), vc_b.get(), kv,
                                       n_tok, rows, rp, nullptr);
      cuda_ops::attention_decode_rows(q_b.get(), kc_b.get(), vc_b.get(), kv, out_b.get(),
                                      part_b.get(), per_token, n_tok, rows, max_pos + 1, ap,
                                      nullptr);
      cuda_ops::synchronize();

      // Alone: token i through the single-token kernels on its sequence's rows.
      DeviceBuffer<uint8_t> kc_a(c.kb), vc_a(c.vb);
      DeviceBuffer<float> q_a(q), out_a(size_t(n_tok * q_dim));
      DeviceBuffer<float> part_a(cuda_ops::attention_decode_scratch_floats(seq_rows, ap));
      const size_t eb = cuda_ops::kv_type_bytes(kv);
      for (int i = 0; i < n_tok; ++i) {
        DeviceBuffer<int32_t> p1(std::vector<int32_t>{pos[size_t(i)]});
        const size_t off = size_t(seq[size_t(i)]) * seq_rows * kv_dim * eb;
        DeviceBuffer<float> k1(
            std::vector<float>(k.begin() + i * kv_dim, k.begin() + (i + 1) * kv_dim));
        DeviceBuffer<float> v1(
            std::vector<float>(v.begin() + i * kv_dim, v.begin() + (i + 1) * kv_dim));
        cuda_ops::rope_and_store_kv(q_a.get() + i * q_dim, k1.get(), v1.get(), kc_a.get() + off,
                                    vc_a.get() + off, kv, 1, p1.get(), rp, nullptr);
        cuda_ops::attention_decode(q_a.get() + i * q_dim, kc_a.get() + off, vc_a.get() + off, kv,
                                   out_a.get() + i * q_dim, part_a.get(), p1.get(), seq_rows, ap,
                                   nullptr);
        cuda_ops::synchronize();
      }
      cuda_ops::device_free(table);
      const auto ob = out_b.download(), oa = out_a.download();
      for (float x : ob) ASSERT_TRUE(std::isfinite(x));
      EXPECT_EQ(0, std::memcmp(ob.data(), oa.data(), ob.size() * sizeof(float)))
          << "attention outputs differ from the tokens alone";
      EXPECT_EQ(kc_b.download(), kc_a.download()) << "K caches differ";
      EXPECT_EQ(vc_b.download(), vc_a.download()) << "V caches differ";
      EXPECT_GUARDS(out_b);
      EXPECT_GUARDS(part_b);
      EXPECT_GUARDS(kc_b);
    }
}

// The FP32 CUDA-core kernel, which F32 caches take, and F16 ones with flash_prefill off.
TEST(CudaAttention, PrefillCausalAgainstFloat64) {
  REQUIRE_CUDA_DEVICE();
  const FlashPrefillScope fp32_kernel(false);
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Batch {
    int pos0, n_tok;
  };
  const Batch batches[] = {{0, 1}, {0, 7}, {0, 32}, {0, 33}, {50, 100}, {0, 300}, {200, 65}};
  for (const Heads& hs : kHeadConfigs)
    for (KvType kv : {KvType::F16, KvType::F32})
      for (const Batch& b : batches) {
        SCOPED_TRACE("heads " + std::to_string(hs.n_head) + "/" + std::to_string(hs.n_head_kv) +
                     " x " + std::to_string(hs.head_dim) + ", pos0 " + std::to_string(b.pos0) +
                     ", n_tok " + std::to_string(b.n_tok) +
                     (kv == KvType::F16 ? ", f16" : ", f32"));
        const int kv_dim = hs.n_head_kv * hs.head_dim, q_dim = hs.n_head * hs.head_dim;
        const int n_ctx = b.pos0 + b.n_tok + 5;
        const Cache c = random_cache(rng, n_ctx, kv_dim, kv);
        const auto q = random_normal(rng, size_t(b.n_tok) * q_dim, 1.0f);
        const cuda_ops::AttentionParams p{hs.n_head, hs.n_head_kv, hs.head_dim,
                                          float(1.0 / std::sqrt(double(hs.head_dim)))};
        std::vector<double> want(q.size());
        parallel_for(int64_t(b.n_tok) * hs.n_head, [&](int64_t begin, int64_t end) {
          for (int64_t item = begin; item < end; ++item) {
            const int t = int(item / hs.n_head), h = int(item % hs.n_head);
            reference_head(q.data() + size_t(t) * q_dim + h * hs.head_dim, c, hs, h, b.pos0 + t,
                           p.scale, want.data() + size_t(t) * q_dim + h * hs.head_dim);
          }
        });
        DeviceBuffer<uint8_t> kc(c.kb), vc(c.vb);
        DeviceBuffer<float> d_q(q), out(q.size());
        DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{b.pos0});
        cuda_ops::attention_prefill(d_q.get(), kc.get(), vc.get(), kv, out.get(), b.n_tok,
                                    d_pos.get(), p, nullptr);
        cuda_ops::synchronize();
        const auto got = out.download();
        EXPECT_GUARDS(out);
        EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kAttentionNmse);
      }
}

// ---- tensor-core prefill (attention_flash.cu, F16 cache) -------------------------------------
//
// The kernel rounds q * scale and the softmax weights p to F16 (unit roundoff u = 2^-11, an
// error uniform in +-u, RMS u/sqrt(3) = 2.8e-4 relative); K and V are the cache's F16 values,
// which the reference reads too, and every sum is F32 (~1e-7 relative, negligible here).
//   - q: each score s_j = scale q.k_j moves by scale sum_i q_i k_ji d_i, RMS 2.8e-4 * sigma_s for
//     scores of RMS sigma_s; the output moves by sum_j w_j ds_j (v_j - o): relative RMS about
//     2.8e-4 * sigma_s for random v (weights w, output o);
//   - p: o moves by sum_j w_j d_j v_j, relative RMS 2.8e-4.
// So the NMSE is about 8e-8 * (1 + sigma_s^2), 1.6e-7 at sigma_s = 1 (the inputs here: unit
// normal k, v and q, scale 1/sqrt(head_dim); q of RMS 3 makes sigma_s = 3). Bounds: the whole
// output's NMSE below kFlashNmse * max(1, sigma_s^2) (12x the estimate), each (token, head) row's
// below kFlashRowNmse * max(1, sigma_s^2) (a row is a ratio of two sums of head_dim squares; its
// tail over thousands of rows stays within a few times the mean).
// What they catch: a missing or doubled scale changes every score by O(1) (NMSE ~ 1); one key
// too many or too few under the mask (an off-by-one at the diagonal or the window's edge) moves a
// row with n visible keys by NMSE ~ e^(2 s') / (7.4 n) (s' the stray key's score): > 1e-3 for
// the short rows every chunk has, which also lifts the whole output's NMSE far above 2e-6; a
// row given another head's or token's output has NMSE ~ 2.
constexpr double kFlashNmse = 2e-6, kFlashRowNmse = 2e-5;

struct FlashCase {
  Heads hs;
  int pos0, n_tok;
  float softcap = 0;
  int window = 0;
  float q_sigma = 1;  // the scores' RMS (k ~ N(0, 1), scale 1/sqrt(head_dim))
};

std::string describe(const FlashCase& fc) {
  return "heads " + std::to_string(fc.hs.n_head) + "/" + std::to_string(fc.hs.n_head_kv) + " x " +
         std::to_string(fc.hs.head_dim) + ", pos0 " + std::to_string(fc.pos0) + ", n_tok " +
         std::to_string(fc.n_tok) + ", softcap " + std::to_string(fc.softcap) + ", window " +
         std::to_string(fc.window) + ", q sigma " + std::to_string(fc.q_sigma);
}

cuda_ops::AttentionParams flash_params(const FlashCase& fc) {
  cuda_ops::AttentionParams p{fc.hs.n_head, fc.hs.n_head_kv, fc.hs.head_dim,
                              float(1.0 / std::sqrt(double(fc.hs.head_dim)))};
  p.softcap = fc.softcap;
  p.window = fc.window;
  return p;
}

// A cache of pos0 + n_tok rows followed by rows of NaN, which the kernel must neither read
// into a score nor multiply by a zero weight.
Cache flash_cache(std::mt19937_64& rng, const FlashCase& fc) {
  const int kv_dim = fc.hs.n_head_kv * fc.hs.head_dim, n_used = fc.pos0 + fc.n_tok;
  Cache c = random_cache(rng, n_used + 3, kv_dim, KvType::F16);
  const auto past = ptrdiff_t(size_t(n_used) * kv_dim * 2);
  std::fill(c.kb.begin() + past, c.kb.end(), uint8_t(0xFF));  // F16 0xFFFF: NaN
  std::fill(c.vb.begin() + past, c.vb.end(), uint8_t(0xFF));
  return c;
}

// NaN in every K (or V) value of KV head 0 at cache row `row` (uploaded bytes only).
void poison_row(Cache& c, const Heads& hs, int row, bool in_v) {
  auto& bytes = in_v ? c.vb : c.kb;
  const auto at = ptrdiff_t(size_t(row) * hs.n_head_kv * hs.head_dim * 2);
  std::fill(bytes.begin() + at, bytes.begin() + at + 2 * hs.head_dim, uint8_t(0xFF));
}

// Runs attention_prefill (which must take the tensor-core kernel) on q; returns the output.
std::vector<float> run_prefill(const FlashCase& fc, const Cache& c, const std::vector<float>& q) {
  const cuda_ops::AttentionParams p = flash_params(fc);
  DeviceBuffer<uint8_t> kc(c.kb), vc(c.vb);
  DeviceBuffer<float> d_q(q), out(q.size());
  DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{fc.pos0});
  cuda_ops::attention_prefill(d_q.get(), kc.get(), vc.get(), KvType::F16, out.get(), fc.n_tok,
                              d_pos.get(), p, nullptr);
  cuda_ops::synchronize();
  EXPECT_GUARDS(out);
  EXPECT_GUARDS(kc);
  return out.download();
}

// float64 outputs of the given tokens (all heads), row-major like q; other rows stay 0.
std::vector<double> reference_rows(const FlashCase& fc, const Cache& c, const std::vector<float>& q,
                                   const std::vector<int>& tokens) {
  const Heads& hs = fc.hs;
  const int q_dim = hs.n_head * hs.head_dim;
  const cuda_ops::AttentionParams p = flash_params(fc);
  std::vector<double> want(q.size(), 0.0);
  parallel_for(int64_t(tokens.size()) * hs.n_head, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int t = tokens[size_t(item / hs.n_head)], h = int(item % hs.n_head);
      const size_t off = size_t(t) * q_dim + size_t(h) * hs.head_dim;
      reference_head(q.data() + off, c, hs, h, fc.pos0 + t, p.scale, want.data() + off, fc.softcap,
                     fc.window);
    }
  });
  return want;
}

// The bounds above over the rows of `tokens` (every head), with the worst row named.
void expect_rows_close(const FlashCase& fc, const std::vector<float>& got,
                       const std::vector<double>& want, const std::vector<int>& tokens) {
  // No rows to hold (a NaN every token sees): 0 / 0 would read as a failure.
  if (tokens.empty()) return;
  const Heads& hs = fc.hs;
  const int q_dim = hs.n_head * hs.head_dim;
  const double sigma2 = std::max(1.0, double(fc.q_sigma) * fc.q_sigma);
  double err = 0, ref = 0, worst = 0;
  std::string worst_at = "none";
  for (int t : tokens)
    for (int h = 0; h < hs.n_head; ++h) {
      const size_t off = size_t(t) * q_dim + size_t(h) * hs.head_dim;
      double e = 0, r = 0;
      for (int i = 0; i < hs.head_dim; ++i) {
        const double d = double(got[off + size_t(i)]) - want[off + size_t(i)];
        e += d * d;
        r += want[off + size_t(i)] * want[off + size_t(i)];
      }
      const double row = std::isfinite(e) ? e / r : INFINITY;
      if (!(row <= worst))
        worst = row, worst_at = "token " + std::to_string(t) + " head " + std::to_string(h);
      err += e, ref += r;
    }
  const double nmse = std::isfinite(err) ? err / ref : INFINITY;
  EXPECT_LE(nmse, kFlashNmse * sigma2) << "whole-output NMSE";
  EXPECT_LE(worst, kFlashRowNmse * sigma2) << "worst row: " << worst_at;
  std::printf("[ info     ] %s: NMSE %.3g, worst row %.3g (%s)\n", describe(fc).c_str(), nmse,
              worst, worst_at.c_str());
}

std::vector<int> all_tokens(int n) {
  std::vector<int> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[size_t(i)] = i;
  return t;
}

void check_flash_case(std::mt19937_64& rng, const FlashCase& fc, const std::vector<int>& tokens) {
  SCOPED_TRACE(describe(fc));
  ASSERT_TRUE(cuda_ops::attention_prefill_uses_flash(KvType::F16, flash_params(fc)));
  const Cache c = flash_cache(rng, fc);
  const auto q = random_normal(rng, size_t(fc.n_tok) * fc.hs.n_head * fc.hs.head_dim, fc.q_sigma);
  const auto got = run_prefill(fc, c, q);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_TRUE(std::isfinite(got[i])) << "element " << i << " (every row is written, none NaN)";
  expect_rows_close(fc, got, reference_rows(fc, c, q, tokens), tokens);
}

// Head shapes of real models and edge cases of the row packing (64 rows per block, token-major):
// GQA 1 (64 tokens a block), 7 (9 tokens, one padding row), 4, 8, 16, and 72 (two blocks per KV
// head, the second with 8 heads); head sizes 16, 64, 96, 128, 256.
const Heads kFlashHeads[] = {{32, 32, 128}, {28, 4, 128}, {14, 2, 64},  {8, 4, 256}, {4, 1, 256},
                             {12, 4, 96},   {32, 4, 64},  {16, 1, 128}, {72, 1, 16}, {8, 8, 64}};

TEST(CudaAttention, FlashPrefillAgainstFloat64) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // Chunks from the start and after a cached past (pos0 on and off the 64-key tile grid), token
  // counts on and off the blocks' token counts (64, 16, 9, 8, 4, 1).
  const std::pair<int, int> batches[] = {{0, 1},   {0, 7},    {0, 64}, {0, 65},    {50, 100},
                                         {0, 300}, {200, 65}, {63, 2}, {1000, 37}, {128, 512}};
  for (const Heads& hs : kFlashHeads)
    for (const auto& [pos0, n_tok] : batches)
      check_flash_case(rng, FlashCase{hs, pos0, n_tok}, all_tokens(n_tok));
}

// gemma2's soft-cap and sliding windows (gemma2/3 shapes and others): windows narrower than a
// tile, across tiles, wider than the context; a cap that bends the scores (q of RMS 3 gives
// scores of RMS 3 against a cap of 5) and gemma2's 50.
TEST(CudaAttention, FlashPrefillSoftcapAndWindow) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Heads heads[] = {{8, 4, 256}, {4, 1, 256}, {14, 2, 64}, {12, 4, 96}, {32, 32, 128}};
  struct Shape {
    float softcap;
    int window;
    float q_sigma;
  };
  const Shape shapes[] = {{0, 1, 1},    {0, 16, 1}, {0, 64, 1}, {0, 100, 1},
                          {0, 5000, 1}, {5, 0, 3},  {5, 37, 3}, {50, 128, 1}};
  const std::pair<int, int> batches[] = {{0, 150}, {45, 150}, {300, 70}, {130, 1}};
  for (const Heads& hs : heads)
    for (const Shape& sh : shapes)
      for (const auto& [pos0, n_tok] : batches)
        check_flash_case(rng, FlashCase{hs, pos0, n_tok, sh.softcap, sh.window, sh.q_sigma},
                         all_tokens(n_tok));
}

// Long contexts (a 512-token chunk after 4 000, 8 000 and 16 000 cached positions; gemma2's
// 4096 window with its cap past it): every row must be finite, selected rows (both ends, the
// blocks' and tiles' edges, a few random ones) are held to the float64 reference.
TEST(CudaAttention, FlashPrefillLongContextSelectedRows) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const FlashCase cases[] = {{{28, 4, 128}, 4000, 512},
                             {{32, 8, 128}, 8000, 200},
                             {{8, 4, 256}, 4500, 300, 50.0f, 4096},
                             {{28, 4, 128}, 16000, 512}};
  for (const FlashCase& fc : cases) {
    std::vector<int> tokens = {0, 1, 8, 9, 15, 16, 17, 63, 64, 100};
    for (int t : {fc.n_tok / 2, fc.n_tok - 2, fc.n_tok - 1}) tokens.push_back(t);
    for (int i = 0; i < 5; ++i) tokens.push_back(int(rng() % uint64_t(fc.n_tok)));
    std::sort(tokens.begin(), tokens.end());
    tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
    check_flash_case(rng, fc, tokens);
  }
}

// A NaN in a key row reaches exactly the queries that see that key (the mask replaces its score
// elsewhere): the rows of KV head 0's query heads at positions that see it are NaN in every
// dimension, every other row is finite and right. A NaN in a value row reaches the queries that
// see it, and may reach the other rows of a tile that multiplies it (a zero weight times NaN is
// NaN in the mma, as in the FP32 kernel's loop): rows within 128 positions of it (a block's
// queries plus a key tile) are not checked, farther ones must be finite and right. Both
// kernels, the tensor-core one and the FP32 one on the F16 cache, must do this.
TEST(CudaAttention, PrefillNaNReachesOnlyTheQueriesThatSeeIt) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Heads hs{8, 2, 64};
  const int gqa = hs.n_head / hs.n_head_kv, q_dim = hs.n_head * hs.head_dim;
  for (int window : {0, 60}) {
    const FlashCase fc{hs, 64, 500, 0.0f, window};  // positions 64..563
    const Cache clean = flash_cache(rng, fc);
    const auto q = random_normal(rng, size_t(fc.n_tok) * q_dim, 1.0f);
    const auto want = reference_rows(fc, clean, q, all_tokens(fc.n_tok));
    for (bool flash : {true, false})
      for (int row : {300, 40})  // in the chunk; in the cached past
        for (bool in_v : {false, true}) {
          SCOPED_TRACE(std::string(flash ? "tensor-core" : "fp32") + " kernel, window " +
                       std::to_string(window) + ", NaN in " + (in_v ? "V" : "K") + " row " +
                       std::to_string(row));
          const FlashPrefillScope scope(flash);
          EXPECT_EQ(flash, cuda_ops::attention_prefill_uses_flash(KvType::F16, flash_params(fc)));
          Cache c = clean;
          poison_row(c, hs, row, in_v);
          const auto got = run_prefill(fc, c, q);
          std::vector<int> checked;
          for (int t = 0; t < fc.n_tok; ++t) {
            const int p = fc.pos0 + t, first = window > 0 ? std::max(0, p - window + 1) : 0;
            const bool sees = row <= p && row >= first;
            const bool far = row - p >= 128 || first - row >= 128;
            for (int h = 0; h < hs.n_head; ++h) {
              const float* o = got.data() + size_t(t) * q_dim + size_t(h) * hs.head_dim;
              int n_nan = 0;
              for (int i = 0; i < hs.head_dim; ++i) n_nan += std::isnan(o[i]) ? 1 : 0;
              if (h / gqa == 0 && sees) {
                EXPECT_EQ(n_nan, hs.head_dim) << "token " << t << " head " << h << " sees it";
              } else if (h / gqa != 0 || !in_v || far) {
                EXPECT_EQ(n_nan, 0) << "token " << t << " head " << h << " does not see it";
              }
            }
            // Whole tokens held to the reference: those no head of which may be NaN.
            if (!sees && (!in_v || far)) checked.push_back(t);
          }
          if (flash) {
            expect_rows_close(fc, got, want, checked);
          } else {
            for (int t : checked) {
              const size_t off = size_t(t) * q_dim;
              EXPECT_NMSE_BELOW(compare(got.data() + off, want.data() + off, size_t(q_dim)),
                                kAttentionNmse);
            }
          }
        }
  }
}

TEST(CudaAttention, RefusesUnsupportedHeads) {
  REQUIRE_CUDA_DEVICE();
  const cuda_ops::AttentionParams odd{4, 3, 64, 0.125f};  // 4 heads over 3 KV heads
  EXPECT_THROW(cuda_ops::attention_prefill(nullptr, nullptr, nullptr, KvType::F16, nullptr, 1,
                                           nullptr, odd, nullptr),
               Error);
  const cuda_ops::AttentionParams big{4, 4, 512, 0.05f};
  EXPECT_THROW(cuda_ops::attention_decode(nullptr, nullptr, nullptr, KvType::F16, nullptr, nullptr,
                                          nullptr, 16, big, nullptr),
               Error);
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaAttention, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
