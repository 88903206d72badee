// vec_dot / matvec against float64 references, for every weight type and every ISA this CPU has,
// on fresh random data.
//
// Tolerances. Let u = 2^-24 (float unit roundoff), a_i the dequantized activation, w_i the
// dequantized weight, and U_i >= |w_i| the magnitude of the parts the kernel adds in float:
// for Q4_1/Q5_1 |d| q + |m|, for Q2_K/Q4_K/Q5_K |d| sc q + |dmin| m (the scale and min terms are
// summed in float separately), for Q4_0/Q5_0 |w_i| + 2 off |d| >= |d| (q + off) (the SIMD
// kernels sum the stored levels q and subtract off * d * sum(a) in float; off = 8 / 16), else
// |w_i| (the kernels sum levels exactly in int32). Then
//   |vec_dot - sum w_i a_i| <= (k + 16) u sum_i |a_i| U_i
// where k is the longest float accumulation chain (blocks of the row for block types, n/4 for
// float types in the scalar path), and 16 covers the per-term roundings: the scale products,
// int->float conversion, the float dequantization of the reference (2 u) and the final reduction.
// Against the float64 dot with the *original* activation x, add the activation quantization
// error sum_i |w_i| e_i. Activations are two int8 terms per element over a block scale
// d = amax/127 (32-blocks for Q8_0, 256 for Q8_K): x ~ d (q1 + q2/254), so e_i = d/508 plus the
// float roundings of the scaling, bounded by 8 u amax. One int8 term (llama.cpp's and this
// project's earlier activation) errs by up to d/2, which OneTermActivationsFailTheBound shows
// these bounds reject.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "quant/fp16.h"
#include "quant/quantize.h"
#include "quant/vec_dot.h"
#include "test_data.h"
#include "util/error.h"

namespace {

using lockstep::Isa;
using lockstep::TensorType;
using namespace lockstep::quant_test;

const TensorType kWeightTypes[] = {
    TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0, TensorType::Q4_1,
    TensorType::Q5_0, TensorType::Q5_1, TensorType::Q8_0, TensorType::Q2_K, TensorType::Q3_K,
    TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

std::vector<Isa> machine_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (lockstep::isa_supported(i)) v.push_back(i);
  return v;
}

struct IsaGuard {
  Isa saved = lockstep::active_isa();
  ~IsaGuard() { lockstep::force_isa(saved); }
};

const char* name(TensorType t) {
  return lockstep::tensor_type_info(t).name;
}
int64_t block_elems(TensorType t) {
  return lockstep::tensor_type_info(t).block_elems;
}
size_t block_bytes(TensorType t) {
  return size_t(lockstep::tensor_type_info(t).block_bytes);
}

void set_half(uint8_t* p, float v) {
  const uint16_t h = lockstep::fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Offsets of the fp16 scale fields (d, and the min/dmin if any) inside a block; -1 if none.
void scale_offsets(TensorType t, int* d_off, int* m_off) {
  *d_off = 0, *m_off = -1;
  switch (t) {
    case TensorType::Q4_1:
    case TensorType::Q5_1:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
      *m_off = 2;
      break;
    case TensorType::Q2_K:
      *d_off = 80, *m_off = 82;
      break;
    case TensorType::Q3_K:
      *d_off = 108;
      break;
    case TensorType::Q6_K:
      *d_off = 208;
      break;
    default:
      break;
  }
}

// Weights of type t: either quantized from random floats (types lockstep can write), or random
// bytes with sane fp16 scales (all types with blocks; covers every bit pattern of the levels and
// sub-block scales, including Q8_0's -128).
std::vector<uint8_t> make_weights(TensorType t, int64_t n, bool random_bytes, Dist dist,
                                  std::mt19937_64& rng) {
  std::vector<uint8_t> w(lockstep::row_bytes(t, n).value());
  if (!random_bytes) {
    const std::vector<float> x = make_data(dist, n, rng);
    lockstep::quantize_row(t, x.data(), w.data(), n);
    return w;
  }
  for (auto& b : w) b = uint8_t(rng());
  int d_off, m_off;
  scale_offsets(t, &d_off, &m_off);
  std::uniform_real_distribution<float> u(0.5f, 2.f);
  for (size_t b = 0; b < w.size(); b += block_bytes(t)) {
    const float scale = t == TensorType::Q4_1 || t == TensorType::Q5_1 || t == TensorType::Q4_0 ||
                                t == TensorType::Q5_0 || t == TensorType::Q8_0
                            ? 0.01f
                            : 0.001f;
    set_half(&w[b + size_t(d_off)], (rng() & 1 ? -1 : 1) * scale * u(rng));
    if (m_off >= 0) set_half(&w[b + size_t(m_off)], (rng() & 1 ? -1 : 1) * scale * u(rng));
  }
  return w;
}

// U_i of the header comment.
std::vector<float> magnitudes(TensorType t, std::vector<uint8_t> w, int64_t n) {
  int d_off, m_off;
  scale_offsets(t, &d_off, &m_off);
  const bool k_min = t == TensorType::Q2_K || t == TensorType::Q4_K || t == TensorType::Q5_K;
  const bool plain_min = t == TensorType::Q4_1 || t == TensorType::Q5_1;
  if (k_min || plain_min) {
    for (size_t b = 0; b < w.size(); b += block_bytes(t)) {
      w[b + size_t(d_off) + 1] &= 0x7f;                 // |d|
      if (plain_min) w[b + size_t(m_off) + 1] &= 0x7f;  // + |m|
      if (k_min) w[b + size_t(m_off) + 1] |= 0x80;      // - (-|dmin|) m
    }
  }
  std::vector<float> u(static_cast<size_t>(n));
  lockstep::dequantize_row(t, w.data(), u.data(), n);
  for (auto& v : u) v = std::fabs(v);
  if (t == TensorType::Q4_0 || t == TensorType::Q5_0) {
    const float off = t == TensorType::Q4_0 ? 8.f : 16.f;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, &w[size_t(i / 32) * block_bytes(t)], 2);
      u[size_t(i)] += 2 * off * std::fabs(lockstep::fp16_to_fp32(h));
    }
  }
  return u;
}

// Per-element bound of |x_i - dequantized activation_i|.
std::vector<double> activation_error_bound(TensorType act, const std::vector<float>& x) {
  std::vector<double> e(x.size(), 0.0);
  if (act == TensorType::F32) return e;
  const size_t blk = act == TensorType::Q8_0 ? 32 : 256;
  for (size_t b = 0; b < x.size(); b += blk) {
    double amax = 0;
    for (size_t i = b; i < b + blk; ++i) amax = std::max(amax, std::fabs(double(x[i])));
    const double bound = amax / 127 / 508 + 8 * 0x1p-24 * amax;
    for (size_t i = b; i < b + blk; ++i) e[i] = bound;
  }
  return e;
}

struct Check {
  double got, ref_deq, tol_deq, ref_orig, tol_orig;
};

Check run_one(TensorType t, const std::vector<uint8_t>& w, const std::vector<float>& x, int64_t n) {
  const TensorType act_t = lockstep::activation_type_for(t);
  std::vector<uint8_t> act(lockstep::activation_row_bytes(t, n));
  lockstep::quantize_activation(t, x.data(), act.data(), n);
  std::vector<double> xa(static_cast<size_t>(n));
  std::vector<float> wf(static_cast<size_t>(n));
  lockstep::dequantize_activation(t, act.data(), xa.data(), n);
  lockstep::dequantize_row(t, w.data(), wf.data(), n);
  const std::vector<float> U = magnitudes(t, w, n);
  const std::vector<double> ea = activation_error_bound(act_t, x);
  double ref = 0, ref_orig = 0, M = 0, E = 0;
  for (int64_t i = 0; i < n; ++i) {
    ref += double(wf[i]) * double(xa[i]);
    ref_orig += double(wf[i]) * double(x[i]);
    M += std::fabs(double(xa[i])) * U[i];
    E += std::fabs(double(wf[i])) * ea[i];
  }
  const double chain = block_elems(t) == 1 ? double(n) / 4 : double(n / block_elems(t));
  const double tol = (chain + 16) * 0x1p-24 * M;
  const double got = lockstep::vec_dot(t, w.data(), act.data(), n);
  return {got, ref, tol, ref_orig, tol + E};
}

class VecDot : public ::testing::TestWithParam<TensorType> {};

TEST_P(VecDot, MatchesFloat64ReferenceOnEveryIsa) {
  const TensorType t = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  IsaGuard guard;
  std::vector<int64_t> lengths = {256, 512, 4864, 8960};
  if (block_elems(t) <= 32) lengths.insert(lengths.end(), {32, 96});
  if (block_elems(t) == 1) lengths.insert(lengths.end(), {1, 37});
  const bool quantizable = lockstep::tensor_type_info(t).can_quantize;
  int n_checks = 0;
  for (int64_t n : lengths) {
    for (int variant = 0; variant < 4; ++variant) {
      const bool random_bytes = !quantizable || (variant == 3 && block_elems(t) > 1);
      const Dist wdist = kAllDists[rng() % std::size(kAllDists)];
      const Dist xdist = variant == 0 ? Dist::Outliers : kAllDists[rng() % std::size(kAllDists)];
      const std::vector<uint8_t> w = make_weights(t, n, random_bytes, wdist, rng);
      const std::vector<float> x = make_data(xdist, n, rng);
      for (Isa isa : machine_isas()) {
        lockstep::force_isa(isa);
        SCOPED_TRACE(std::string(lockstep::isa_name(isa)) + " n=" + std::to_string(n) +
                     " weights " + (random_bytes ? "random bytes" : dist_name(wdist)) +
                     " activation " + dist_name(xdist));
        const Check c = run_one(t, w, x, n);
        ASSERT_TRUE(std::isfinite(c.got));
        EXPECT_LE(std::fabs(c.got - c.ref_deq), c.tol_deq)
            << "got " << c.got << " ref " << c.ref_deq;
        EXPECT_LE(std::fabs(c.got - c.ref_orig), c.tol_orig)
            << "got " << c.got << " ref (float activation) " << c.ref_orig;
        ++n_checks;
      }
    }
  }
  EXPECT_GT(n_checks, 0);
}

// matvec is vec_dot row by row (same kernel, so bit-identical), with a row stride.
TEST_P(VecDot, MatvecEqualsRowByRowDots) {
  const TensorType t = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  IsaGuard guard;
  const int64_t n = 512, rows = 7;
  const size_t rb = lockstep::row_bytes(t, n).value(), stride = rb + 64;
  std::vector<uint8_t> w(stride * rows);
  for (int64_t r = 0; r < rows; ++r) {
    auto row = make_weights(t, n, !lockstep::tensor_type_info(t).can_quantize, Dist::Normal, rng);
    std::memcpy(&w[size_t(r) * stride], row.data(), rb);
  }
  const std::vector<float> x = make_data(Dist::Normal, n, rng);
  std::vector<uint8_t> act(lockstep::activation_row_bytes(t, n));
  lockstep::quantize_activation(t, x.data(), act.data(), n);
  for (Isa isa : machine_isas()) {
    lockstep::force_isa(isa);
    std::vector<float> y(rows, NAN);
    lockstep::matvec(t, w.data(), stride, rows, act.data(), n, y.data());
    for (int64_t r = 0; r < rows; ++r) {
      const float d = lockstep::vec_dot(t, &w[size_t(r) * stride], act.data(), n);
      ASSERT_TRUE(std::isfinite(y[r]));
      EXPECT_EQ(std::memcmp(&y[r], &d, 4), 0) << lockstep::isa_name(isa) << " row " << r;
    }
  }
}

std::string type_param_name(const ::testing::TestParamInfo<TensorType>& i) {
  return name(i.param);
}
INSTANTIATE_TEST_SUITE_P(Quant, VecDot, ::testing::ValuesIn(kWeightTypes), type_param_name);

TEST(VecDotApi, ActivationTypes) {
  EXPECT_EQ(lockstep::activation_type_for(TensorType::Q4_K), TensorType::Q8_K);
  EXPECT_EQ(lockstep::activation_type_for(TensorType::Q6_K), TensorType::Q8_K);
  EXPECT_EQ(lockstep::activation_type_for(TensorType::Q5_0), TensorType::Q8_0);
  EXPECT_EQ(lockstep::activation_type_for(TensorType::BF16), TensorType::F32);
  // Q8_K blocks padded to 32 bytes, then per block 256 second terms and 16 int16 sums
  EXPECT_EQ(lockstep::activation_row_bytes(TensorType::Q4_K, 512), 608u + 2 * 288);
  // int16 A[32] per block, then float e[nb] and float s[nb]
  EXPECT_EQ(lockstep::activation_row_bytes(TensorType::Q8_0, 64), 2u * 64 + 2 * 8);
  EXPECT_EQ(lockstep::activation_row_bytes(TensorType::F16, 10), 40u);
  EXPECT_TRUE(lockstep::isa_supported(Isa::Scalar));
  EXPECT_TRUE(lockstep::isa_supported(lockstep::best_isa()));
}

TEST(VecDotApi, UnsupportedTypeAndBadLengthThrow) {
  std::vector<uint8_t> buf(4096);
  try {
    lockstep::vec_dot(TensorType(23), buf.data(), buf.data(), 256);
    ADD_FAILURE() << "no exception";
  } catch (const lockstep::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("IQ4_XS"), std::string::npos) << e.what();
  }
  EXPECT_THROW(lockstep::activation_type_for(TensorType::Q8_K), lockstep::InputError);
  EXPECT_THROW(lockstep::activation_row_bytes(TensorType::Q4_K, 100), lockstep::InputError);
  EXPECT_THROW(lockstep::vec_dot(TensorType::Q8_0, buf.data(), buf.data(), 33),
               lockstep::InputError);
}

}  // namespace

namespace {

// The two-term layouts: for Q8_0, int16 A = 254 q1 + q2 per element, then the exact unit
// e = d / 254 and the block sums; for Q8_K, ggml blocks (first term, its sums) then the second
// term and its sums. Both terms within their bounds of the exact definition.
TEST(VecDotApi, TwoTermActivationLayouts) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (TensorType w : {TensorType::Q5_0, TensorType::Q4_K}) {
    const bool k = w == TensorType::Q4_K;
    const int64_t blk = k ? 256 : 32, nb = 3, n = blk * nb;
    const std::vector<float> x = make_data(Dist::BlockScales, n, rng);
    std::vector<uint8_t> act(lockstep::activation_row_bytes(w, n));
    lockstep::quantize_activation(w, x.data(), act.data(), n);
    const size_t t2_base = (size_t(nb) * 292 + 31) / 32 * 32;
    for (int64_t i = 0; i < nb; ++i) {
      double amax = 0;
      for (int64_t j = 0; j < blk; ++j) amax = std::max(amax, std::fabs(double(x[i * blk + j])));
      const double d = amax / 127;
      std::vector<int> q1(static_cast<size_t>(blk)), q2(static_cast<size_t>(blk));
      double scale;  // the unit of q1
      if (k) {
        const uint8_t* b = &act[size_t(i) * 292];
        float fd;
        std::memcpy(&fd, b, 4);
        scale = fd;
        for (int64_t j = 0; j < blk; ++j) {
          q1[size_t(j)] = int8_t(b[4 + j]);
          q2[size_t(j)] = int8_t(act[t2_base + size_t(i) * 288 + size_t(j)]);
        }
        for (int g = 0; g < 16; ++g) {
          int s1 = 0, s2 = 0;
          for (int l = 0; l < 16; ++l) {
            s1 += q1[size_t(16 * g + l)];
            s2 += q2[size_t(16 * g + l)];
          }
          int16_t b1, b2;
          std::memcpy(&b1, b + 4 + 256 + 2 * g, 2);
          std::memcpy(&b2, &act[t2_base + size_t(i) * 288 + 256 + 2 * size_t(g)], 2);
          EXPECT_EQ(b1, s1);
          EXPECT_EQ(b2, s2);
        }
      } else {
        float e, s;
        std::memcpy(&e, &act[size_t(nb) * 64 + 4 * size_t(i)], 4);
        std::memcpy(&s, &act[size_t(nb) * 64 + 4 * size_t(nb + i)], 4);
        scale = double(e) * 254;
        double sum = 0;
        for (int64_t j = 0; j < blk; ++j) {
          int16_t A;
          std::memcpy(&A, &act[size_t(i) * 64 + 2 * size_t(j)], 2);
          sum += A;
          // A = 254 q1 + q2 with |q1|, |q2| <= 127 (a split with |q2| = 127 is not unique, so
          // only the combined value is checked for this layout)
          ASSERT_LE(std::abs(int(A)), 254 * 127 + 127);
          q1[size_t(j)] = int(std::lround(A / 254.0));
          q2[size_t(j)] = A - 254 * q1[size_t(j)];
        }
        EXPECT_NEAR(s, double(e) * sum, std::fabs(double(e) * sum) * 0x1p-23 + 1e-30);
      }
      EXPECT_NEAR(scale, d, d * 0x1p-22);
      for (int64_t j = 0; j < blk; ++j) {
        const double xv = x[i * blk + j];
        const int a1 = q1[size_t(j)], a2 = q2[size_t(j)];
        ASSERT_LE(std::abs(a1), 127);
        ASSERT_LE(std::abs(a2), 127);
        if (k) {  // the first term alone: round to nearest (plus the scaling's rounding)
          EXPECT_LE(std::fabs(xv - d * a1), d * (0.5 + 3e-5)) << "block " << i << " j " << j;
        }
        EXPECT_LE(std::fabs(xv - d * (a1 + a2 / 254.0)), d / 508 + 8 * 0x1p-24 * amax)
            << "block " << i << " j " << j;
      }
    }
  }
}

// A value that is not finite reaches the products as NaN, whatever the kernel.
TEST(VecDotApi, NonFiniteActivationGivesNaN) {
  IsaGuard guard;
  for (TensorType t :
       {TensorType::Q5_0, TensorType::Q8_0, TensorType::Q4_1, TensorType::Q4_K, TensorType::Q6_K}) {
    const int64_t n = 512;
    std::mt19937_64 rng(fresh_seed());
    const std::vector<uint8_t> w = make_weights(t, n, false, Dist::Normal, rng);
    for (float bad : {NAN, INFINITY}) {
      std::vector<float> x = make_data(Dist::Normal, n, rng);
      x[300] = bad;
      std::vector<uint8_t> act(lockstep::activation_row_bytes(t, n));
      lockstep::quantize_activation(t, x.data(), act.data(), n);
      for (Isa isa : machine_isas()) {
        lockstep::force_isa(isa);
        EXPECT_TRUE(std::isnan(lockstep::vec_dot(t, w.data(), act.data(), n)))
            << name(t) << " " << lockstep::isa_name(isa);
      }
    }
  }
}

// The bounds above are tight enough to tell the two-term activations from one int8 term: with
// the same weights, one term (quantize_row to Q8_0 / Q8_K, as llama.cpp quantizes activations)
// misses the float64 dot by more than the two-term tolerance in most rows.
TEST(VecDotApi, OneTermActivationsFailTheBound) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (TensorType t : {TensorType::Q5_0, TensorType::Q4_K}) {
    const TensorType act_t = lockstep::activation_type_for(t);
    int outside = 0, trials = 0;
    for (int64_t n : {256, 512}) {
      for (int trial = 0; trial < 20; ++trial, ++trials) {
        const std::vector<uint8_t> w = make_weights(t, n, false, Dist::Normal, rng);
        const std::vector<float> x = make_data(Dist::Normal, n, rng);
        const Check two = run_one(t, w, x, n);
        EXPECT_LE(std::fabs(two.got - two.ref_orig), two.tol_orig);
        std::vector<uint8_t> one(lockstep::row_bytes(act_t, n).value());
        lockstep::quantize_row(act_t, x.data(), one.data(), n);
        std::vector<float> xo(static_cast<size_t>(n)), wf(static_cast<size_t>(n));
        lockstep::dequantize_row(act_t, one.data(), xo.data(), n);
        lockstep::dequantize_row(t, w.data(), wf.data(), n);
        double one_dot = 0;
        for (int64_t i = 0; i < n; ++i) one_dot += double(wf[i]) * double(xo[i]);
        if (std::fabs(one_dot - two.ref_orig) > two.tol_orig) ++outside;
      }
    }
    // About 90 % expected (the one-term error is ~10x the bound's size at these lengths).
    EXPECT_GE(outside, trials * 7 / 10) << name(t) << ": " << outside << " of " << trials;
  }
}

}  // namespace
