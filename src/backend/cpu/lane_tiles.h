// The 16-lane dot-product tiles behind every reference dot product (dot(), matmul()). Element i
// of a dot product is accumulated in lane i % 16; the lanes are summed by a fixed pairwise tree
// at the end. The order of operations in a lane never depends on the tile shape, on how many
// rows or tokens are computed together or on the thread, so matmul() gives the same bits for any
// batch, thread count or token grouping (at one SimdLevel, see simd_level.h). dot() runs the same
// arithmetic in a function of its own; whether `acc + w * x` becomes one FMA is the compiler's
// choice per function (GCC 13 did not fuse dot()'s loop), so dot() agrees to rounding only.
//
// Internal to src/backend/cpu: include only from files that compile these templates into a
// per-SimdLevel function.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

// The vector type is only ever used inside always-inlined code, so the ABI note GCC gives for
// passing 64-byte vectors does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace lockstep::cpu_ref {

inline constexpr int kLanes = 16;
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));

#define LOCKSTEP_INLINE inline __attribute__((always_inline))

LOCKSTEP_INLINE Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The last n < 16 elements of a row; the unused lanes are 0, and 0 * 0 added to a lane leaves
// it unchanged.
LOCKSTEP_INLINE Lanes load_tail(const float* p, int64_t n) {
  float buf[kLanes] = {};
  std::memcpy(buf, p, size_t(n) * sizeof(float));
  return load_lanes(buf);
}

LOCKSTEP_INLINE float reduce_lanes(const Lanes& v) {
  float a[kLanes];
  std::memcpy(a, &v, sizeof a);
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int k = 0; k < width; ++k) a[k] += a[k + width];
  return a[0];
}

// reduce_lanes of the 16 partial sums stored at p, by the same tree. With SSE (every x86-64) in
// four 4-lane adds and two scalar ones: the generic form, outside the SIMD-level kernels, went
// through the stack at every level of the tree (8 % of the reference's time on SmolLM2's probe).
LOCKSTEP_INLINE float reduce_lane_sums(const float* p) {
#if defined(__SSE2__)
  const __m128 s8a = _mm_add_ps(_mm_loadu_ps(p), _mm_loadu_ps(p + 8));       // lanes 0..3
  const __m128 s8b = _mm_add_ps(_mm_loadu_ps(p + 4), _mm_loadu_ps(p + 12));  // lanes 4..7
  const __m128 s4 = _mm_add_ps(s8a, s8b);
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
#else
  return reduce_lanes(load_lanes(p));
#endif
}

LOCKSTEP_INLINE void store_lanes(float* p, const Lanes& v) {
  std::memcpy(p, &v, sizeof v);
}

// acc[r][t] += lane-wise products of w + r * w_stride and x + t * x_stride over n elements, for
// R rows and T tokens: every loaded chunk of a row is used T times and every chunk of a token R
// times. A dot product may be accumulated in pieces (consecutive calls over consecutive column
// ranges) with the same result as in one call, as long as every piece but the last is a
// multiple of kLanes long.
template <int R, int T>
LOCKSTEP_INLINE void accumulate_tile(Lanes (&acc)[R][T], const float* w, int64_t w_stride,
                                     const float* x, int64_t x_stride, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    Lanes xv[T];
    for (int t = 0; t < T; ++t) xv[t] = load_lanes(x + t * x_stride + i);
    for (int r = 0; r < R; ++r) {
      const Lanes wv = load_lanes(w + r * w_stride + i);
      for (int t = 0; t < T; ++t) acc[r][t] += wv * xv[t];
    }
  }
  if (i < n) {
    Lanes xv[T];
    for (int t = 0; t < T; ++t) xv[t] = load_tail(x + t * x_stride + i, n - i);
    for (int r = 0; r < R; ++r) {
      const Lanes wv = load_tail(w + r * w_stride + i, n - i);
      for (int t = 0; t < T; ++t) acc[r][t] += wv * xv[t];
    }
  }
}

// out[t * out_stride + r] = dot(w + r * w_stride, x + t * x_stride, n) for R rows and T tokens.
template <int R, int T>
LOCKSTEP_INLINE void dot_tile(const float* w, int64_t w_stride, const float* x, int64_t x_stride,
                              int64_t n, float* out, int64_t out_stride) {
  Lanes acc[R][T] = {};
  accumulate_tile<R, T>(acc, w, w_stride, x, x_stride, n);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) out[t * out_stride + r] = reduce_lanes(acc[r][t]);
}

}  // namespace lockstep::cpu_ref
