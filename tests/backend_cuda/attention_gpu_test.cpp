// Attention kernels against a float64 reference softmax(q k^T * scale) v over the cached
// positions, with K and V read from the very cache contents the kernel sees (F16 values are
// exact in float64), so the bound measures the kernel alone: float32 scores, exponentials and
// sums give NMSE ~1e-13; bound 1e-10.
// Decode covers contexts shorter and longer than one split (128 positions), GQA ratios 1, 2, 7
// and 10 (more than one block of query heads per KV head); prefill covers tiles with and without
// a cached past and query counts that are not multiples of the 32-row tile.
#include <algorithm>

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

// Output of query head h at position pos (keys 0..pos).
void reference_head(const float* q, const Cache& c, const Heads& hs, int h, int pos, double scale,
                    double* out) {
  const int hd = hs.head_dim, kv_dim = hs.n_head_kv * hd;
  const int kvh = h / (hs.n_head / hs.n_head_kv);
  std::vector<double> s(size_t(pos + 1));
  double m = -INFINITY;
  for (int p = 0; p <= pos; ++p) {
    double d = 0;
    for (int i = 0; i < hd; ++i) d += double(q[i]) * c.k[size_t(p) * kv_dim + kvh * hd + i];
    s[size_t(p)] = d * scale;
    m = std::max(m, s[size_t(p)]);
  }
  double l = 0;
  for (auto& x : s) l += (x = std::exp(x - m));
  for (int i = 0; i < hd; ++i) {
    double o = 0;
    for (int p = 0; p <= pos; ++p) o += s[size_t(p)] * c.v[size_t(p) * kv_dim + kvh * hd + i];
    out[i] = o / l;
  }
}

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

TEST(CudaAttention, PrefillCausalAgainstFloat64) {
  REQUIRE_CUDA_DEVICE();
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
