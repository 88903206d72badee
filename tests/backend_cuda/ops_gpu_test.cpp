// Small CUDA ops against float64 references on fresh random inputs: RMS norm, SwiGLU, bias rows,
// RoPE (both layouts, partial rotation, linear scaling, far positions) with the KV-cache write,
// the fault-injection kernels of the parity gate's falsification tests, and greedy picks.
#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include <algorithm>
#include <limits>

#include "backend/greedy_pick.h"
#include "quant/fp16.h"

namespace lockstep::cuda_test {
namespace {

// Elementwise float32 ops: a few roundings per element, NMSE ~1e-14.
constexpr double kElementwiseNmse = 1e-11;
// Values stored to the F16 cache: rounding to 11 bits, NMSE ~1e-7.
constexpr double kF16StoreNmse = 1e-6;

TEST(CudaOps, RmsNorm) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int64_t cols : {64, 896, 1000, 3584}) {
    for (int64_t rows : {1, 5}) {
      const float eps = 1e-6f;
      auto x = random_normal(rng, size_t(rows * cols), 3.0f);
      const auto w = random_normal(rng, size_t(cols), 1.0f);
      std::vector<double> want(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t c = 0; c < cols; ++c)
          ss += double(x[size_t(r * cols + c)]) * x[size_t(r * cols + c)];
        const double scale = 1.0 / std::sqrt(ss / double(cols) + eps);
        for (int64_t c = 0; c < cols; ++c)
          want[size_t(r * cols + c)] = double(x[size_t(r * cols + c)]) * scale * w[size_t(c)];
      }
      DeviceBuffer<float> d_x(x), d_w(w), d_y(x.size());
      cuda_ops::rmsnorm(d_x.get(), d_w.get(), d_y.get(), rows, cols, eps, nullptr);
      cuda_ops::synchronize();
      const auto got = d_y.download();
      EXPECT_GUARDS(d_y);
      EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kElementwiseNmse);
    }
  }
}

TEST(CudaOps, SwigluAndBias) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 7, cols = 1001;
  const auto g = random_normal(rng, size_t(rows * cols), 4.0f);
  const auto u = random_normal(rng, size_t(rows * cols), 1.0f);
  const auto b = random_normal(rng, size_t(cols), 1.0f);
  std::vector<double> want_sw(g.size()), want_b(g.size());
  for (size_t i = 0; i < g.size(); ++i) {
    want_sw[i] = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
    want_b[i] = double(u[i]) + b[i % size_t(cols)];
  }
  DeviceBuffer<float> d_g(g), d_u(u), d_b(b), d_y(g.size());
  cuda_ops::swiglu(d_g.get(), d_u.get(), d_y.get(), rows * cols, nullptr);
  cuda_ops::add_bias(d_u.get(), d_b.get(), rows, cols, nullptr);
  cuda_ops::synchronize();
  const auto sw = d_y.download(), bu = d_u.download();
  EXPECT_GUARDS(d_y);
  EXPECT_GUARDS(d_u);
  EXPECT_NMSE_BELOW(compare(sw.data(), want_sw.data(), sw.size()), kElementwiseNmse);
  EXPECT_NMSE_BELOW(compare(bu.data(), want_b.data(), bu.size()), kElementwiseNmse);
}

struct RopeCase {
  RopeType type;
  int n_head, n_head_kv, head_dim, rope_dim;
  float freq_base, freq_scale;
  int pos0, n_tok;
};

// Reference rotation in float64; theta = pos * freq_scale * base^(-2i/rope_dim).
void rope_ref(std::vector<double>& x, int n_heads, int hd, int rope_dim, RopeType type, double base,
              double scale, int64_t pos) {
  for (int h = 0; h < n_heads; ++h)
    for (int i = 0; i < rope_dim / 2; ++i) {
      const double theta = double(pos) * scale * std::pow(base, -2.0 * i / rope_dim);
      const int a = type == RopeType::Neox ? i : 2 * i;
      const int b = type == RopeType::Neox ? i + rope_dim / 2 : 2 * i + 1;
      const double x0 = x[size_t(h * hd + a)], x1 = x[size_t(h * hd + b)];
      x[size_t(h * hd + a)] = x0 * std::cos(theta) - x1 * std::sin(theta);
      x[size_t(h * hd + b)] = x0 * std::sin(theta) + x1 * std::cos(theta);
    }
}

TEST(CudaOps, RopeAndKvStore) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const RopeCase cases[] = {
      {RopeType::Normal, 8, 4, 8, 8, 10000.0f, 1.0f, 0, 5},
      {RopeType::Neox, 28, 4, 128, 128, 1000000.0f, 1.0f, 37, 9},
      {RopeType::Normal, 4, 2, 64, 32, 10000.0f, 0.25f, 3, 3},      // partial rotation, scaling
      {RopeType::Neox, 14, 2, 64, 64, 1000000.0f, 1.0f, 30000, 2},  // far position
  };
  for (const auto& c : cases) {
    for (cuda_ops::KvType kv : {cuda_ops::KvType::F16, cuda_ops::KvType::F32}) {
      SCOPED_TRACE("head_dim " + std::to_string(c.head_dim) + " pos0 " + std::to_string(c.pos0) +
                   (kv == cuda_ops::KvType::F16 ? " f16" : " f32"));
      const int q_dim = c.n_head * c.head_dim, kv_dim = c.n_head_kv * c.head_dim;
      const int n_ctx = c.pos0 + c.n_tok + 3;
      const auto q = random_normal(rng, size_t(c.n_tok * q_dim), 1.0f);
      const auto k = random_normal(rng, size_t(c.n_tok * kv_dim), 1.0f);
      const auto v = random_normal(rng, size_t(c.n_tok * kv_dim), 1.0f);
      std::vector<double> want_q, want_k, want_v;
      for (int t = 0; t < c.n_tok; ++t) {
        std::vector<double> qt(q.begin() + t * q_dim, q.begin() + (t + 1) * q_dim);
        std::vector<double> kt(k.begin() + t * kv_dim, k.begin() + (t + 1) * kv_dim);
        rope_ref(qt, c.n_head, c.head_dim, c.rope_dim, c.type, c.freq_base, c.freq_scale,
                 c.pos0 + t);
        rope_ref(kt, c.n_head_kv, c.head_dim, c.rope_dim, c.type, c.freq_base, c.freq_scale,
                 c.pos0 + t);
        want_q.insert(want_q.end(), qt.begin(), qt.end());
        want_k.insert(want_k.end(), kt.begin(), kt.end());
        want_v.insert(want_v.end(), v.begin() + t * kv_dim, v.begin() + (t + 1) * kv_dim);
      }
      const size_t eb = cuda_ops::kv_type_bytes(kv);
      DeviceBuffer<float> d_q(q), d_k(k), d_v(v);
      DeviceBuffer<uint8_t> k_cache(size_t(n_ctx) * kv_dim * eb, 0x11),
          v_cache(size_t(n_ctx) * kv_dim * eb, 0x11);
      DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{c.pos0});
      double* table = cuda_ops::make_rope_table(c.freq_base, c.rope_dim);
      cuda_ops::RopeParams p{c.n_head, c.n_head_kv,  c.head_dim, c.rope_dim,
                             c.type,   c.freq_scale, table};
      cuda_ops::rope_and_store_kv(d_q.get(), d_k.get(), d_v.get(), k_cache.get(), v_cache.get(), kv,
                                  c.n_tok, d_pos.get(), p, nullptr);
      cuda_ops::synchronize();
      cuda_ops::device_free(table);
      const auto got_q = d_q.download();
      EXPECT_GUARDS(k_cache);
      EXPECT_GUARDS(v_cache);
      EXPECT_NMSE_BELOW(compare(got_q.data(), want_q.data(), got_q.size()), kElementwiseNmse);
      // Cache rows pos0 .. pos0 + n_tok - 1 hold K and V; all other rows are untouched.
      const auto kc = k_cache.download(), vc = v_cache.download();
      auto read = [&](const std::vector<uint8_t>& cache, size_t i) {
        if (kv == cuda_ops::KvType::F32) {
          float f;
          std::memcpy(&f, cache.data() + 4 * i, 4);
          return f;
        }
        uint16_t h;
        std::memcpy(&h, cache.data() + 2 * i, 2);
        return fp16_to_fp32(h);
      };
      std::vector<float> got_k, got_v;
      for (size_t i = 0; i < size_t(c.n_tok) * kv_dim; ++i) {
        got_k.push_back(read(kc, size_t(c.pos0) * kv_dim + i));
        got_v.push_back(read(vc, size_t(c.pos0) * kv_dim + i));
      }
      const double bound = kv == cuda_ops::KvType::F16 ? kF16StoreNmse : kElementwiseNmse;
      EXPECT_NMSE_BELOW(compare(got_k.data(), want_k.data(), got_k.size()), bound);
      EXPECT_NMSE_BELOW(compare(got_v.data(), want_v.data(), got_v.size()), bound);
      for (size_t b = 0; b < kc.size(); ++b) {
        const size_t row = b / (size_t(kv_dim) * eb);
        if (row >= size_t(c.pos0) && row < size_t(c.pos0 + c.n_tok)) continue;
        ASSERT_EQ(kc[b], 0x11) << "K cache row " << row << " was written";
        ASSERT_EQ(vc[b], 0x11) << "V cache row " << row << " was written";
      }
    }
  }
}

// The fault knobs must reproduce the CPU reference's pseudo-random values (same splitmix64 hash
// of the same keys), so a falsification test means the same thing on both backends.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t hash4(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  return mix(mix(mix(mix(a) ^ b) ^ c) ^ d);
}
float unit_noise(uint64_t h) {
  return float(double(h >> 40) * (2.0 / double(1ull << 24)) - 1.0);
}

TEST(CudaOps, FaultKernels) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 333;
  const auto h = random_normal(rng, size_t(n), 1.0f);
  DeviceBuffer<float> d_h(h);
  cuda_ops::fault_corrupt_hidden(d_h.get(), n, 3, 17, 0.5f, nullptr);
  const int64_t kv_dim = 40, n_ctx = 10;
  const auto kv0 = random_normal(rng, size_t(n_ctx * kv_dim), 1.0f);
  DeviceBuffer<float> k(kv0), v(kv0);
  cuda_ops::fault_drift_kv(k.get(), v.get(), cuda_ops::KvType::F32, kv_dim, 2, 4, 7, 0.25f,
                           nullptr);
  DeviceBuffer<float> nan_buf(std::vector<float>(100, 1.0f));
  cuda_ops::fill_nan(nan_buf.get() + 10, 20, nullptr);
  cuda_ops::synchronize();

  const auto got_h = d_h.download();
  for (int64_t i = 0; i < n; ++i) {
    const bool neg = hash4(1, 3, 17, uint64_t(i)) & 1;
    EXPECT_EQ(got_h[size_t(i)], h[size_t(i)] + (neg ? -0.5f : 0.5f)) << i;
  }
  const auto got_k = k.download(), got_v = v.download();
  for (int64_t p = 0; p < n_ctx; ++p)
    for (int64_t i = 0; i < kv_dim; ++i) {
      const size_t at = size_t(p * kv_dim + i);
      float wk = kv0[at], wv = kv0[at];
      if (p >= 4 && p < 7) {
        const uint64_t key = (uint64_t(p) << 32) | uint64_t(i);
        wk += 0.25f * unit_noise(hash4(2, 2, key, 0));
        wv += 0.25f * unit_noise(hash4(2, 2, key, 1));
      }
      // The GPU may fuse the multiply-add: equal to the last bit or two.
      ASSERT_NEAR(got_k[at], wk, 1e-6f * (1.0f + std::fabs(wk))) << "K pos " << p << " dim " << i;
      ASSERT_NEAR(got_v[at], wv, 1e-6f * (1.0f + std::fabs(wv))) << "V pos " << p << " dim " << i;
    }
  const auto nb = nan_buf.download();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(std::isnan(nb[size_t(i)]), i >= 10 && i < 30) << i;
  EXPECT_GUARDS(d_h);
  EXPECT_GUARDS(k);
  EXPECT_GUARDS(nan_buf);
}

// Device greedy picks hold greedy_pick's rule on every row: the lowest id among ties for the
// maximum, only the first `cols` of a row's `stride`, and -1 for a row with a NaN (also at id 0),
// a +inf, or nothing finite; -inf values elsewhere do not matter.
TEST(CudaOps, GreedyPicksAreTheHostsPicks) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t cols : {1, 7, 512, 513, 32000, 151936}) {
    const int64_t stride = cols + 3, rows = 24;
    auto x = random_normal(rng, size_t(rows * stride), 4.0f);
    std::uniform_int_distribution<int64_t> at(0, cols - 1);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = x.data() + r * stride;
      switch (r % 8) {
        case 1: {  // a tie for the maximum at up to three places
          const float top = *std::max_element(row, row + cols) + 1.0f;
          for (int k = 0; k < 3; ++k) row[at(rng)] = top;
          break;
        }
        case 2:
          row[at(rng)] = nan;
          break;
        case 3:
          row[0] = nan;
          break;
        case 4:
          row[at(rng)] = inf;
          break;
        case 5:
          std::fill(row, row + cols, -inf);
          break;
        case 6:  // -inf scattered among finite values
          for (int k = 0; k < 5; ++k) row[at(rng)] = -inf;
          break;
        case 7:  // the largest value past cols, in the stride's padding: not a candidate
          row[cols] = 1e30f;
          break;
        default:
          break;
      }
    }
    DeviceBuffer<float> d_x(x);
    DeviceBuffer<int32_t> d_out{size_t(rows)};
    cuda_ops::greedy_pick_rows(d_x.get(), stride, rows, cols, d_out.get(), nullptr);
    cuda_ops::synchronize();
    const auto got = d_out.download();
    EXPECT_GUARDS(d_out);
    for (int64_t r = 0; r < rows; ++r)
      EXPECT_EQ(got[size_t(r)], greedy_pick({x.data() + r * stride, size_t(cols)}))
          << "cols " << cols << " row " << r;
  }
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaOps, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
