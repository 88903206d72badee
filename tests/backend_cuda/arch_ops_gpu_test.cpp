// The CUDA kernels and parameters the architectures beyond llama/qwen2 add, each against a float64
// computation on fresh random inputs (never zeros; NaN never passes):
//   per-head q/k RMSNorm and the post-norm with residual add (norm.cu), GeGLU, the final
//   soft-cap and the embedding scale (elementwise.cu), the fused GeGLU matvec on the float and
//   int8-activation paths, single and batched (matvec_quant.cu), rope with Llama 3.1 frequency
//   factors, with YaRN and with a second (per-layer) base (rope.cu), and attention with a score
//   soft-cap and a sliding window smaller than the context in decode (one token and token rows)
//   and prefill (attention.cu).
#include <algorithm>

#include "backend_cuda/cuda_test_util.h"

#ifdef LOCKSTEP_HAVE_CUDA

#include "quant/fp16.h"

namespace lockstep::cuda_test {
namespace {

// Elementwise float32 ops: a few roundings per element, NMSE ~1e-14 (ops_gpu_test.cpp).
constexpr double kElementwiseNmse = 1e-11;
// Float-activation matvecs (matvec_gpu_test.cpp).
constexpr double kMatvecNmse = 1e-9;
// Attention against float64 with the kernel's own cache contents (attention_gpu_test.cpp).
constexpr double kAttentionNmse = 1e-10;
// Rope with F32 cache: angles in float64, rotation in float32.
constexpr double kRopeNmse = 1e-11;

double gelu_tanh64(double v) {
  const double c = std::sqrt(2.0 / 3.14159265358979323846);
  return 0.5 * v * (1.0 + std::tanh(c * (v + 0.044715 * v * v * v)));
}

std::vector<double> rmsnorm64(const float* x, const float* w, int64_t rows, int64_t cols,
                              float eps) {
  std::vector<double> out(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < cols; ++c) ss += double(x[r * cols + c]) * x[r * cols + c];
    const double scale = 1.0 / std::sqrt(ss / double(cols) + eps);
    for (int64_t c = 0; c < cols; ++c)
      out[size_t(r * cols + c)] = double(x[r * cols + c]) * scale * w[c];
  }
  return out;
}

// ---- norms, activations, caps ------------------------------------------------------------

// qwen3/gemma3: each head of q (n_tok x n_head rows of head_dim) normalised in place with one
// head_dim weight; gemma's post-norm: h += norm(x) * w.
TEST(CudaArchOps, QkNormPerHeadAndPostNormAdd) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const float eps = 1e-6f;
  for (int64_t hd : {48, 64, 128, 256})
    for (int64_t rows : {1, 16 * 3}) {
      SCOPED_TRACE("head_dim " + std::to_string(hd) + " rows " + std::to_string(rows));
      const auto q = random_normal(rng, size_t(rows * hd), 3.0f);
      const auto w = random_normal(rng, size_t(hd), 1.0f);
      const auto want = rmsnorm64(q.data(), w.data(), rows, hd, eps);
      DeviceBuffer<float> d_q(q), d_w(w);
      cuda_ops::rmsnorm(d_q.get(), d_w.get(), d_q.get(), rows, hd, eps, nullptr);
      cuda_ops::synchronize();
      const auto got = d_q.download();
      EXPECT_GUARDS(d_q);
      EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kElementwiseNmse);
    }
  for (int64_t cols : {256, 1152, 2304})
    for (int64_t rows : {1, 7}) {
      SCOPED_TRACE("post-norm cols " + std::to_string(cols) + " rows " + std::to_string(rows));
      const auto x = random_normal(rng, size_t(rows * cols), 5.0f);
      const auto h = random_normal(rng, size_t(rows * cols), 2.0f);
      const auto w = random_normal(rng, size_t(cols), 1.0f);
      auto want = rmsnorm64(x.data(), w.data(), rows, cols, eps);
      for (size_t i = 0; i < want.size(); ++i) want[i] += h[i];
      DeviceBuffer<float> d_x(x), d_h(h), d_w(w);
      cuda_ops::rmsnorm_add(d_x.get(), d_w.get(), d_h.get(), rows, cols, eps, nullptr);
      cuda_ops::synchronize();
      const auto got = d_h.download();
      EXPECT_GUARDS(d_h);
      EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kElementwiseNmse);
      // The input is left as it was.
      const auto x_after = d_x.download();
      EXPECT_EQ(0, std::memcmp(x_after.data(), x.data(), x.size() * sizeof(float)));
    }
}

TEST(CudaArchOps, GegluSoftcapAndScale) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 7 * 1001;
  const auto g = random_normal(rng, size_t(n), 4.0f);
  const auto u = random_normal(rng, size_t(n), 1.0f);
  auto logits = random_normal(rng, size_t(n), 40.0f);  // well past the cap of 30
  const float cap = 30.0f, s = 33.941125f;             // gemma2's cap; sqrt(1152)
  std::vector<double> want_ge(static_cast<size_t>(n)), want_cap(static_cast<size_t>(n)),
      want_scale(static_cast<size_t>(n));
  int capped = 0;
  for (size_t i = 0; i < size_t(n); ++i) {
    want_ge[i] = gelu_tanh64(g[i]) * u[i];
    want_cap[i] = cap * std::tanh(double(logits[i]) / cap);
    want_scale[i] = double(u[i]) * s;
    capped += std::fabs(logits[i]) > cap;
  }
  EXPECT_GT(capped, n / 10);  // the cap changes many values, not just rounding
  DeviceBuffer<float> d_g(g), d_u(u), d_y(static_cast<size_t>(n)), d_l(logits), d_s(u);
  cuda_ops::geglu(d_g.get(), d_u.get(), d_y.get(), n, nullptr);
  cuda_ops::softcap(d_l.get(), n, cap, nullptr);
  cuda_ops::scale(d_s.get(), n, s, nullptr);
  cuda_ops::synchronize();
  const auto ge = d_y.download(), lc = d_l.download(), sc = d_s.download();
  EXPECT_GUARDS(d_y);
  EXPECT_GUARDS(d_l);
  EXPECT_GUARDS(d_s);
  EXPECT_NMSE_BELOW(compare(ge.data(), want_ge.data(), ge.size()), kElementwiseNmse);
  EXPECT_NMSE_BELOW(compare(lc.data(), want_cap.data(), lc.size()), kElementwiseNmse);
  EXPECT_NMSE_BELOW(compare(sc.data(), want_scale.data(), sc.size()), kElementwiseNmse);
  for (float v : lc) EXPECT_LT(std::fabs(v), cap);
}

// ---- the fused GeGLU matvec ------------------------------------------------------------------

struct Int8Scratch {
  Int8Scratch(int64_t max_cols, int64_t max_tokens)
      : buffer(cuda_ops::act_q8_scratch_bytes(max_cols, max_tokens)),
        act(cuda_ops::act_q8_scratch(buffer.get(), max_cols, max_tokens)) {}
  DeviceBuffer<uint8_t> buffer;
  cuda_ops::ActQ8Scratch act;
};

// Float activations: y = gelu(Wg xn) * (Wu xn) against float64 (xn: the fused pre-norm's
// output). Int8 activations (Q4_K, Q6_K with a scratch): the fused product against float64 GELU
// of the same kernels' separate gate and up products (their rounding is bounded in
// matvec_gpu_test.cpp); what this checks is that GELU, not SiLU, is applied to the right sums.
TEST(CudaArchOps, FusedGegluMatvecSingleAndBatched) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const float eps = 1e-6f;
  for (TensorType t : {TensorType::F32, TensorType::Q8_0, TensorType::Q4_K, TensorType::Q6_K})
    for (int64_t rows : {77, 4100})
      for (int64_t n_tok : {1, 3}) {
        const bool int8 = t == TensorType::Q4_K || t == TensorType::Q6_K;
        const int64_t cols = 1024;
        SCOPED_TRACE(std::string(tensor_type_info(t).name) + " rows " + std::to_string(rows) +
                     " tokens " + std::to_string(n_tok));
        const auto wg = random_weights(rng, t, rows, cols), wu = random_weights(rng, t, rows, cols);
        const auto x = random_normal(rng, size_t(n_tok * cols), 3.0f);
        const auto nw = random_normal(rng, size_t(cols), 1.0f);
        DeviceBuffer<uint8_t> d_g(wg), d_u(wu);
        DeviceBuffer<float> d_x(x), d_nw(nw), d_y(size_t(n_tok * rows));
        Int8Scratch scratch(cols, n_tok);
        const cuda_ops::ActQ8Scratch* act = int8 ? &scratch.act : nullptr;
        cuda_ops::matvec_swiglu_batch(t, d_g.get(), d_u.get(), rows, cols, d_x.get(), n_tok,
                                      d_y.get(), nullptr, d_nw.get(), eps, act,
                                      FfnActivation::GeluTanh);
        cuda_ops::synchronize();
        const auto got = d_y.download();
        EXPECT_GUARDS(d_y);
        std::vector<double> want(got.size());
        if (!int8) {
          for (int64_t k = 0; k < n_tok; ++k) {
            const auto xn = rmsnorm64(x.data() + k * cols, nw.data(), 1, cols, eps);
            std::vector<float> xf(xn.begin(), xn.end());
            const auto g = reference_matvec(t, wg.data(), rows, cols, xf.data());
            const auto u = reference_matvec(t, wu.data(), rows, cols, xf.data());
            for (int64_t r = 0; r < rows; ++r)
              want[size_t(k * rows + r)] = gelu_tanh64(g[size_t(r)]) * u[size_t(r)];
          }
          EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kMatvecNmse);
        } else {
          const cuda_ops::MatvecTarget targets[2] = {{d_g.get(), rows, nullptr, nullptr},
                                                     {d_u.get(), rows, nullptr, nullptr}};
          DeviceBuffer<float> d_gs(size_t(n_tok * rows)), d_us(size_t(n_tok * rows));
          cuda_ops::MatvecTarget both[2] = {targets[0], targets[1]};
          both[0].y = d_gs.get(), both[1].y = d_us.get();
          cuda_ops::matvec_multi_batch(t, cols, d_x.get(), n_tok, both, 2, nullptr, d_nw.get(), eps,
                                       act);
          cuda_ops::synchronize();
          const auto g = d_gs.download(), u = d_us.download();
          for (size_t i = 0; i < want.size(); ++i) want[i] = gelu_tanh64(g[i]) * double(u[i]);
          EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()),
                            1e-12);  // GELU's rounding
        }
        // SiLU on the same sums is far from it (they differ where |gate| is below a few): the
        // activation parameter is honoured.
        DeviceBuffer<float> d_ys(size_t(n_tok * rows));
        cuda_ops::matvec_swiglu_batch(t, d_g.get(), d_u.get(), rows, cols, d_x.get(), n_tok,
                                      d_ys.get(), nullptr, d_nw.get(), eps, act);
        cuda_ops::synchronize();
        const auto ys = d_ys.download();
        EXPECT_GT(compare(ys.data(), want.data(), ys.size()).nmse,
                  100 * (int8 ? 1e-12 : kMatvecNmse));
      }
}

// ---- rope ------------------------------------------------------------------------------------

struct RopeExt {
  std::vector<float> factors;  // empty: none
  bool yarn = false;
  double low = 0, high = 0, mscale = 1;
};

// The CPU reference's angles (ops_ref.cpp rope()) and rotation, in float64.
void rope_ref64(std::vector<double>& x, int n_heads, int hd, int rope_dim, RopeType type,
                double base, double scale, int64_t pos, const RopeExt& e) {
  for (int i = 0; i < rope_dim / 2; ++i) {
    double extrap = double(pos) * std::pow(base, -2.0 * i / rope_dim);
    if (!e.factors.empty()) extrap /= double(e.factors[size_t(i)]);
    double theta = extrap * scale;
    if (e.yarn) {
      const double ramp = (double(i) - e.low) / std::max(0.001, e.high - e.low);
      const double mix = 1 - std::clamp(ramp, 0.0, 1.0);
      theta = theta * (1 - mix) + extrap * mix;
    }
    const double c = std::cos(theta) * e.mscale, s = std::sin(theta) * e.mscale;
    const int a = type == RopeType::Neox ? i : 2 * i;
    const int b = type == RopeType::Neox ? i + rope_dim / 2 : 2 * i + 1;
    for (int h = 0; h < n_heads; ++h) {
      const double x0 = x[size_t(h * hd + a)], x1 = x[size_t(h * hd + b)];
      x[size_t(h * hd + a)] = x0 * c - x1 * s;
      x[size_t(h * hd + b)] = x0 * s + x1 * c;
    }
  }
}

// Frequency factors (Llama 3.1: 1 .. 8), YaRN (a blend band inside the rotated pairs, mscale
// above 1) and two bases on one set of tokens (gemma3's sliding and global layers) against the
// float64 rotation; each variant must also differ from the plain rope (the parameter is used).
TEST(CudaArchOps, RopeWithFactorsYarnAndPerLayerBase) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int n_head = 8, n_head_kv = 4, hd = 64, rope_dim = 64, n_tok = 5;
  const int q_dim = n_head * hd, kv_dim = n_head_kv * hd;
  std::uniform_real_distribution<float> fd(1.0f, 8.0f);
  RopeExt factors;
  for (int i = 0; i < rope_dim / 2; ++i) factors.factors.push_back(fd(rng));
  RopeExt yarn;
  yarn.yarn = true, yarn.low = 3, yarn.high = 20, yarn.mscale = 1.0 + 0.1 * std::log(4.0);
  struct Case {
    const char* what;
    RopeType type;
    float base, scale;
    const RopeExt* ext;
  };
  const RopeExt none;
  const Case cases[] = {{"factors", RopeType::Normal, 500000.0f, 1.0f, &factors},
                        {"yarn", RopeType::Neox, 1000000.0f, 0.25f, &yarn},
                        {"sliding base", RopeType::Neox, 10000.0f, 1.0f, &none},
                        {"global base", RopeType::Neox, 1000000.0f, 1.0f, &none}};
  for (const Case& c : cases)
    for (int pos0 : {0, 37, 3000}) {
      SCOPED_TRACE(std::string(c.what) + " pos0 " + std::to_string(pos0));
      const int n_ctx = pos0 + n_tok + 1;
      const auto q = random_normal(rng, size_t(n_tok * q_dim), 1.0f);
      const auto k = random_normal(rng, size_t(n_tok * kv_dim), 1.0f);
      const auto v = random_normal(rng, size_t(n_tok * kv_dim), 1.0f);
      std::vector<double> want_q, want_k, plain_q;
      for (int t = 0; t < n_tok; ++t) {
        std::vector<double> qt(q.begin() + t * q_dim, q.begin() + (t + 1) * q_dim);
        std::vector<double> kt(k.begin() + t * kv_dim, k.begin() + (t + 1) * kv_dim);
        std::vector<double> pt = qt;
        rope_ref64(qt, n_head, hd, rope_dim, c.type, c.base, c.scale, pos0 + t, *c.ext);
        rope_ref64(kt, n_head_kv, hd, rope_dim, c.type, c.base, c.scale, pos0 + t, *c.ext);
        rope_ref64(pt, n_head, hd, rope_dim, c.type, 10000.0, 1.0, pos0 + t, none);
        want_q.insert(want_q.end(), qt.begin(), qt.end());
        want_k.insert(want_k.end(), kt.begin(), kt.end());
        plain_q.insert(plain_q.end(), pt.begin(), pt.end());
      }
      DeviceBuffer<float> d_q(q), d_k(k), d_v(v), k_cache(size_t(n_ctx * kv_dim)),
          v_cache(size_t(n_ctx * kv_dim));
      DeviceBuffer<float> d_factors(c.ext->factors.empty() ? std::vector<float>{1.0f}
                                                           : c.ext->factors);
      DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{pos0});
      double* table = cuda_ops::make_rope_table(c.base, rope_dim);
      cuda_ops::RopeParams p{n_head, n_head_kv, hd, rope_dim, c.type, c.scale, table};
      if (!c.ext->factors.empty()) p.freq_factors = d_factors.get();
      p.yarn = c.ext->yarn, p.yarn_low = c.ext->low, p.yarn_high = c.ext->high;
      p.mscale = c.ext->mscale;
      cuda_ops::rope_and_store_kv(d_q.get(), d_k.get(), d_v.get(), k_cache.get(), v_cache.get(),
                                  cuda_ops::KvType::F32, n_tok, d_pos.get(), p, nullptr);
      cuda_ops::synchronize();
      cuda_ops::device_free(table);
      const auto got_q = d_q.download(), kc = k_cache.download();
      EXPECT_GUARDS(d_q);
      EXPECT_GUARDS(k_cache);
      EXPECT_NMSE_BELOW(compare(got_q.data(), want_q.data(), got_q.size()), kRopeNmse);
      EXPECT_NMSE_BELOW(
          compare(kc.data() + size_t(pos0) * kv_dim, want_k.data(), size_t(n_tok * kv_dim)),
          kRopeNmse);
      if (pos0 > 0 && std::string(c.what) != "sliding base") {
        EXPECT_GT(compare(got_q.data(), plain_q.data(), got_q.size()).nmse, 1e-6)
            << "indistinguishable from the plain rope";
      }
    }
}

// ---- attention with soft-cap and sliding window ---------------------------------------------

struct Heads {
  int n_head, n_head_kv, head_dim;
};

// Output of query head h at position pos: keys max(0, pos - window + 1) .. pos (window 0: all),
// score = cap * tanh(q.k * scale / cap) when cap > 0; K and V as the kernel sees them (F32).
void reference_head(const float* q, const std::vector<float>& kc, const std::vector<float>& vc,
                    const Heads& hs, int h, int pos, double scale, double cap, int window,
                    double* out) {
  const int hd = hs.head_dim, kv_dim = hs.n_head_kv * hd;
  const int kvh = h / (hs.n_head / hs.n_head_kv);
  const int first = window > 0 ? std::max(0, pos - window + 1) : 0;
  std::vector<double> s;
  double m = -INFINITY;
  for (int p = first; p <= pos; ++p) {
    double d = 0;
    for (int i = 0; i < hd; ++i) d += double(q[i]) * kc[size_t(p) * kv_dim + kvh * hd + i];
    d *= scale;
    if (cap > 0) d = cap * std::tanh(d / cap);
    s.push_back(d);
    m = std::max(m, d);
  }
  double l = 0;
  for (auto& x : s) l += (x = std::exp(x - m));
  for (int i = 0; i < hd; ++i) {
    double o = 0;
    for (int p = first; p <= pos; ++p)
      o += s[size_t(p - first)] * vc[size_t(p) * kv_dim + kvh * hd + i];
    out[i] = o / l;
  }
}

struct AttnCase {
  float softcap;
  int window;
};
// Windows of 1, shorter than a decode split (32) and a prefill key tile (64), across both, and
// longer than some contexts; caps that bite (scores scaled to about +-10 by sigma 3 inputs).
const AttnCase kAttnCases[] = {{0, 1}, {0, 7}, {0, 33}, {0, 100}, {5.0f, 0}, {5.0f, 40}};
const Heads kArchHeads[] = {{8, 4, 64}, {4, 1, 256}, {8, 4, 48}};

TEST(CudaArchOps, DecodeAttentionWithSoftcapAndWindow) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int max_ctx = 400;
  for (const Heads& hs : kArchHeads)
    for (const AttnCase& c : kAttnCases) {
      const int kv_dim = hs.n_head_kv * hs.head_dim, q_dim = hs.n_head * hs.head_dim;
      const auto kc = random_normal(rng, size_t(max_ctx) * kv_dim, 1.0f);
      const auto vc = random_normal(rng, size_t(max_ctx) * kv_dim, 1.0f);
      DeviceBuffer<float> d_k(kc), d_v(vc);
      cuda_ops::AttentionParams p{hs.n_head, hs.n_head_kv, hs.head_dim,
                                  float(1.0 / std::sqrt(double(hs.head_dim)))};
      p.softcap = c.softcap, p.window = c.window;
      DeviceBuffer<float> partials(cuda_ops::attention_decode_scratch_floats(max_ctx, p));
      for (int pos : {0, 5, 31, 32, 64, 130, max_ctx - 1}) {
        SCOPED_TRACE("heads " + std::to_string(hs.n_head) + "/" + std::to_string(hs.n_head_kv) +
                     " x " + std::to_string(hs.head_dim) + " cap " + std::to_string(c.softcap) +
                     " window " + std::to_string(c.window) + " pos " + std::to_string(pos));
        const auto q = random_normal(rng, size_t(q_dim), 3.0f);
        std::vector<double> want(static_cast<size_t>(q_dim)), full(static_cast<size_t>(q_dim));
        for (int h = 0; h < hs.n_head; ++h) {
          reference_head(q.data() + h * hs.head_dim, kc, vc, hs, h, pos, p.scale, c.softcap,
                         c.window, want.data() + h * hs.head_dim);
          reference_head(q.data() + h * hs.head_dim, kc, vc, hs, h, pos, p.scale, 0, 0,
                         full.data() + h * hs.head_dim);
        }
        DeviceBuffer<float> d_q(q), out(static_cast<size_t>(q_dim));
        DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{pos});
        cuda_ops::attention_decode(d_q.get(), d_k.get(), d_v.get(), cuda_ops::KvType::F32,
                                   out.get(), partials.get(), d_pos.get(), max_ctx, p, nullptr);
        cuda_ops::synchronize();
        const auto got = out.download();
        EXPECT_GUARDS(out);
        EXPECT_GUARDS(partials);
        EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kAttentionNmse);
        // Past the window's reach the result differs from plain attention (the mask is used).
        if (pos >= 2 * std::max(c.window, 1)) {
          EXPECT_GT(compare(got.data(), full.data(), got.size()).nmse, 1e-6);
        }
      }
    }
}

// Token rows (a batched decode step, each token at its own position of its own sequence) with
// a window and a cap: bit for bit each token alone.
TEST(CudaArchOps, DecodeRowsWithWindowEqualEachTokenAlone) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Heads hs{8, 4, 64};
  const int seq_rows = 300, n_seq = 4;
  const std::vector<int32_t> pos = {0, 299, 40, 150};
  const std::vector<int32_t> seq = {2, 0, 3, 1};
  const int n_tok = int(pos.size()), kv_dim = hs.n_head_kv * hs.head_dim,
            q_dim = hs.n_head * hs.head_dim;
  const auto kc = random_normal(rng, size_t(seq_rows * n_seq) * kv_dim, 1.0f);
  const auto vc = random_normal(rng, size_t(seq_rows * n_seq) * kv_dim, 1.0f);
  const auto q = random_normal(rng, size_t(n_tok * q_dim), 3.0f);
  DeviceBuffer<float> d_k(kc), d_v(vc), d_q(q), out(size_t(n_tok * q_dim)),
      one(static_cast<size_t>(q_dim));
  cuda_ops::AttentionParams p{hs.n_head, hs.n_head_kv, hs.head_dim, 0.125f, 5.0f, 37};
  const size_t per_tok = cuda_ops::attention_decode_scratch_floats(seq_rows, p);
  DeviceBuffer<float> partials(per_tok * n_tok);
  DeviceBuffer<int32_t> d_pos(pos), d_seq(seq);
  const cuda_ops::TokenRows rows{d_pos.get(), d_seq.get(), seq_rows};
  cuda_ops::attention_decode_rows(d_q.get(), d_k.get(), d_v.get(), cuda_ops::KvType::F32, out.get(),
                                  partials.get(), per_tok, n_tok, rows, seq_rows, p, nullptr);
  cuda_ops::synchronize();
  const auto batched = out.download();
  for (int t = 0; t < n_tok; ++t) {
    DeviceBuffer<float> qt(std::vector<float>(q.begin() + t * q_dim, q.begin() + (t + 1) * q_dim));
    DeviceBuffer<int32_t> pt(std::vector<int32_t>{pos[size_t(t)]});
    const size_t off = size_t(seq[size_t(t)]) * seq_rows * kv_dim;
    cuda_ops::attention_decode(qt.get(), d_k.get() + off, d_v.get() + off, cuda_ops::KvType::F32,
                               one.get(), partials.get(), pt.get(), seq_rows, p, nullptr);
    cuda_ops::synchronize();
    const auto alone = one.download();
    for (float v : alone) ASSERT_TRUE(std::isfinite(v));
    EXPECT_EQ(0, std::memcmp(alone.data(), batched.data() + t * q_dim, q_dim * sizeof(float)))
        << "token " << t;
  }
}

TEST(CudaArchOps, PrefillAttentionWithSoftcapAndWindow) {
  REQUIRE_CUDA_DEVICE();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const Heads& hs : kArchHeads)
    for (const AttnCase& c : kAttnCases)
      for (int pos0 : {0, 45}) {
        const int n_tok = 150, n_ctx = pos0 + n_tok;
        SCOPED_TRACE("heads " + std::to_string(hs.n_head) + "/" + std::to_string(hs.n_head_kv) +
                     " x " + std::to_string(hs.head_dim) + " cap " + std::to_string(c.softcap) +
                     " window " + std::to_string(c.window) + " pos0 " + std::to_string(pos0));
        const int kv_dim = hs.n_head_kv * hs.head_dim, q_dim = hs.n_head * hs.head_dim;
        const auto kc = random_normal(rng, size_t(n_ctx) * kv_dim, 1.0f);
        const auto vc = random_normal(rng, size_t(n_ctx) * kv_dim, 1.0f);
        const auto q = random_normal(rng, size_t(n_tok * q_dim), 3.0f);
        cuda_ops::AttentionParams p{hs.n_head, hs.n_head_kv, hs.head_dim,
                                    float(1.0 / std::sqrt(double(hs.head_dim)))};
        p.softcap = c.softcap, p.window = c.window;
        std::vector<double> want(q.size());
        for (int t = 0; t < n_tok; ++t)
          for (int h = 0; h < hs.n_head; ++h)
            reference_head(q.data() + t * q_dim + h * hs.head_dim, kc, vc, hs, h, pos0 + t, p.scale,
                           c.softcap, c.window, want.data() + t * q_dim + h * hs.head_dim);
        DeviceBuffer<float> d_k(kc), d_v(vc), d_q(q), out(q.size());
        DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{pos0});
        cuda_ops::attention_prefill(d_q.get(), d_k.get(), d_v.get(), cuda_ops::KvType::F32,
                                    out.get(), n_tok, d_pos.get(), p, nullptr);
        cuda_ops::synchronize();
        const auto got = out.download();
        EXPECT_GUARDS(out);
        EXPECT_NMSE_BELOW(compare(got.data(), want.data(), got.size()), kAttentionNmse);
      }
}

}  // namespace
}  // namespace lockstep::cuda_test

#else
TEST(CudaArchOps, Skipped) {
  GTEST_SKIP() << "skipped: no CUDA device";
}
#endif
