// Matrix-vector products with weights in their GGUF block formats (the decode path).
//
// A thread block of 128 threads computes R consecutive output rows (R = 4, fewer for short
// matrices) of up to three matrices that share the input (Q, K and V in one launch). Its threads
// are grouped TPB to a weight block: thread = slot * TPB + t decodes part t of blocks slot,
// slot + 128/TPB, ... of each of its rows, so one step of the block covers 128/TPB weight blocks
// with one wide load per thread and row; partial sums meet in shared memory at the end. The
// activation slice a thread needs is loaded once per step (through L1) and reused for all rows.
// Dot products use the factored block form of quant_blocks.cuh: sum(x * q) per run of C
// elements, then a * sum + b * sum(x), so the per-element work is one conversion and one FMA.
// On this path activations and sums stay float32; the integer path below quantizes the input.
//
// Q4_K and Q6_K take the integer path instead when the caller gives an ActQ8Scratch (the backend
// always does): a small launch (quantize_act_kernel) quantizes the (optionally RMS-normalised)
// input once into the scratch as two int8 terms per element over groups of 32 with one float
// scale dx = max|x|/127 each (and, for Q4_K's min term, the exact float sum of the group); then
// each weight sub-block is dotted with __dp4a (4 int8 products per instruction) against both
// terms and scaled once: d * sc * dx * (sum(q * xq) + sum(q * xq2) / 254). The input's rounding
// error is at most dx/508 per element (plus float rounding), so a row's error is at most
// sum_i |w_i| * dx(i)/508 (the bound the op tests check). A group holding a NaN or infinity gets
// dx = NaN, so non-finite inputs still reach the output. Without a scratch (or one too small; the
// CUDA backend passes none with CudaBackendOptions::f32_activations, the mode closest to the CPU
// reference), the float-activation kernels run for every type.
//
// Batches (continuous batching's decode step: one token of each of B sequences) run the same
// kernels over n_tok input rows, kBatchTokens at a time: a thread block decodes its weight rows
// once per pass and dots them with every token of the pass, so the weights cross memory once per
// step rather than once per sequence. Each token's arithmetic is exactly the single-token
// kernel's (the same lanes, the same order of blocks and of the reductions), so a row's result
// does not depend on the batch it is computed in: batch invariance, tested bit for bit.
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/quant_blocks.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

constexpr int64_t align_up_256(int64_t n) {
  return (n + 255) / 256 * 256;
}

constexpr int kThreads = 128;
constexpr int kMaxJobs = 3;

__device__ __forceinline__ float g_silu(float g) {
  return g / (1.0f + expf(-g));
}

// The CPU reference's gelu_tanh (backend/cpu/ops_ref.cpp), in float64 as there: one per output
// row, nothing next to the row's dot product.
__device__ __forceinline__ float g_gelu_tanh(float g) {
  const double v = g;
  const double c = sqrt(2.0 / 3.14159265358979323846);
  return float(0.5 * v * (1.0 + tanh(c * (v + 0.044715 * v * v * v))));
}

struct Job {
  const uint8_t* w = nullptr;
  const uint8_t* w_up = nullptr;  // SwiGLU only
  float* y = nullptr;
  const float* bias = nullptr;
  int64_t rows = 0;
};

struct Args {
  Job job[kMaxJobs];
  int64_t first_cta[kMaxJobs + 1] = {};  // thread blocks [first_cta[j], first_cta[j+1]) do job j
  int n_jobs = 0;
  int64_t n_blocks = 0, row_bytes = 0;
  const float* x = nullptr;
  int64_t n_tok = 1;     // input rows: x row k at x + k * x_stride, y row k at job.y + k * job.rows
  int64_t x_stride = 0;  // floats between input rows (the product's cols)
  bool accumulate = false;
  bool gelu = false;              // the gated product's activation: GELU (tanh) instead of SiLU
  const float* norm_w = nullptr;  // fused pre-norm: x is RMS-normalised and scaled by norm_w
  float eps = 0.0f;
  // The pre-norm's per-token scales, computed beforehand by rms_scales_kernel (batches), or
  // nullptr: each thread block computes them (the same arithmetic, so the same bits).
  const float* norm_scale = nullptr;
  // The quantized input of matvec_q8_kernel: two int8 terms, scales, sums.
  const int8_t* xq = nullptr;
  const int8_t* xq2 = nullptr;
  const float* dx = nullptr;
  const float* xs = nullptr;
  // Prefetch the thread block's weight rows into L2 before waiting for the previous kernel
  // (launch_pdl); see prefetch_wanted().
  bool prefetch = false;
};

// Prefetching pays for small products (0.5B decode) and costs for large ones (7B; timings in
// bench/NOTES.md), where the early thread blocks' prefetches compete with the running kernel for
// bandwidth and L2. So only products of at most kernel_tuning().prefetch_mb megabytes of weights
// prefetch (default 16; 0: never; LOCKSTEP_CUDA_PREFETCH_MB). A bench knob: the same bits.
bool prefetch_wanted(const Args& args, bool swiglu) {
  const double limit_mb = kernel_tuning().prefetch_mb;
  double bytes = 0;
  for (int j = 0; j < args.n_jobs; ++j) bytes += double(args.job[j].rows) * double(args.row_bytes);
  if (swiglu) bytes *= 2;
  return bytes <= limit_mb * 1e6;
}

// The job (matrix) thread block blockIdx.x works on.
__device__ __forceinline__ int job_of_block(const Args& args) {
  int j = 0;
#pragma unroll
  for (int k = 1; k < kMaxJobs; ++k)
    if (k < args.n_jobs && int64_t(blockIdx.x) >= args.first_cta[k]) j = k;
  return j;
}

// Start of every matvec kernel: prefetch the block's weight rows (the only memory it may touch
// before pdl_wait(), cuda_common.cuh), then wait for the kernel that produced x.
template <int NMAT, int R>
__device__ __forceinline__ void prefetch_rows_then_wait(const Args& args, const Job& job,
                                                        int64_t row0) {
  if (args.prefetch && row0 < job.rows) {
    const int64_t bytes = min(int64_t(R), job.rows - row0) * args.row_bytes;
    prefetch_l2(job.w + row0 * args.row_bytes, bytes);
    if constexpr (NMAT == 2) prefetch_l2(job.w_up + row0 * args.row_bytes, bytes);
  }
  pdl_wait();
}

// Sums acc over the thread block and writes rows row0 .. row0 + R - 1 (with the epilogue) of the
// nt tokens t0 .. t0 + nt - 1. Each (matrix, row, token) sum meets in the same order at every NT.
template <int NMAT, int R, bool SWIGLU, int NT>
__device__ __forceinline__ void reduce_and_store(const Args& args, const Job& job, int64_t row0,
                                                 const float (&acc)[NMAT][R][NT], int64_t t0,
                                                 int nt) {
  __shared__ float red[kThreads / 32][NMAT * R * NT];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int m = 0; m < NMAT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int k = 0; k < NT; ++k) {
        const float v = warp_sum(acc[m][r][k]);
        if (lane == 0) red[warp][(m * R + r) * NT + k] = v;
      }
  __syncthreads();
  static_assert(R * NT <= kThreads, "one thread per (row, token)");
  const int r = tid % R, k = tid / R;
  if (tid < R * NT && k < nt && row0 + r < job.rows) {
    const int64_t row = row0 + r;
    float* y = job.y + (t0 + k) * job.rows;
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) {
      s0 += red[w][r * NT + k];
      if constexpr (SWIGLU) s1 += red[w][(R + r) * NT + k];
    }
    if constexpr (SWIGLU) {
      y[row] = (args.gelu ? g_gelu_tanh(s0) : g_silu(s0)) * s1;
    } else {
      if (job.bias) s0 += job.bias[row];
      if (args.accumulate) s0 += y[row];
      y[row] = s0;
    }
  }
}

template <class B>
__device__ __forceinline__ void load_x(const float* __restrict__ xb, int t, float* xv) {
#pragma unroll
  for (int g = 0; g < B::G; ++g) {
    const float* src = xb + B::start(t, g);
    if constexpr (B::C % 4 == 0) {
#pragma unroll
      for (int c = 0; c < B::C; c += 4) {
        const float4 f = __ldg(reinterpret_cast<const float4*>(src + c));
        xv[g * B::C + c] = f.x, xv[g * B::C + c + 1] = f.y;
        xv[g * B::C + c + 2] = f.z, xv[g * B::C + c + 3] = f.w;
      }
    } else {
#pragma unroll
      for (int c = 0; c < B::C; ++c) xv[g * B::C + c] = __ldg(src + c);
    }
  }
}

// 1 / sqrt(mean(x^2) + eps) over the n values of x, computed by the whole thread block (the fused
// RMS norm; the standalone kernel in norm.cu gives the same value up to float rounding).
// Called by every thread of the block; consecutive calls are separated by a barrier (the caller's).
__device__ __forceinline__ float rms_scale(const float* __restrict__ x, int64_t n, float eps) {
  __shared__ float partial[kThreads / 32];
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = __ldg(x + i);
    ss = fmaf(v, v, ss);
  }
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  return 1.0f / sqrtf(total / float(n) + eps);
}

// sum over thread t's elements of one block of value(w) * x, in the factored form.
template <class B>
__device__ __forceinline__ float block_dot(const uint8_t* blk, int t, const float* xv,
                                           const float* xs) {
  float q[B::G * B::C], a[B::G], o[B::G];
  B::decode(blk, t, q, a, o);
  float acc = 0.0f;
#pragma unroll
  for (int g = 0; g < B::G; ++g) {
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < B::C; ++c) s = fmaf(q[g * B::C + c], xv[g * B::C + c], s);
    acc = B::kScale ? fmaf(a[g], s, acc) : acc + s;
    if constexpr (B::kOffset) acc = fmaf(o[g], xs[g], acc);
  }
  return acc;
}

template <class B, int R, bool SWIGLU, bool NORM, int NT>
__global__ void __launch_bounds__(kThreads) matvec_kernel(const Args args) {
  constexpr int NMAT = SWIGLU ? 2 : 1;
  constexpr int kSlots = kThreads / B::TPB;
  constexpr int E = B::G * B::C;
  const int j = job_of_block(args);
  const Job& job = args.job[j];
  const int64_t row0 = (int64_t(blockIdx.x) - args.first_cta[j]) * R;
  const int tid = threadIdx.x, t = tid % B::TPB, slot = tid / B::TPB;

  const uint8_t* wr[NMAT][R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = min(row0 + r, job.rows - 1);  // a duplicate row, never written back
    wr[0][r] = job.w + row * args.row_bytes;
    if constexpr (SWIGLU) wr[1][r] = job.w_up + row * args.row_bytes;
  }
  prefetch_rows_then_wait<NMAT, R>(args, job, row0);
  // NT = 1 is launched for a single token only (run): a constant pass count drops the loop.
  const int64_t n_tok = NT == 1 ? 1 : args.n_tok;
  for (int64_t t0 = 0; t0 < n_tok; t0 += NT) {
    const int nt = int(min(int64_t(NT), n_tok - t0));
    float scale[NT];
#pragma unroll
    for (int k = 0; k < NT; ++k) {
      scale[k] = 1.0f;
      if constexpr (NORM) {
        if (k > 0) __syncthreads();  // rms_scale's shared partial sums are reused
        if (k < nt)
          scale[k] = args.norm_scale ? args.norm_scale[t0 + k]
                                     : rms_scale(args.x + (t0 + k) * args.x_stride,
                                                 args.n_blocks * B::QK, args.eps);
      }
    }
    float acc[NMAT][R][NT];
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int k = 0; k < NT; ++k) acc[m][r][k] = 0.0f;

    for (int64_t b = slot; b < args.n_blocks; b += kSlots) {
#pragma unroll
      for (int k = 0; k < NT; ++k) {
        if (k >= nt) break;
        float xv[E], xs[B::G];
        load_x<B>(args.x + (t0 + k) * args.x_stride + b * B::QK, t, xv);
        if constexpr (NORM) {
          float nw[E];
          load_x<B>(args.norm_w + b * B::QK, t, nw);
#pragma unroll
          for (int e = 0; e < E; ++e) xv[e] = (xv[e] * scale[k]) * nw[e];  // as norm.cu does
        }
        if constexpr (B::kOffset) {
#pragma unroll
          for (int g = 0; g < B::G; ++g) {
            float s = 0.0f;
#pragma unroll
            for (int c = 0; c < B::C; ++c) s += xv[g * B::C + c];
            xs[g] = s;
          }
        }
#pragma unroll
        for (int m = 0; m < NMAT; ++m)
#pragma unroll
          for (int r = 0; r < R; ++r)
            acc[m][r][k] += block_dot<B>(wr[m][r] + b * B::BYTES, t, xv, xs);
      }
    }
    reduce_and_store<NMAT, R, SWIGLU, NT>(args, job, row0, acc, t0, nt);
    if (t0 + NT < n_tok) __syncthreads();  // red and partial are reused by the next pass
  }
}

// The per-token scales of a batched product's fused pre-norm, once per product: one block of
// kThreads per token, rms_scale's arithmetic exactly (so the same bits as computing them in each
// matvec block).
__global__ void __launch_bounds__(kThreads)
    rms_scales_kernel(const float* __restrict__ x, int64_t x_stride, int64_t n, float eps,
                      float* __restrict__ out) {
  pdl_wait();
  const float s = rms_scale(x + int64_t(blockIdx.x) * x_stride, n, eps);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// ---- int8-activation path (Q4_K, Q6_K) ----------------------------------------------------

// The input quantized once per product into global scratch: one warp per group of 32 (lane i
// holds element i; with NORM, x * scale * norm_w as the float path computes it), kThreads / 32
// groups per thread block. Two int8 terms per element: xq = rint(v / dx) with dx = max|v| / 127,
// and xq2 = rint((v / dx - xq) * 254), so v = dx * (xq + xq2 / 254) to within dx / 508 (plus
// float rounding): one int8 term alone (as llama.cpp's CUDA decode uses) moved single logits
// rows of random-weight test models to cosine 0.9986 against the reference; two keep them at
// the f16 prefill's level for one more dp4a per 4 weights. dx is NaN for a group holding a
// non-finite value (the sum, which any NaN or inf reaches, is tested), so those still propagate;
// xs = the group's float sum (Q4_K's min term), summed in warp order. Token blockIdx.y's input
// is at x + blockIdx.y * x_stride; its quantized row at xq + blockIdx.y * n_groups * 32 (and its
// n_groups scales and sums likewise).
template <bool NORM>
__global__ void __launch_bounds__(kThreads)
    quantize_act_kernel(const float* __restrict__ x, int64_t x_stride,
                        const float* __restrict__ norm_w, const float* __restrict__ pre_scale,
                        float eps, int64_t n_groups, int8_t* xq, int8_t* xq2, float* dx,
                        float* xs) {
  pdl_wait();
  x += int64_t(blockIdx.y) * x_stride;
  xq += int64_t(blockIdx.y) * n_groups * 32, xq2 += int64_t(blockIdx.y) * n_groups * 32;
  dx += int64_t(blockIdx.y) * n_groups, xs += int64_t(blockIdx.y) * n_groups;
  float scale = 1.0f;
  // pre_scale: the token's norm scale from rms_scales_kernel (batches; the same bits)
  if constexpr (NORM) scale = pre_scale ? pre_scale[blockIdx.y] : rms_scale(x, n_groups * 32, eps);
  const int64_t g = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (g >= n_groups) return;
  float v = __ldg(x + g * 32 + lane);
  if constexpr (NORM) v = (v * scale) * __ldg(norm_w + g * 32 + lane);
  const float amax = warp_max(fmaxf(0.0f, fabsf(v)));  // a NaN counts as 0
  const float sum = warp_sum(v);
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const float scaled = v * inv;
  const int q = max(-127, min(127, __float2int_rn(scaled)));
  const int q2 = max(-127, min(127, __float2int_rn((scaled - float(q)) * 254.0f)));
  xq[g * 32 + lane] = int8_t(q);
  xq2[g * 32 + lane] = int8_t(q2);
  if (lane == 0) {
    dx[g] = isfinite(sum) && isfinite(amax) ? amax / 127.0f : __int_as_float(0x7FC00000);
    xs[g] = sum;
  }
}

constexpr float kInv254 = 1.0f / 254.0f;

// sum(q * x) over 16 weights (4 words of bytes w) and the two int8 terms of x, in units of dx.
__device__ __forceinline__ float dp4a_two_terms(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3,
                                                int4 a, int4 b) {
  int s = __dp4a(int(w0), a.x, 0), t = __dp4a(int(w0), b.x, 0);
  s = __dp4a(int(w1), a.y, s), t = __dp4a(int(w1), b.y, t);
  s = __dp4a(int(w2), a.z, s), t = __dp4a(int(w2), b.z, t);
  s = __dp4a(int(w3), a.w, s), t = __dp4a(int(w3), b.w, t);
  return fmaf(float(t), kInv254, float(s));
}

// Q4_K: thread t of a block (TPB 8) takes qs[32j + 16h .. +15], j = t/2, h = t%2: low nibbles are
// elements 64j + 16h + 0..15 of sub-block 2j, high nibbles the same of sub-block 2j + 1. The min
// term -dmin * m * sum(x) is added once per sub-block, by the h = 0 thread, with the float sum.

// Thread (j, h)'s share of one token's quantized input for Q4_K block b (e0 = its first element,
// g0 = its first group of 32).
struct Q4kInput {
  int4 x0, x1, y0, y1;  // both int8 terms of sub-blocks 2j and 2j + 1
  float dx0, dx1, xs0, xs1;
};
__device__ __forceinline__ Q4kInput load_q4k_input(const Args& args, int64_t tok, int64_t e0,
                                                   int64_t g0, int h, int64_t cols) {
  const int8_t* xq = args.xq + tok * cols;
  const int8_t* xq2 = args.xq2 + tok * cols;
  const float* dx = args.dx + tok * (cols / 32);
  const float* xsum = args.xs + tok * (cols / 32);
  return {*reinterpret_cast<const int4*>(xq + e0),
          *reinterpret_cast<const int4*>(xq + e0 + 32),
          *reinterpret_cast<const int4*>(xq2 + e0),
          *reinterpret_cast<const int4*>(xq2 + e0 + 32),
          dx[g0],
          dx[g0 + 1],
          h ? 0.0f : xsum[g0],
          h ? 0.0f : xsum[g0 + 1]};
}

// One row's term: its nibbles q with the decoded scales and mins of sub-blocks 2j and 2j + 1.
__device__ __forceinline__ float q4k_term(uint4 q, float sc0, float m0, float sc1, float m1,
                                          float d, float dmin, const Q4kInput& in) {
  constexpr uint32_t kLo = 0x0F0F0F0Fu;
  const float s0 = dp4a_two_terms(q.x & kLo, q.y & kLo, q.z & kLo, q.w & kLo, in.x0, in.y0);
  const float s1 = dp4a_two_terms((q.x >> 4) & kLo, (q.y >> 4) & kLo, (q.z >> 4) & kLo,
                                  (q.w >> 4) & kLo, in.x1, in.y1);
  const float dot = fmaf(sc0 * in.dx0, s0, sc1 * in.dx1 * s1);
  const float mins = fmaf(m0, in.xs0, m1 * in.xs1);
  return fmaf(d, dot, -(dmin * mins));
}

// The weights are decoded once and dotted with the nt tokens t0 .. of the pass.
template <int NMAT, int R, int NT>
__device__ __forceinline__ void q4k_step(const uint8_t* const (&wr)[NMAT][R], int64_t b, int t,
                                         const Args& args, float (&acc)[NMAT][R][NT], int64_t t0,
                                         int nt) {
  const int j = t >> 1, h = t & 1;
  const int64_t e0 = b * 256 + 64 * j + 16 * h, g0 = b * 8 + 2 * j;
  const int64_t cols = args.n_blocks * 256;
  if constexpr (NT == 1) {
    // One token (decode): the input first, then every row's raw header and nibbles, each row's
    // scales decoded where they are used. Decoding them up front for all rows (as the batch
    // below does, to share them between its tokens) holds six more registers per row and cut the
    // 7B's occupancy (ptxas: 127 -> 161 registers for the gated 4-row product, 80 -> 122 plain).
    // The arithmetic per row is the batch's (q4k_term), so the bits are the same.
    const Q4kInput in = load_q4k_input(args, t0, e0, g0, h, cols);
    uint4 hdr[NMAT][R], qs[NMAT][R];
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = wr[m][r] + b * 144;
        hdr[m][r] = __ldg(reinterpret_cast<const uint4*>(blk));
        qs[m][r] = __ldg(reinterpret_cast<const uint4*>(blk + 16 + 16 * t));
      }
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint4 hd = hdr[m][r];
        float sc0, m0, sc1, m1;
        k4_scale_min(hd.y, hd.z, hd.w, 2 * j, sc0, m0);
        k4_scale_min(hd.y, hd.z, hd.w, 2 * j + 1, sc1, m1);
        acc[m][r][0] += q4k_term(qs[m][r], sc0, m0, sc1, m1, half_lo(hd.x), half_hi(hd.x), in);
      }
  } else {
    uint4 qs[NMAT][R];
    float sc0[NMAT][R], m0[NMAT][R], sc1[NMAT][R], m1[NMAT][R], d[NMAT][R], dmin[NMAT][R];
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = wr[m][r] + b * 144;
        const uint4 hd = __ldg(reinterpret_cast<const uint4*>(blk));
        qs[m][r] = __ldg(reinterpret_cast<const uint4*>(blk + 16 + 16 * t));
        k4_scale_min(hd.y, hd.z, hd.w, 2 * j, sc0[m][r], m0[m][r]);
        k4_scale_min(hd.y, hd.z, hd.w, 2 * j + 1, sc1[m][r], m1[m][r]);
        d[m][r] = half_lo(hd.x), dmin[m][r] = half_hi(hd.x);
      }
#pragma unroll
    for (int k = 0; k < NT; ++k) {
      if (k >= nt) break;
      const Q4kInput in = load_q4k_input(args, t0 + k, e0, g0, h, cols);
#pragma unroll
      for (int m = 0; m < NMAT; ++m)
#pragma unroll
        for (int r = 0; r < R; ++r)
          acc[m][r][k] +=
              q4k_term(qs[m][r], sc0[m][r], m0[m][r], sc1[m][r], m1[m][r], d[m][r], dmin[m][r], in);
    }
  }
}

// Q6_K: thread t (TPB 8) takes n = t/4, l = 8(t%4) .. +7 of all four k (as BlockQ6_K): elements
// 128n + 32k + l, i.e. 8 elements of int8 group 8b + 4n + k, with scale scales[8n + l/16 + 2k].
// The 6-bit q - 32 is formed per byte with __vsub4 and dotted signed, once for the nt tokens.
template <int NMAT, int R, int NT>
__device__ __forceinline__ void q6k_step(const uint8_t* const (&wr)[NMAT][R], int64_t b, int t,
                                         const Args& args, float (&acc)[NMAT][R][NT], int64_t t0,
                                         int nt) {
  const int n = t >> 2, l0 = 8 * (t & 3);
  const int64_t e0 = b * 256 + 128 * n + l0, g0 = b * 8 + 4 * n;
  const int64_t cols = args.n_blocks * 256;
  if constexpr (NT == 1) {
    // One token (decode): the raw words of every row, unpacked where they are used (unpacking
    // them up front, as the batch below does, took the 8-row product from 128 to 212 registers);
    // the same arithmetic per row as the batch's, so the same bits.
    const int8_t* xq = args.xq + t0 * cols;
    const int8_t* xq2 = args.xq2 + t0 * cols;
    const float* dx = args.dx + t0 * (cols / 32);
    int2 xk[4], yk[4];
    float dxk[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      xk[k] = *reinterpret_cast<const int2*>(xq + e0 + 32 * k);
      yk[k] = *reinterpret_cast<const int2*>(xq2 + e0 + 32 * k);
      dxk[k] = dx[g0 + k];
    }
    uint32_t a0[NMAT][R], a1[NMAT][R], c0[NMAT][R], c1[NMAT][R], h0[NMAT][R], h1[NMAT][R];
    uint32_t scw[NMAT][R];
    float d[NMAT][R];
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = wr[m][r] + b * 210;
        const uint8_t* ql = blk + 64 * n + l0;
        a0[m][r] = load_u32_a2(ql), a1[m][r] = load_u32_a2(ql + 4);
        c0[m][r] = load_u32_a2(ql + 32), c1[m][r] = load_u32_a2(ql + 36);
        h0[m][r] = load_u32_a2(blk + 128 + 32 * n + l0);
        h1[m][r] = load_u32_a2(blk + 132 + 32 * n + l0);
        // scales[8n + l0/16 + 2k], k = 0..3: bytes 0, 2, 4, 6 of the 8 from 192 + 8n + l0/16
        const uint8_t* sp = blk + 192 + 8 * n + (l0 >> 4);
        scw[m][r] = uint32_t(sp[0]) | (uint32_t(sp[2]) << 8) | (uint32_t(sp[4]) << 16) |
                    (uint32_t(sp[6]) << 24);
        d[m][r] = load_half(blk + 208);
      }
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const uint32_t u0 = q6k_levels(a0[m][r], c0[m][r], h0[m][r], k);
          const uint32_t u1 = q6k_levels(a1[m][r], c1[m][r], h1[m][r], k);
          const int w0 = int(__vsub4(u0, 0x20202020u)), w1 = int(__vsub4(u1, 0x20202020u));
          const int si = __dp4a(w1, xk[k].y, __dp4a(w0, xk[k].x, 0));
          const int ti = __dp4a(w1, yk[k].y, __dp4a(w0, yk[k].x, 0));
          const float sc = float(int8_t(uint8_t(scw[m][r] >> (8 * k))));
          sum = fmaf(sc * dxk[k], fmaf(float(ti), kInv254, float(si)), sum);
        }
        acc[m][r][0] = fmaf(d[m][r], sum, acc[m][r][0]);
      }
  } else {
    int w0[NMAT][R][4], w1[NMAT][R][4];
    float sc[NMAT][R][4], d[NMAT][R];
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = wr[m][r] + b * 210;
        const uint8_t* ql = blk + 64 * n + l0;
        const uint32_t a0 = load_u32_a2(ql), a1 = load_u32_a2(ql + 4);
        const uint32_t c0 = load_u32_a2(ql + 32), c1 = load_u32_a2(ql + 36);
        const uint32_t h0 = load_u32_a2(blk + 128 + 32 * n + l0);
        const uint32_t h1 = load_u32_a2(blk + 132 + 32 * n + l0);
        // scales[8n + l0/16 + 2k], k = 0..3: bytes 0, 2, 4, 6 of the 8 from 192 + 8n + l0/16
        const uint8_t* sp = blk + 192 + 8 * n + (l0 >> 4);
        d[m][r] = load_half(blk + 208);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const uint32_t u0 = q6k_levels(a0, c0, h0, k), u1 = q6k_levels(a1, c1, h1, k);
          w0[m][r][k] = int(__vsub4(u0, 0x20202020u)), w1[m][r][k] = int(__vsub4(u1, 0x20202020u));
          sc[m][r][k] = float(int8_t(sp[2 * k]));
        }
      }
#pragma unroll
    for (int tk = 0; tk < NT; ++tk) {
      if (tk >= nt) break;
      const int8_t* xq = args.xq + (t0 + tk) * cols;
      const int8_t* xq2 = args.xq2 + (t0 + tk) * cols;
      const float* dx = args.dx + (t0 + tk) * (cols / 32);
      int2 xk[4], yk[4];
      float dxk[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        xk[k] = *reinterpret_cast<const int2*>(xq + e0 + 32 * k);
        yk[k] = *reinterpret_cast<const int2*>(xq2 + e0 + 32 * k);
        dxk[k] = dx[g0 + k];
      }
#pragma unroll
      for (int m = 0; m < NMAT; ++m)
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float sum = 0.0f;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const int si = __dp4a(w1[m][r][k], xk[k].y, __dp4a(w0[m][r][k], xk[k].x, 0));
            const int ti = __dp4a(w1[m][r][k], yk[k].y, __dp4a(w0[m][r][k], yk[k].x, 0));
            sum = fmaf(sc[m][r][k] * dxk[k], fmaf(float(ti), kInv254, float(si)), sum);
          }
          acc[m][r][tk] = fmaf(d[m][r], sum, acc[m][r][tk]);
        }
    }
  }
}

// The product over the quantized input (args.xq, xq2, dx, xs, written by quantize_act_kernel).
template <bool Q6, int R, bool SWIGLU, int NT>
__global__ void __launch_bounds__(kThreads) matvec_q8_kernel(const Args args) {
  constexpr int NMAT = SWIGLU ? 2 : 1;
  constexpr int kTpb = 8, kSlots = kThreads / kTpb;
  const int j = job_of_block(args);
  const Job& job = args.job[j];
  const int64_t row0 = (int64_t(blockIdx.x) - args.first_cta[j]) * R;
  const int tid = threadIdx.x, t = tid % kTpb, slot = tid / kTpb;
  const uint8_t* wr[NMAT][R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = min(row0 + r, job.rows - 1);  // a duplicate row, never written back
    wr[0][r] = job.w + row * args.row_bytes;
    if constexpr (SWIGLU) wr[1][r] = job.w_up + row * args.row_bytes;
  }
  prefetch_rows_then_wait<NMAT, R>(args, job, row0);

  // NT = 1 is launched for a single token only (run_q8): a constant pass count lets the compiler
  // drop the loop, which kept the 8-row Q4_K product at 161 registers instead of ~120.
  const int64_t n_tok = NT == 1 ? 1 : args.n_tok;
  for (int64_t t0 = 0; t0 < n_tok; t0 += NT) {
    const int nt = int(min(int64_t(NT), n_tok - t0));
    float acc[NMAT][R][NT];
#pragma unroll
    for (int m = 0; m < NMAT; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int k = 0; k < NT; ++k) acc[m][r][k] = 0.0f;
    for (int64_t b = slot; b < args.n_blocks; b += kSlots) {
      if constexpr (Q6)
        q6k_step<NMAT, R, NT>(wr, b, t, args, acc, t0, nt);
      else
        q4k_step<NMAT, R, NT>(wr, b, t, args, acc, t0, nt);
    }
    reduce_and_store<NMAT, R, SWIGLU, NT>(args, job, row0, acc, t0, nt);
    if (t0 + NT < n_tok) __syncthreads();  // red is reused by the next pass
  }
}

// Quantizes args.x (normalised first when args.norm_w) into act, then runs the product over it.
template <bool Q6, int R, bool SWIGLU, int NT>
void launch_q8(Args& args, int64_t cols, const ActQ8Scratch& act, cudaStream_t stream) {
  const int64_t n_groups = cols / 32;
  const dim3 qgrid(unsigned(ceil_div(n_groups, kThreads / 32)), unsigned(args.n_tok));
  const float* pre_scale = nullptr;
  if (args.norm_w && args.n_tok > 1 && act.norm_scale) {  // once per token, not per block
    launch_pdl("rms_scales_kernel", rms_scales_kernel, unsigned(args.n_tok), kThreads, 0, stream,
               args.x, args.x_stride, cols, args.eps, act.norm_scale);
    pre_scale = act.norm_scale;
  }
  launch_pdl("quantize_act_kernel",
             args.norm_w ? quantize_act_kernel<true> : quantize_act_kernel<false>, qgrid, kThreads,
             0, stream, args.x, args.x_stride, args.norm_w, pre_scale, args.eps, n_groups, act.xq,
             act.xq2, act.dx, act.xs);
  args.xq = act.xq, args.xq2 = act.xq2, args.dx = act.dx, args.xs = act.xs;
  args.n_blocks = cols / 256;
  args.row_bytes = args.n_blocks * (Q6 ? 210 : 144);
  args.first_cta[0] = 0;
  for (int j = 0; j < args.n_jobs; ++j)
    args.first_cta[j + 1] = args.first_cta[j] + ceil_div(args.job[j].rows, R);
  const int64_t grid = args.first_cta[args.n_jobs];
  if (grid == 0) return;
  args.prefetch = prefetch_wanted(args, SWIGLU);
  launch_pdl("matvec_q8_kernel", matvec_q8_kernel<Q6, R, SWIGLU, NT>, unsigned(grid), kThreads, 0,
             stream, args);
}

// Tokens per pass of a batched product (Args::n_tok > 1): each weight block a thread decodes is
// dotted with this many inputs before the next is loaded.
constexpr int kBatchTokens = 8;

template <bool Q6>
void run_q8(int64_t cols, int64_t max_rows, Args& args, bool swiglu, const ActQ8Scratch& act,
            cudaStream_t stream) {
  if (args.n_tok >
      1) {  // a batch: at most 2 rows per block keeps acc[][][kBatchTokens] in registers
    const bool two = max_rows >= 256;
    if (swiglu)
      two ? launch_q8<Q6, 2, true, kBatchTokens>(args, cols, act, stream)
          : launch_q8<Q6, 1, true, kBatchTokens>(args, cols, act, stream);
    else
      two ? launch_q8<Q6, 2, false, kBatchTokens>(args, cols, act, stream)
          : launch_q8<Q6, 1, false, kBatchTokens>(args, cols, act, stream);
    return;
  }
  int r = max_rows >= 16384 && !swiglu ? 8 : max_rows >= 1024 ? 4 : max_rows >= 256 ? 2 : 1;
  // kernel_tuning().q8_rows = 1|2|4|8: rows per thread block for every size (bench knob, same
  // bits: a row's sum does not depend on which block computes it; SwiGLU takes at most 4).
  if (const int v = kernel_tuning().q8_rows; v == 1 || v == 2 || v == 4 || v == 8)
    r = swiglu ? std::min(v, 4) : v;
  if (swiglu) {
    if (r == 1)
      launch_q8<Q6, 1, true, 1>(args, cols, act, stream);
    else if (r == 2)
      launch_q8<Q6, 2, true, 1>(args, cols, act, stream);
    else
      launch_q8<Q6, 4, true, 1>(args, cols, act, stream);
  } else if (r == 1) {
    launch_q8<Q6, 1, false, 1>(args, cols, act, stream);
  } else if (r == 2) {
    launch_q8<Q6, 2, false, 1>(args, cols, act, stream);
  } else if (r == 4) {
    launch_q8<Q6, 4, false, 1>(args, cols, act, stream);
  } else {
    launch_q8<Q6, 8, false, 1>(args, cols, act, stream);
  }
}

template <class B, int R, bool SWIGLU, bool NORM, int NT>
void launch_kernel(Args& args, int64_t cols, cudaStream_t stream) {
  args.n_blocks = cols / B::QK;
  args.row_bytes = args.n_blocks * B::BYTES;
  args.first_cta[0] = 0;
  for (int j = 0; j < args.n_jobs; ++j)
    args.first_cta[j + 1] = args.first_cta[j] + ceil_div(args.job[j].rows, R);
  const int64_t grid = args.first_cta[args.n_jobs];
  if (grid == 0) return;
  args.prefetch = prefetch_wanted(args, SWIGLU);
  launch_pdl("matvec_kernel", matvec_kernel<B, R, SWIGLU, NORM, NT>, unsigned(grid), kThreads, 0,
             stream, args);
}

template <class B, int R, bool SWIGLU, int NT = 1>
void launch(Args& args, int64_t cols, cudaStream_t stream) {
  if (args.norm_w)
    launch_kernel<B, R, SWIGLU, true, NT>(args, cols, stream);
  else
    launch_kernel<B, R, SWIGLU, false, NT>(args, cols, stream);
}

void check_shape(TensorType type, int64_t rows, int64_t cols, const char* op) {
  if (rows <= 0 || cols <= 0 || !weight_type_supported(type, cols) || rows > (int64_t(1) << 31))
    throw Error(std::string("cuda ") + op + ": unsupported weight " + tensor_type_info(type).name +
                " of " + std::to_string(rows) + " x " + std::to_string(cols));
}

// Q6_K rows wider than this take the float path even with a scratch: on wide rows the two-term
// int8 product is load-bound (Q6_K's blocks are only 2-byte aligned) and slower than float
// activations (the 7B's 18944-wide and the 0.5B's 4864-wide ffn_down), while on the 3584-wide
// rows of the 7B's output matrix it is faster (timings in bench/NOTES.md).
// kernel_tuning().q6k_int8_max_cols (LOCKSTEP_CUDA_Q6K_INT8_MAX_COLS) sets it (a bench knob; the
// two paths differ in the last bits, both within the op tests' bounds).
int64_t q6k_int8_max_cols() {
  return kernel_tuning().q6k_int8_max_cols;
}

// Rows per thread block: 4 (2 for the two-matrix SwiGLU) so that each activation value loaded is
// used for 4 weight rows; fewer for short matrices, so that they still spread over the GPU.
void run(TensorType type, int64_t cols, Args& args, bool swiglu, const ActQ8Scratch* act,
         cudaStream_t stream) {
  int64_t max_rows = 0;
  for (int j = 0; j < args.n_jobs; ++j) max_rows = std::max(max_rows, args.job[j].rows);
  if (matvec_uses_int8(type, cols, act)) {
    if (type == TensorType::Q6_K)
      run_q8<true>(cols, max_rows, args, swiglu, *act, stream);
    else
      run_q8<false>(cols, max_rows, args, swiglu, *act, stream);
    return;
  }
  if (args.n_tok > 1) {  // a batch: two rows per block, kBatchTokens tokens per pass
    if (args.norm_w && act && act->norm_scale && args.n_tok <= act->max_tokens) {
      launch_pdl("rms_scales_kernel", rms_scales_kernel, unsigned(args.n_tok), kThreads, 0, stream,
                 args.x, args.x_stride, cols, args.eps, act->norm_scale);
      args.norm_scale = act->norm_scale;
    }
    dispatch_decoder(decoder_for(type, cols), [&](auto blk) {
      using B = decltype(blk);
      swiglu ? launch<B, 2, true, kBatchTokens>(args, cols, stream)
             : launch<B, 2, false, kBatchTokens>(args, cols, stream);
    });
    return;
  }
  // Short rows (the 0.5B's 896) give each thread one step per row, so the fixed cost of a block
  // (the fused norm's reduction, the final one) is shared by twice as many rows there.
  int r = max_rows >= 1024 ? (swiglu ? 2 : 4) : max_rows >= 256 ? 2 : 1;
  if (max_rows >= 1024 && cols <= 2048) r *= 2;
  // kernel_tuning().matvec_rows = 1|2|4|8: rows per thread block (a bench knob, same bits;
  // SwiGLU takes at most 4).
  if (const int v = kernel_tuning().matvec_rows; v == 1 || v == 2 || v == 4 || v == 8)
    r = swiglu ? std::min(v, 4) : v;
  dispatch_decoder(decoder_for(type, cols), [&](auto blk) {
    using B = decltype(blk);
    if (swiglu)
      r == 1   ? launch<B, 1, true>(args, cols, stream)
      : r == 2 ? launch<B, 2, true>(args, cols, stream)
               : launch<B, 4, true>(args, cols, stream);
    else if (r == 1)
      launch<B, 1, false>(args, cols, stream);
    else if (r == 2)
      launch<B, 2, false>(args, cols, stream);
    else if (r == 4)
      launch<B, 4, false>(args, cols, stream);
    else
      launch<B, 8, false>(args, cols, stream);
  });
}

}  // namespace

bool weight_type_supported(TensorType type, int64_t cols) {
  const Decoder dec = decoder_for(type, cols);
  if (dec == Decoder::None) return false;
  bool ok = false;
  dispatch_decoder(dec, [&](auto blk) { ok = cols % decltype(blk)::QK == 0; });
  return ok;
}

bool matvec_uses_int8(TensorType type, int64_t cols, const ActQ8Scratch* act) {
  return (type == TensorType::Q4_K || (type == TensorType::Q6_K && cols <= q6k_int8_max_cols())) &&
         cols % 256 == 0 && act && act->max_cols >= cols;
}

size_t act_q8_scratch_bytes(int64_t max_cols, int64_t max_tokens) {
  const int64_t groups = (max_cols + 31) / 32;
  return size_t(2 * align_up_256(max_cols * max_tokens) +
                2 * align_up_256(groups * max_tokens * 4) + align_up_256(max_tokens * 4) +
                align_up_256(mmq_part_floats(max_tokens) * 4) +
                align_up_256(mmq_count_ints(max_tokens) * 4));
}

ActQ8Scratch act_q8_scratch(void* device_buffer, int64_t max_cols, int64_t max_tokens) {
  const int64_t groups = (max_cols + 31) / 32;
  const int64_t q_bytes = align_up_256(max_cols * max_tokens);
  const int64_t g_bytes = align_up_256(groups * max_tokens * 4);
  uint8_t* p = static_cast<uint8_t*>(device_buffer);
  ActQ8Scratch s;
  s.xq = reinterpret_cast<int8_t*>(p);
  s.xq2 = reinterpret_cast<int8_t*>(p + q_bytes);
  s.dx = reinterpret_cast<float*>(p + 2 * q_bytes);
  s.xs = reinterpret_cast<float*>(p + 2 * q_bytes + g_bytes);
  s.norm_scale = reinterpret_cast<float*>(p + 2 * q_bytes + 2 * g_bytes);
  uint8_t* rest = p + 2 * q_bytes + 2 * g_bytes + align_up_256(max_tokens * 4);
  s.mmq_part_floats = mmq_part_floats(max_tokens);
  s.mmq_part = reinterpret_cast<float*>(rest);
  s.mmq_count_ints = mmq_count_ints(max_tokens);
  s.mmq_count = reinterpret_cast<int*>(rest + align_up_256(s.mmq_part_floats * 4));
  // The counters return to zero after every launch; they start there (after whatever the
  // caller's streams still write into the buffer, e.g. a scratch poisoned for a test).
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemset(s.mmq_count, 0, size_t(s.mmq_count_ints) * sizeof(int)));
  CUDA_CHECK(cudaDeviceSynchronize());
  s.max_cols = max_cols;
  s.max_tokens = max_tokens;
  return s;
}

namespace {

void set_tokens(Args& args, int64_t n_tok, int64_t cols, const ActQ8Scratch* act, const char* op) {
  if (n_tok < 1) throw Error(std::string("cuda ") + op + ": no tokens");
  // A scratch too small for the batch would silently switch the batch to float activations (other
  // bits than the same tokens alone): refuse instead.
  if (act && act->max_cols >= cols && n_tok > act->max_tokens)
    throw Error(std::string("cuda ") + op + ": " + std::to_string(n_tok) +
                " tokens, but the int8 scratch holds " + std::to_string(act->max_tokens));
  args.n_tok = n_tok;
  args.x_stride = cols;
}

}  // namespace

void matvec_batch(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x,
                  int64_t n_tok, float* y, const float* bias, MatvecMode mode, void* stream,
                  const ActQ8Scratch* act) {
  check_shape(type, rows, cols, "matvec");
  Args args;
  args.job[0] = {static_cast<const uint8_t*>(w), nullptr, y, bias, rows};
  args.n_jobs = 1;
  args.x = x;
  set_tokens(args, n_tok, cols, act, "matvec");
  args.accumulate = mode == MatvecMode::Accumulate;
  run(type, cols, args, false, act, as_stream(stream));
}

void matvec(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, float* y,
            const float* bias, MatvecMode mode, void* stream, const ActQ8Scratch* act) {
  matvec_batch(type, w, rows, cols, x, 1, y, bias, mode, stream, act);
}

void matvec_multi_batch(TensorType type, int64_t cols, const float* x, int64_t n_tok,
                        const MatvecTarget* targets, int n, void* stream, const float* norm_weight,
                        float eps, const ActQ8Scratch* act) {
  if (n < 1 || n > kMaxJobs) throw Error("cuda matvec_multi: 1 to 3 targets");
  Args args;
  for (int j = 0; j < n; ++j) {
    check_shape(type, targets[j].rows, cols, "matvec_multi");
    args.job[j] = {static_cast<const uint8_t*>(targets[j].w), nullptr, targets[j].y,
                   targets[j].bias, targets[j].rows};
  }
  args.n_jobs = n;
  args.x = x;
  set_tokens(args, n_tok, cols, act, "matvec_multi");
  args.norm_w = norm_weight, args.eps = eps;
  run(type, cols, args, false, act, as_stream(stream));
}

void matvec_multi(TensorType type, int64_t cols, const float* x, const MatvecTarget* targets, int n,
                  void* stream, const float* norm_weight, float eps, const ActQ8Scratch* act) {
  matvec_multi_batch(type, cols, x, 1, targets, n, stream, norm_weight, eps, act);
}

void matvec_swiglu_batch(TensorType type, const void* w_gate, const void* w_up, int64_t rows,
                         int64_t cols, const float* x, int64_t n_tok, float* y, void* stream,
                         const float* norm_weight, float eps, const ActQ8Scratch* act,
                         FfnActivation activation) {
  check_shape(type, rows, cols, "matvec_swiglu");
  Args args;
  args.job[0] = {static_cast<const uint8_t*>(w_gate), static_cast<const uint8_t*>(w_up), y, nullptr,
                 rows};
  args.n_jobs = 1;
  args.x = x;
  set_tokens(args, n_tok, cols, act, "matvec_swiglu");
  args.norm_w = norm_weight, args.eps = eps;
  args.gelu = activation == FfnActivation::GeluTanh;
  run(type, cols, args, true, act, as_stream(stream));
}

void matvec_swiglu(TensorType type, const void* w_gate, const void* w_up, int64_t rows,
                   int64_t cols, const float* x, float* y, void* stream, const float* norm_weight,
                   float eps, const ActQ8Scratch* act, FfnActivation activation) {
  matvec_swiglu_batch(type, w_gate, w_up, rows, cols, x, 1, y, stream, norm_weight, eps, act,
                      activation);
}

}  // namespace lockstep::cuda_ops
