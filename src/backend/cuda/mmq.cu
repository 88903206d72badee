// Quantized matrix products for small batches (continuous batching's decode step, 2 to a few
// hundred tokens): Y[t][r] = sum_k W[r][k] X[t][k] with W in its GGUF block format (Q4_0, Q5_0,
// Q8_0, Q4_K, Q6_K) and X quantized once per product to int8, on the int8 tensor cores.
//
// Input. mmq_quantize_kernel rounds each token's input (RMS-normalised first for the fused
// pre-norm) per group of 32 to the two-term form of the decode matvecs (matvec_quant.cu):
// x ~ dx * (xq + xq2 / 254), dx = max|x| / 127, an error of at most dx/508 per element; a group
// holding a NaN or infinity gets dx = NaN, so that token's outputs are NaN and no other token's.
// The two terms are stored in the order the mma's B operand wants them: the 64-byte record of
// (token, group) gives lane slot s (0..3) 16 bytes {xq[4s..4s+3], xq[16+4s..], xq2[4s..],
// xq2[16+4s..]}, one 16-byte load per lane and token tile. dx and the float sums xs (Q4_K's min
// term) are stored group-major, [group][token].
//
// Product. A thread block of kWarps warps owns 16 weight rows and up to 64 tokens (kTiles tiles
// of 8). Its warps split the row's K: warp w takes units w, w + kWarps, ... (a unit is a 32-wide
// block, or a 256-wide super-block for the k-quants), each unit's weight bytes are read from
// global memory once per thread block and decoded straight into mma A fragments (int8, signed:
// q - 8, q - 16, q - 32 are formed per byte; Q4_K keeps its unsigned 0..15 and subtracts its min
// term separately). Per group of 32 a warp issues, per token tile, one m16n8k32 mma per input
// term (Q6_K, whose scales cover 16 elements, two m16n8k16 per term), then folds the int32
// results with the group's float scales: acc += (w_scale * dx / 254) * (254 * s1 + s2), exact in
// int32 (|254 s1 + s2| < 2^27); Q4_K adds -dmin * m * xs. The warps' partial sums meet in shared
// memory in a fixed tree, and warp 0 applies the epilogue (bias, residual accumulate, or
// silu(gate) * up for the fused gate/up pair, whose two matrices share the input fragments).
// Larger batches run several token tiles; the tile index varies fastest over the grid, so the
// thread blocks reading the same weight rows run together and the second read hits L2.
//
// Batch invariance within this route: a token's index alone fixes its tile and lane, and a
// (row, token) result is the same float operations in the same order whatever the batch size
// (the mma sums are exact integers; the float steps are explicit _rn intrinsics, so contraction
// cannot differ; lanes of tokens past the batch compute a copy of the last token, never stored),
// so a token's row is bit for bit the same at every B (mmq_gpu_test.cpp compares B = 2 .. 128).
// It differs in the last bits from the batched matvecs' row (another summation order).
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/quant_blocks.cuh"

#include <algorithm>

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

constexpr int kWarps = 8;  // split of K inside a thread block
constexpr int kTiles = 8;  // token tiles of 8 per thread block: 64 tokens
constexpr int kRows = 16;  // weight rows per thread block (the mma's M)
constexpr int kMaxJobs = 3;
constexpr int kQuantThreads = 256;
constexpr float kInv254 = 1.0f / 254.0f;

// ---- weight formats as mma A fragments ------------------------------------------------------
// frag(unit, gi, s, lo, hi, s_lo, s_hi, mn): the weights of group gi (32 elements) of the unit at
// `unit`, elements 4s..4s+3 (lo) and 16+4s..16+4s+3 (hi) as signed bytes, so that the group's
// value is s_lo * q (elements < 16) or s_hi * q (>= 16), minus mn * (its input's sum) when kMin.
// kK16: s_lo and s_hi differ (the mma runs in two halves of 16).

struct MmqQ4_0 {  // half d; u8 qs[16]; x = (q - 8) * d
  static constexpr int kBytes = 18, kGroups = 1;
  static constexpr bool kK16 = false, kMin = false;
  __device__ static void frag(const uint8_t* u, int, int s, uint32_t& lo, uint32_t& hi, float& s_lo,
                              float& s_hi, float& mn) {
    const uint32_t w = load_u32_a2(u + 2 + 4 * s);
    lo = __vsub4(w & 0x0F0F0F0Fu, 0x08080808u);
    hi = __vsub4((w >> 4) & 0x0F0F0F0Fu, 0x08080808u);
    s_lo = s_hi = load_half(u), mn = 0.0f;
  }
};

struct MmqQ5_0 {  // half d; u8 qh[4]; u8 qs[16]; x = (q - 16) * d
  static constexpr int kBytes = 22, kGroups = 1;
  static constexpr bool kK16 = false, kMin = false;
  __device__ static void frag(const uint8_t* u, int, int s, uint32_t& lo, uint32_t& hi, float& s_lo,
                              float& s_hi, float& mn) {
    const uint32_t qh = load_u32_a2(u + 2), w = load_u32_a2(u + 6 + 4 * s);
    uint32_t h_lo, h_hi;
    q5_high_bits(qh, s, h_lo, h_hi);
    lo = __vsub4((w & 0x0F0F0F0Fu) | h_lo, 0x10101010u);
    hi = __vsub4(((w >> 4) & 0x0F0F0F0Fu) | h_hi, 0x10101010u);
    s_lo = s_hi = load_half(u), mn = 0.0f;
  }
};

struct MmqQ8_0 {  // half d; i8 qs[32]; x = q * d
  static constexpr int kBytes = 34, kGroups = 1;
  static constexpr bool kK16 = false, kMin = false;
  __device__ static void frag(const uint8_t* u, int, int s, uint32_t& lo, uint32_t& hi, float& s_lo,
                              float& s_hi, float& mn) {
    lo = load_u32_a2(u + 2 + 4 * s), hi = load_u32_a2(u + 18 + 4 * s);
    s_lo = s_hi = load_half(u), mn = 0.0f;
  }
};

// Q4_K (layout in quant_blocks.cuh): group gi = sub-block gi, the low (gi even) or high nibbles
// of qs[32(gi/2) + l]; x = d * sc * q - dmin * m. Rows of 144-byte blocks are 16-byte aligned.
struct MmqQ4_K {
  static constexpr int kBytes = 144, kGroups = 8;
  static constexpr bool kK16 = false, kMin = true;
  __device__ static void frag(const uint8_t* u, int gi, int s, uint32_t& lo, uint32_t& hi,
                              float& s_lo, float& s_hi, float& mn) {
    const uint4 hd = __ldg(reinterpret_cast<const uint4*>(u));
    const uint8_t* qs = u + 16 + 32 * (gi >> 1);
    const int sh = 4 * (gi & 1);
    lo = (__ldg(reinterpret_cast<const uint32_t*>(qs + 4 * s)) >> sh) & 0x0F0F0F0Fu;
    hi = (__ldg(reinterpret_cast<const uint32_t*>(qs + 16 + 4 * s)) >> sh) & 0x0F0F0F0Fu;
    float sc, m;
    k4_scale_min(hd.y, hd.z, hd.w, gi, sc, m);
    s_lo = s_hi = half_lo(hd.x) * sc;
    mn = half_hi(hd.x) * m;
  }
};

// Q6_K (layout in quant_blocks.cuh): group gi = 4n + k holds elements 128n + 32k + l; the low 4
// bits of element l come from ql[64n + 32(k&1) + l] (nibble k/2), the high 2 from qh[32n + l]
// >> 2k, scale scales[8n + 2k + l/16]: two scales per group, hence kK16.
struct MmqQ6_K {
  static constexpr int kBytes = 210, kGroups = 8;
  static constexpr bool kK16 = true, kMin = false;
  __device__ static void frag(const uint8_t* u, int gi, int s, uint32_t& lo, uint32_t& hi,
                              float& s_lo, float& s_hi, float& mn) {
    const int n = gi >> 2, k = gi & 3, sh = 4 * (k >> 1);
    const uint8_t* ql = u + 64 * n + 32 * (k & 1) + 4 * s;
    const uint8_t* qh = u + 128 + 32 * n + 4 * s;
    const uint32_t l0 = (load_u32_a2(ql) >> sh) & 0x0F0F0F0Fu;
    const uint32_t l1 = (load_u32_a2(ql + 16) >> sh) & 0x0F0F0F0Fu;
    const uint32_t h0 = ((load_u32_a2(qh) >> (2 * k)) & 0x03030303u) << 4;
    const uint32_t h1 = ((load_u32_a2(qh + 16) >> (2 * k)) & 0x03030303u) << 4;
    lo = __vsub4(l0 | h0, 0x20202020u);
    hi = __vsub4(l1 | h1, 0x20202020u);
    const float d = load_half(u + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(u + 192) + 8 * n + 2 * k;
    s_lo = d * float(sc[0]), s_hi = d * float(sc[1]), mn = 0.0f;
  }
};

// ---- tensor-core primitives (PTX ISA, "Matrix fragments for mma.m16n8k32/k16", .s8) --------
// Lane = 4 g + s. A (16 x 32, row-major): a0 = row g, k 4s..4s+3; a1 = row g+8, same k;
// a2 = row g, k 16+4s..; a3 = row g+8, k 16+4s... B (32 x 8): b0 = k 4s..4s+3 of column g,
// b1 = k 16+4s... C (16 x 8): c0, c1 = row g, columns 2s, 2s+1; c2, c3 = row g+8, the same.
// m16n8k16 takes a0, a1 and b0 of the same shapes over k 0..15.
__device__ __forceinline__ void mma_k32(const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                        int (&c)[4]) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
}

__device__ __forceinline__ void mma_k16(uint32_t a0, uint32_t a1, uint32_t b0, int (&c)[4]) {
  asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
      "{%7,%7,%7,%7};"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a0), "r"(a1), "r"(b0), "r"(0));
}

__device__ __forceinline__ float g_silu(float g) {
  return g / (1.0f + expf(-g));
}

// One group of 32 weights (the A fragment a with its scales) times one token tile's input
// record b, into that tile's accumulators, as both kernels take it: one m16n8k32 mma per input
// term (Q6_K, whose scales cover 16 elements, two m16n8k16 per term), then acc += (w_scale * dx /
// 254) * (254 * s1 + s2) in float (the int32 combination is exact); Q4_K adds -dmin * m * xs.
// dx254: the tile's two tokens' dx / 254; xsum their group sums (read only with kMin).
template <class F>
__device__ __forceinline__ void group_into(const uint32_t (&a)[4], const int4 b,
                                           const float (&s_lo)[2], const float (&s_hi)[2],
                                           const float (&mn)[2], const float (&dx254)[2],
                                           const float (&xsum)[2], float (&acc)[4]) {
  if constexpr (!F::kK16) {
    int c1[4], c2[4];
    mma_k32(a, uint32_t(b.x), uint32_t(b.y), c1);
    mma_k32(a, uint32_t(b.z), uint32_t(b.w), c2);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float v = float(254 * c1[e] + c2[e]);
      acc[e] = __fmaf_rn(__fmul_rn(s_lo[e >> 1], dx254[e & 1]), v, acc[e]);
      if constexpr (F::kMin) acc[e] = __fmaf_rn(-mn[e >> 1], xsum[e & 1], acc[e]);
    }
  } else {
    int c1[4], c2[4], c3[4], c4[4];
    mma_k16(a[0], a[1], uint32_t(b.x), c1);
    mma_k16(a[0], a[1], uint32_t(b.z), c2);
    mma_k16(a[2], a[3], uint32_t(b.y), c3);
    mma_k16(a[2], a[3], uint32_t(b.w), c4);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float v = __fmaf_rn(s_lo[e >> 1], float(254 * c1[e] + c2[e]),
                                __fmul_rn(s_hi[e >> 1], float(254 * c3[e] + c4[e])));
      acc[e] = __fmaf_rn(dx254[e & 1], v, acc[e]);
    }
  }
}

// The job of this thread block: thread blocks [first_cta[j], first_cta[j + 1]) do job j.
__device__ __forceinline__ int job_of_block(const int64_t (&first_cta)[kMaxJobs + 1], int n_jobs) {
  int j = 0;
#pragma unroll
  for (int k = 1; k < kMaxJobs; ++k)
    if (k < n_jobs && int64_t(blockIdx.x) >= first_cta[k]) j = k;
  return j;
}

// ---- input quantization -----------------------------------------------------------------------

// Token blockIdx.y's input, groups g = 8 blockIdx.x + warp, stepping by 8 gridDim.x; lane i holds
// element i of its group. The rounding is quantize_act_kernel's (matvec_quant.cu); only the
// layout differs (see the top of the file). With NORM the grid has one block per token, which
// first computes the token's RMS scale itself (the fused pre-norm: one launch per product).
template <bool NORM>
__global__ void __launch_bounds__(kQuantThreads)
    mmq_quantize_kernel(const float* __restrict__ x, int64_t x_stride,
                        const float* __restrict__ norm_w, float eps, int64_t n_groups, int n_tok,
                        int8_t* __restrict__ q, float* __restrict__ dx, float* __restrict__ xs) {
  constexpr int kWarpsQ = kQuantThreads / 32;
  pdl_wait();
  const int tok = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  x += int64_t(tok) * x_stride;
  float scale = 1.0f;
  if constexpr (NORM) {
    __shared__ float partial[kWarpsQ];
    const int64_t n = n_groups * 32;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += kQuantThreads) ss = fmaf(x[i], x[i], ss);
    ss = warp_sum(ss);
    if (lane == 0) partial[warp] = ss;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarpsQ; ++w) total += partial[w];
    scale = 1.0f / sqrtf(total / float(n) + eps);
  }
  for (int64_t g = int64_t(blockIdx.x) * kWarpsQ + warp; g < n_groups;
       g += int64_t(gridDim.x) * kWarpsQ) {
    float v = x[g * 32 + lane];
    if constexpr (NORM) v = (v * scale) * __ldg(norm_w + g * 32 + lane);
    const float amax = warp_max(fmaxf(0.0f, fabsf(v)));  // a NaN counts as 0
    const float sum = warp_sum(v);
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    const float scaled = v * inv;
    const int q1 = max(-127, min(127, __float2int_rn(scaled)));
    const int q2 = max(-127, min(127, __float2int_rn((scaled - float(q1)) * 254.0f)));
    int8_t* rec = q + (int64_t(tok) * n_groups + g) * 64;
    const int slot = (lane & 15) >> 2, half = lane >> 4, byte = lane & 3;
    rec[16 * slot + 4 * half + byte] = int8_t(q1);
    rec[16 * slot + 8 + 4 * half + byte] = int8_t(q2);
    if (lane == 0) {
      dx[g * n_tok + tok] =
          isfinite(sum) && isfinite(amax) ? amax / 127.0f : __int_as_float(0x7FC00000);
      xs[g * n_tok + tok] = sum;
    }
  }
}

// ---- the product ----------------------------------------------------------------------------

struct Job {
  const uint8_t* w = nullptr;
  const uint8_t* w_up = nullptr;  // SwiGLU only
  float* y = nullptr;             // n_tok rows of `rows` floats
  const float* bias = nullptr;
  int64_t rows = 0;
};

struct Args {
  Job job[kMaxJobs];
  int64_t first_cta[kMaxJobs + 1] = {};  // thread blocks [first_cta[j], first_cta[j+1]) do job j
  int n_jobs = 0;
  int64_t n_units = 0, row_bytes = 0, n_groups = 0;
  int n_tok = 0, tok_tiles = 0;  // token tiles of kTiles * 8 tokens
  const int4* q = nullptr;       // the input records
  const float* dx = nullptr;     // [group][token]
  const float* xs = nullptr;
  bool accumulate = false;
};

// Two thread blocks per SM (16 warps to hide the loads' latency) need at most 128 registers; the
// gate/up pair, with twice the accumulators, runs one.
template <class F, bool SWIGLU>
__global__ void __launch_bounds__(kWarps * 32, SWIGLU ? 1 : 2) mmq_kernel(const Args args) {
  constexpr int NMAT = SWIGLU ? 2 : 1;
  constexpr int NACC = NMAT * kTiles * 4;
  const int j = job_of_block(args.first_cta, args.n_jobs);
  const Job& job = args.job[j];
  const int64_t local = int64_t(blockIdx.x) - args.first_cta[j];
  const int tok0 = int(local % args.tok_tiles) * kTiles * 8;
  const int64_t row0 = local / args.tok_tiles * kRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, s = lane & 3;
  const int n_tiles = min(kTiles, (args.n_tok - tok0 + 7) / 8);
  const int n_tok = args.n_tok;

  const uint8_t* wr[NMAT][2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = min(row0 + g + 8 * r, job.rows - 1);  // a duplicate row, never stored
    wr[0][r] = job.w + row * args.row_bytes;
    if constexpr (SWIGLU) wr[1][r] = job.w_up + row * args.row_bytes;
  }
  pdl_wait();

  float acc[NMAT][kTiles][4];
#pragma unroll
  for (int m = 0; m < NMAT; ++m)
#pragma unroll
    for (int i = 0; i < kTiles; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][i][e] = 0.0f;

  // Several 32-wide units in flight per warp (their loads overlap); a super-block has 8 groups.
  constexpr int kUnroll = F::kGroups == 1 ? 4 : 1;
#pragma unroll kUnroll
  for (int64_t u = warp; u < args.n_units; u += kWarps) {
#pragma unroll
    for (int gi = 0; gi < F::kGroups; ++gi) {
      const int64_t G = u * F::kGroups + gi;
      uint32_t a[NMAT][4];
      float s_lo[NMAT][2], s_hi[NMAT][2], mn[NMAT][2];
#pragma unroll
      for (int m = 0; m < NMAT; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          F::frag(wr[m][r] + u * F::kBytes, gi, s, a[m][r], a[m][2 + r], s_lo[m][r], s_hi[m][r],
                  mn[m][r]);
#pragma unroll
      for (int i = 0; i < kTiles; ++i) {
        if (i >= n_tiles) break;
        // Tokens past the batch read the last token's record (never stored).
        const int tb = min(tok0 + 8 * i + g, n_tok - 1);
        const int4 b = __ldg(args.q + (int64_t(tb) * args.n_groups + G) * 4 + s);
        float dxs[2], xsum[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int tc = min(tok0 + 8 * i + 2 * s + c, n_tok - 1);
          dxs[c] = __fmul_rn(__ldg(args.dx + G * n_tok + tc), kInv254);
          if constexpr (F::kMin) xsum[c] = __ldg(args.xs + G * n_tok + tc);
        }
#pragma unroll
        for (int m = 0; m < NMAT; ++m)
          group_into<F>(a[m], b, s_lo[m], s_hi[m], mn[m], dxs, xsum, acc[m][i]);
      }
    }
  }

  // The warps' sums meet in a fixed tree (the same order for every launch): warps [h, 2h) hand
  // theirs to warps [0, h).
  __shared__ float red[kWarps / 2][NACC][32];
  float* flat = &acc[0][0][0];
#pragma unroll
  for (int h = kWarps / 2; h >= 1; h >>= 1) {
    if (warp >= h && warp < 2 * h)
#pragma unroll
      for (int i = 0; i < NACC; ++i) red[warp - h][i][lane] = flat[i];
    __syncthreads();
    if (warp < h)
#pragma unroll
      for (int i = 0; i < NACC; ++i) flat[i] = __fadd_rn(flat[i], red[warp][i][lane]);
    __syncthreads();
  }
  if (warp != 0) return;
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    if (i >= n_tiles) break;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = row0 + g + 8 * (e >> 1);
      const int tok = tok0 + 8 * i + 2 * s + (e & 1);
      if (row >= job.rows || tok >= n_tok) continue;
      float* y = job.y + int64_t(tok) * job.rows + row;
      if constexpr (SWIGLU) {
        *y = g_silu(acc[0][i][e]) * acc[1][i][e];
      } else {
        float v = acc[0][i][e];
        if (job.bias) v += job.bias[row];
        if (args.accumulate) v += *y;
        *y = v;
      }
    }
  }
}

// ---- the tiled product ------------------------------------------------------------------------
// mmq_kernel above reads a token tile's input records once per 16 weight rows: at 64 tokens that
// is ~8 bytes of input through L2 per weight byte read from memory. Here a thread block of
// kTiledWarps warps owns BM = 16 * kTiledWarps * MT rows (MT m16 fragments per warp: 2, or 1 for
// the gate/up pair, whose two matrices double the accumulators) and 64 tokens, and its warps
// share the input: per chunk of kChunkGroups groups (256 elements), the records, dx and xs of
// the 64 tokens are copied into shared memory with cp.async, the next chunk's copy in flight
// while the current one is used (two buffers). Each warp runs its rows over the whole chunk
// range in order, its weights straight from global memory into A fragments (as mmq_kernel, the
// next chunk's bytes prefetched into L2), so the input crosses L2 once per BM rows.
//
// Few row tiles (the 7B's 3584-row products: 28 tiles) would leave most SMs idle, so K is split
// into S ranges of whole chunks, S = ceil(kTargetTiles / row tiles) capped at half the chunks,
// a function of the matrix shape alone. Each range's block writes its partial sums to the
// scratch (act.mmq_part), and the block that arrives last at a tile's counter (act.mmq_count)
// sums the S partials in order 0..S-1 and applies the epilogue, then resets the counter for the
// next launch. A (row, token) result is thus the same float operations in the same order at
// every batch size: sequential groups within a range, ranges added in order (batch invariance
// as for mmq_kernel; the bits differ from mmq_kernel's, whose warps split K otherwise).
constexpr int kTiledWarps = 4;
constexpr int kChunkGroups = 8;
constexpr int64_t kTargetTiles = 264;  // 2 thread blocks per SM of a 132-SM H100 / H200
constexpr int kTiledTok = 64;
// Shared memory per buffer: the records (64 bytes a token and group), dx and xs.
constexpr int kChunkRecordInts = kChunkGroups * kTiledTok * 4;  // int4 units
constexpr int kChunkBytes = kChunkRecordInts * 16 + 2 * kChunkGroups * kTiledTok * 4;
constexpr int kTiledSmem = 2 * kChunkBytes;

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile(
      "cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(uint32_t(__cvta_generic_to_shared(dst))),
      "l"(src)
      : "memory");
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile(
      "cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(uint32_t(__cvta_generic_to_shared(dst))),
      "l"(src)
      : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

struct TiledArgs {
  Job job[kMaxJobs];
  int64_t first_cta[kMaxJobs + 1] = {};
  int64_t row_tiles[kMaxJobs] = {};
  int64_t part_off[kMaxJobs] = {};   // floats into part
  int64_t count_off[kMaxJobs] = {};  // ints into count
  int n_jobs = 0;
  int64_t n_units = 0, row_bytes = 0, n_groups = 0, n_chunks = 0;
  int n_tok = 0, tok_tiles = 0, splits = 1;
  const int4* q = nullptr;
  const float* dx = nullptr;
  const float* xs = nullptr;
  float* part = nullptr;
  int* count = nullptr;
  bool accumulate = false;
};

template <class F, bool SWIGLU>
__global__ void __launch_bounds__(kTiledWarps * 32, 3) mmq_tiled_kernel(const TiledArgs args) {
  constexpr int NMAT = SWIGLU ? 2 : 1;
  constexpr int MT = SWIGLU ? 1 : 2;
  constexpr int BM = 16 * kTiledWarps * MT;
  extern __shared__ int4 tiled_smem[];
  const int j = job_of_block(args.first_cta, args.n_jobs);
  const Job& job = args.job[j];
  const int64_t local = int64_t(blockIdx.x) - args.first_cta[j];
  const int tt = int(local % args.tok_tiles);
  const int64_t rt = local / args.tok_tiles % args.row_tiles[j];
  const int split = int(local / args.tok_tiles / args.row_tiles[j]);
  const int tok0 = tt * kTiledTok;
  const int64_t row_blk = rt * BM;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, s = lane & 3;
  const int n_tok = args.n_tok;
  const int n_tiles = min(8, (n_tok - tok0 + 7) / 8);
  const int64_t c_begin = split * args.n_chunks / args.splits;
  const int64_t c_end = (split + 1) * args.n_chunks / args.splits;

  const uint8_t* wr[NMAT][MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t row = min(row_blk + 16 * (MT * warp + mt) + g + 8 * r, job.rows - 1);
      wr[0][mt][r] = job.w + row * args.row_bytes;
      if constexpr (SWIGLU) wr[1][mt][r] = job.w_up + row * args.row_bytes;
    }
  // Lane l prefetches the weight bytes of one of the warp's 32 rows (gate or up rows for the
  // pair) for a chunk into L2: at most 4 lines of 128 bytes a row.
  const uint8_t* pf_row;
  {
    const int64_t row = min(row_blk + 16 * MT * warp + (SWIGLU ? (lane & 15) : lane), job.rows - 1);
    pf_row = (SWIGLU && lane >= 16 ? job.w_up : job.w) + row * args.row_bytes;
  }
  auto prefetch_chunk = [&](int64_t c) {
    const int64_t g0 = c * kChunkGroups, g1 = min(args.n_groups, g0 + kChunkGroups);
    const int64_t b0 = g0 / F::kGroups * F::kBytes,
                  b1 = (g1 + F::kGroups - 1) / F::kGroups * F::kBytes;
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(pf_row + b0) & ~uintptr_t(127);
    for (uintptr_t a = a0; a < reinterpret_cast<uintptr_t>(pf_row + b1); a += 128)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
  };
  if (c_begin < c_end) prefetch_chunk(c_begin);  // weights only: allowed before pdl_wait
  pdl_wait();

  // One chunk's input into buffer b: record (gi, token) at int4 (gi * 64 + token) * 4; dx and xs
  // as [gi][token] floats after the records. Tokens past the batch copy the last token's.
  auto issue = [&](int64_t c, int b) {
    int4* rec = tiled_smem + b * (kChunkBytes / 16);
    float* dxs = reinterpret_cast<float*>(rec + kChunkRecordInts);
    float* xss = dxs + kChunkGroups * kTiledTok;
    const int64_t g0 = c * kChunkGroups;
    const int ng = int(min(int64_t(kChunkGroups), args.n_groups - g0));
#pragma unroll 4
    for (int i = tid; i < kTiledTok * kChunkGroups * 4; i += kTiledWarps * 32) {
      const int tok = i >> 5, gi = (i >> 2) & 7, part = i & 3;
      if (gi >= ng) continue;
      const int64_t t = min(tok0 + tok, n_tok - 1);
      cp_async16(rec + (gi * kTiledTok + tok) * 4 + part,
                 args.q + (t * args.n_groups + g0 + gi) * 4 + part);
    }
#pragma unroll 4
    for (int i = tid; i < kTiledTok * kChunkGroups; i += kTiledWarps * 32) {
      const int gi = i >> 6, tok = i & 63;
      if (gi >= ng) continue;
      const int64_t at = (g0 + gi) * n_tok + min(tok0 + tok, n_tok - 1);
      cp_async4(dxs + i, args.dx + at);
      if constexpr (F::kMin) cp_async4(xss + i, args.xs + at);
    }
    cp_async_commit();
  };

  float acc[NMAT][MT][8][4];
#pragma unroll
  for (int m = 0; m < NMAT; ++m)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[m][mt][i][e] = 0.0f;

  if (c_begin < c_end) issue(c_begin, 0);
  for (int64_t c = c_begin; c < c_end; ++c) {
    const int b = int(c - c_begin) & 1;
    if (c + 1 < c_end) {
      issue(c + 1, b ^ 1);
      prefetch_chunk(c + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int4* rec = tiled_smem + b * (kChunkBytes / 16);
    const float* dxs = reinterpret_cast<const float*>(rec + kChunkRecordInts);
    const float* xss = dxs + kChunkGroups * kTiledTok;
    const int64_t g0 = c * kChunkGroups;
    const int ng = int(min(int64_t(kChunkGroups), args.n_groups - g0));
#pragma unroll
    for (int gi = 0; gi < kChunkGroups; ++gi) {
      if (gi >= ng) break;
      const int64_t G = g0 + gi;
      const int64_t u = G / F::kGroups;
      const int gu = F::kGroups == 1 ? 0 : gi;  // a chunk is one super-block for the k-quants
      uint32_t a[NMAT][MT][4];
      float s_lo[NMAT][MT][2], s_hi[NMAT][MT][2], mn[NMAT][MT][2];
#pragma unroll
      for (int m = 0; m < NMAT; ++m)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int r = 0; r < 2; ++r)
            F::frag(wr[m][mt][r] + u * F::kBytes, gu, s, a[m][mt][r], a[m][mt][2 + r],
                    s_lo[m][mt][r], s_hi[m][mt][r], mn[m][mt][r]);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (i >= n_tiles) break;
        const int4 bq = rec[(gi * kTiledTok + 8 * i + g) * 4 + s];
        const float2 d2 = *reinterpret_cast<const float2*>(dxs + gi * kTiledTok + 8 * i + 2 * s);
        const float dxv[2] = {__fmul_rn(d2.x, kInv254), __fmul_rn(d2.y, kInv254)};
        float xsum[2] = {0.0f, 0.0f};
        if constexpr (F::kMin) {
          const float2 x2 = *reinterpret_cast<const float2*>(xss + gi * kTiledTok + 8 * i + 2 * s);
          xsum[0] = x2.x, xsum[1] = x2.y;
        }
#pragma unroll
        for (int m = 0; m < NMAT; ++m)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
            group_into<F>(a[m][mt], bq, s_lo[m][mt], s_hi[m][mt], mn[m][mt], dxv, xsum,
                          acc[m][mt][i]);
      }
    }
    __syncthreads();  // buffer b is refilled by the next iteration's issue
  }

  // The output: y = epilogue(sum) with sum = acc (one range) or the ranges' partials in order.
  auto finish = [&](int64_t row, int tok, float v0, float v1) {
    float* y = job.y + int64_t(tok) * job.rows + row;
    if constexpr (SWIGLU) {
      *y = g_silu(v0) * v1;
    } else {
      float v = v0;
      if (job.bias) v += job.bias[row];
      if (args.accumulate) v += *y;
      *y = v;
    }
  };
  // fn(m_tile, token_tile, element, row, token) for each of this lane's outputs in the job.
  auto each_output = [&](auto&& fn) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (i >= n_tiles) break;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t row = row_blk + 16 * (MT * warp + mt) + g + 8 * (e >> 1);
          const int tok = tok0 + 8 * i + 2 * s + (e & 1);
          if (row < job.rows && tok < n_tok) fn(mt, i, e, row, tok);
        }
      }
  };
  if (args.splits == 1) {
    each_output([&](int mt, int i, int e, int64_t row, int tok) {
      finish(row, tok, acc[0][mt][i][e], acc[NMAT - 1][mt][i][e]);
    });
    return;
  }
  // part[(split * NMAT + m) * n_tok + tok][row] for this job.
  float* part = args.part + args.part_off[j];
  const int64_t plane = int64_t(n_tok) * job.rows;
  each_output([&](int mt, int i, int e, int64_t row, int tok) {
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
      __stcg(part + (int64_t(split) * NMAT + m) * plane + int64_t(tok) * job.rows + row,
             acc[m][mt][i][e]);
  });
  __threadfence();
  __syncthreads();
  __shared__ int last;
  int* count = args.count + args.count_off[j] + rt * args.tok_tiles + tt;
  if (tid == 0) last = atomicAdd(count, 1) == args.splits - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int k = tid; k < BM * kTiledTok; k += kTiledWarps * 32) {
    const int64_t row = row_blk + k % BM;
    const int tok = tok0 + k / BM;
    if (row >= job.rows || tok >= n_tok) continue;
    float v[NMAT];
#pragma unroll
    for (int m = 0; m < NMAT; ++m) {
      const float* p = part + int64_t(m) * plane + int64_t(tok) * job.rows + row;
      v[m] = __ldcg(p);
      for (int sp = 1; sp < args.splits; ++sp)
        v[m] = __fadd_rn(v[m], __ldcg(p + sp * NMAT * plane));
    }
    finish(row, tok, v[0], v[NMAT - 1]);
  }
  if (tid == 0) *count = 0;
}

// Calls f(Format{}) for the weight type; false when the type has no mmq kernel.
template <class Fn>
bool dispatch_format(TensorType type, Fn&& f) {
  switch (type) {
    case TensorType::Q4_0:
      f(MmqQ4_0{});
      return true;
    case TensorType::Q5_0:
      f(MmqQ5_0{});
      return true;
    case TensorType::Q8_0:
      f(MmqQ8_0{});
      return true;
    case TensorType::Q4_K:
      f(MmqQ4_K{});
      return true;
    case TensorType::Q6_K:
      f(MmqQ6_K{});
      return true;
    default:
      return false;
  }
}

void check(TensorType type, int64_t rows, int64_t cols, int64_t n_tok, const ActQ8Scratch& act,
           const char* op) {
  if (!mmq_supported(type, cols) || rows <= 0 || rows > (int64_t(1) << 31))
    throw Error(std::string("cuda ") + op + ": no mmq kernel for " + tensor_type_info(type).name +
                " of " + std::to_string(rows) + " x " + std::to_string(cols));
  if (n_tok < 1 || n_tok > act.max_tokens || cols > act.max_cols || n_tok > (1 << 20))
    throw Error(std::string("cuda ") + op + ": " + std::to_string(n_tok) + " tokens of " +
                std::to_string(cols) + ", but the int8 scratch holds " +
                std::to_string(act.max_tokens) + " of " + std::to_string(act.max_cols));
}

bool tiled_usable(const ActQ8Scratch& act) {
  return kernel_tuning().mmq_tiled && act.mmq_part != nullptr && act.mmq_count != nullptr;
}

// The tiled kernel's launch (see its comment): S from the shape, the partials' and counters'
// places in the scratch, the grid.
template <class F>
void launch_tiled(F, const Args& a, bool swiglu, const ActQ8Scratch& act, cudaStream_t stream) {
  const int nmat = swiglu ? 2 : 1;
  const int64_t bm = 16 * kTiledWarps * (swiglu ? 1 : 2);
  TiledArgs t;
  t.n_jobs = a.n_jobs;
  t.n_groups = a.n_groups;
  t.n_units = a.n_groups / F::kGroups;
  t.row_bytes = t.n_units * F::kBytes;
  t.n_chunks = ceil_div(a.n_groups, int64_t(kChunkGroups));
  t.n_tok = a.n_tok;
  t.tok_tiles = int(ceil_div(int64_t(a.n_tok), int64_t(kTiledTok)));
  t.q = a.q, t.dx = a.dx, t.xs = a.xs;
  t.accumulate = a.accumulate;
  int64_t row_tiles = 0;
  for (int j = 0; j < a.n_jobs; ++j) {
    t.job[j] = a.job[j];
    t.row_tiles[j] = ceil_div(a.job[j].rows, bm);
    row_tiles += t.row_tiles[j];
  }
  // Rows and K alone decide S (never the batch): the bits of a result depend on it.
  int64_t splits = row_tiles >= kTargetTiles ? 1 : ceil_div(kTargetTiles, row_tiles);
  splits = std::max<int64_t>(1, std::min(splits, t.n_chunks / 2));
  t.splits = int(splits);
  int64_t part = 0, count = 0;
  for (int j = 0; j < a.n_jobs; ++j) {
    t.part_off[j] = part, t.count_off[j] = count;
    part += splits * nmat * int64_t(a.n_tok) * a.job[j].rows;
    count += t.row_tiles[j] * t.tok_tiles;
  }
  if (splits > 1 && (part > act.mmq_part_floats || count > act.mmq_count_ints))
    throw Error("cuda mmq: the split products need " + std::to_string(part) + " floats and " +
                std::to_string(count) + " counters, the scratch has " +
                std::to_string(act.mmq_part_floats) + " and " + std::to_string(act.mmq_count_ints));
  t.part = act.mmq_part, t.count = act.mmq_count;
  t.first_cta[0] = 0;
  for (int j = 0; j < a.n_jobs; ++j)
    t.first_cta[j + 1] = t.first_cta[j] + t.row_tiles[j] * t.tok_tiles * splits;
  const unsigned grid = unsigned(t.first_cta[a.n_jobs]);
  auto kernel = swiglu ? mmq_tiled_kernel<F, true> : mmq_tiled_kernel<F, false>;
  // Once per kernel (not inside a graph capture's stream work, and not per launch).
  static const bool smem_set[2] = {
      cudaFuncSetAttribute(mmq_tiled_kernel<F, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           kTiledSmem) == cudaSuccess,
      cudaFuncSetAttribute(mmq_tiled_kernel<F, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           kTiledSmem) == cudaSuccess};
  if (!smem_set[swiglu ? 1 : 0])
    throw Error("cuda mmq: cannot give the tiled kernel " + std::to_string(kTiledSmem) +
                " bytes of shared memory");
  launch_pdl("mmq_tiled_kernel", kernel, grid, kTiledWarps * 32, kTiledSmem, stream, t);
}

// Quantizes x (normalised first when norm_w) into the scratch and runs the product over it.
void run(TensorType type, int64_t cols, const float* x, const float* norm_w, float eps, Args& args,
         bool swiglu, const ActQ8Scratch& act, cudaStream_t stream) {
  const int64_t n_groups = cols / 32;
  // The records take 64 bytes per (token, group): xq's and xq2's regions together (adjacent in
  // every scratch act_q8_scratch carves; checked).
  if (act.xq2 - act.xq < cols * args.n_tok)
    throw Error("cuda mmq: the int8 scratch's xq and xq2 are not one region");
  int8_t* q = act.xq;
  // Without the norm, 4 groups per warp spread over the GPU; with it, one block per token.
  const unsigned blocks =
      norm_w ? 1u : unsigned(ceil_div(n_groups, int64_t(4 * kQuantThreads / 32)));
  launch_pdl("mmq_quantize_kernel", norm_w ? mmq_quantize_kernel<true> : mmq_quantize_kernel<false>,
             dim3(blocks, unsigned(args.n_tok)), kQuantThreads, 0, stream, x, cols, norm_w, eps,
             n_groups, args.n_tok, q, act.dx, act.xs);
  args.q = reinterpret_cast<const int4*>(q);
  args.dx = act.dx, args.xs = act.xs;
  args.n_groups = n_groups;
  args.tok_tiles = int(ceil_div(int64_t(args.n_tok), int64_t(kTiles * 8)));
  if (tiled_usable(act)) {
    dispatch_format(type, [&](auto fmt) { launch_tiled(fmt, args, swiglu, act, stream); });
    return;
  }
  dispatch_format(type, [&](auto fmt) {
    using F = decltype(fmt);
    args.n_units = n_groups / F::kGroups;
    args.row_bytes = args.n_units * F::kBytes;
    args.first_cta[0] = 0;
    for (int j = 0; j < args.n_jobs; ++j)
      args.first_cta[j + 1] =
          args.first_cta[j] + ceil_div(args.job[j].rows, int64_t(kRows)) * args.tok_tiles;
    const int64_t grid = args.first_cta[args.n_jobs];
    if (swiglu)
      launch_pdl("mmq_kernel", mmq_kernel<F, true>, unsigned(grid), kWarps * 32, 0, stream, args);
    else
      launch_pdl("mmq_kernel", mmq_kernel<F, false>, unsigned(grid), kWarps * 32, 0, stream, args);
  });
}

}  // namespace

int64_t mmq_part_floats(int64_t max_tokens) {
  // S * (row tiles) < 2 * kTargetTiles whenever S > 1, and a tile is 128 rows (64 of each of the
  // gate/up pair).
  return 2 * kTargetTiles * 16 * kTiledWarps * 2 * max_tokens;
}
int64_t mmq_count_ints(int64_t max_tokens) {
  return kTargetTiles * ceil_div(max_tokens, int64_t(kTiledTok));
}

bool mmq_supported(TensorType type, int64_t cols) {
  int unit = 0;
  if (!dispatch_format(type, [&](auto fmt) { unit = 32 * decltype(fmt)::kGroups; })) return false;
  return cols > 0 && cols % unit == 0;
}

void mmq(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t n_tok,
         float* y, const float* bias, MatvecMode mode, void* stream, const ActQ8Scratch& act) {
  check(type, rows, cols, n_tok, act, "mmq");
  Args args;
  args.job[0] = {static_cast<const uint8_t*>(w), nullptr, y, bias, rows};
  args.n_jobs = 1;
  args.n_tok = int(n_tok);
  args.accumulate = mode == MatvecMode::Accumulate;
  run(type, cols, x, nullptr, 0.0f, args, false, act, as_stream(stream));
}

void mmq_multi(TensorType type, int64_t cols, const float* x, int64_t n_tok,
               const MatvecTarget* targets, int n, void* stream, const float* norm_weight,
               float eps, const ActQ8Scratch& act) {
  if (n < 1 || n > kMaxJobs) throw Error("cuda mmq_multi: 1 to 3 targets");
  Args args;
  for (int j = 0; j < n; ++j) {
    check(type, targets[j].rows, cols, n_tok, act, "mmq_multi");
    args.job[j] = {static_cast<const uint8_t*>(targets[j].w), nullptr, targets[j].y,
                   targets[j].bias, targets[j].rows};
  }
  args.n_jobs = n;
  args.n_tok = int(n_tok);
  run(type, cols, x, norm_weight, eps, args, false, act, as_stream(stream));
}

void mmq_swiglu(TensorType type, const void* w_gate, const void* w_up, int64_t rows, int64_t cols,
                const float* x, int64_t n_tok, float* y, void* stream, const float* norm_weight,
                float eps, const ActQ8Scratch& act) {
  check(type, rows, cols, n_tok, act, "mmq_swiglu");
  Args args;
  args.job[0] = {static_cast<const uint8_t*>(w_gate), static_cast<const uint8_t*>(w_up), y, nullptr,
                 rows};
  args.n_jobs = 1;
  args.n_tok = int(n_tok);
  run(type, cols, x, norm_weight, eps, args, true, act, as_stream(stream));
}

}  // namespace lockstep::cuda_ops
