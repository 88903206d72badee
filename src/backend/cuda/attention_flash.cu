// Prefill attention over the F16 KV cache on tensor cores (flash-attention 2 style).
//
// A thread block takes 64 query rows of one KV head: (token, head) pairs, token-major, so that
// the query heads of a GQA group share every K and V tile it loads (flash_tiles.h). Its 4 warps
// own 16 rows each and walk the key tiles of 64 that the block's queries see:
//   S = Q K^T   mma.sync m16n8k16, F16 inputs, F32 accumulators; Q is scaled and rounded to F16
//               once per block, K comes from the cache as stored;
//   softmax     online, in F32: running max and sum per row (the 4 threads of an mma row group
//               hold a row between them), the soft-cap and the mask applied to S first;
//   O += P V    P rounded to F16 straight from the S accumulators (their layout is the A
//               operand's), V through ldmatrix.trans; O stays in F32 registers.
// Tiles no query of a warp sees are skipped by that warp (whole tiles past the diagonal, before
// the window); only tiles that straddle the diagonal or the window's edge take the per-element
// mask. K and V tiles arrive by cp.async, one behind the other: V of a tile loads while S is
// computed, K of the next tile while P V is.
//
// Numerics against exact attention: q * scale and the softmax weights are rounded to F16
// (relative 2^-11 each); every sum is F32. The weights' sum is taken before their rounding.
// A NaN in a key row reaches exactly the queries that see that key (its score is replaced by the
// mask elsewhere); a NaN in a value row reaches the queries that see it and, through the zero
// weights of the mma, the other rows of the warps that multiply its tile.
#include <cmath>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/flash_tiles.h"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

using namespace flash;

constexpr int kThreads = kWarps * 32;
constexpr int kPad = 8;  // halves after each shared row: see smem_bytes
constexpr float kLog2e = 1.4426950408889634f;

// Q, K and V tiles of rows of head_dim + kPad halves. The row stride is then 16 bytes more than
// a multiple of 32 words, so the 8 rows an ldmatrix phase reads (16 bytes each) fall in 8
// distinct groups of 4 banks, and every row starts 16-byte aligned (cp.async, ldmatrix).
size_t smem_bytes(int hd) {
  return size_t(kRows + 2 * kKeys) * size_t(hd + kPad) * sizeof(__half);
}

// ---- PTX primitives (PTX ISA: cp.async, ldmatrix, "Matrix fragments for mma.m16n8k16") -------
// Lane = 4 g + s. A (16 x 16, row-major, F16 pairs): a0 = row g, k 2s..2s+1; a1 = row g+8, the
// same k; a2 = row g, k 8+2s..; a3 = row g+8, k 8+2s... B (16 x 8): b0 = k 2s..2s+1 of column
// g, b1 = k 8+2s... C (16 x 8, F32): c0, c1 = row g, columns 2s, 2s+1; c2, c3 = row g+8. The
// lower half of a pair register holds the lower k (or column).
// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of 8 x 8 matrix i; register i of lane
// 4g + s receives row g, columns 2s..2s+1 of matrix i (with .trans: rows 2s..2s+1 of column g).
// The asm that touches shared memory is volatile with a memory clobber so that it stays between
// the barriers that publish and retire the tiles.

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; with valid false nothing is read and the 16 bytes
// are zeros (src-size 0).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;" ::: "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// c += A B, F16 x F16 -> F32.
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // .x (lo) in the lower 16 bits
  return *reinterpret_cast<const uint32_t*>(&h);
}

// DMAX: the largest head size of this instantiation (64, 128, 256); hd is a multiple of 16 up to
// it. Register arrays are sized by DMAX and loops guarded by hd, so e.g. 96 runs in the 128 one.
template <int DMAX>
__global__ void __launch_bounds__(kThreads)
    attn_prefill_flash_kernel(const float* __restrict__ q, const __half* __restrict__ k_cache,
                              const __half* __restrict__ v_cache, float* __restrict__ out,
                              int n_tok, const int32_t* __restrict__ pos0p, int n_head,
                              int n_head_kv, int hd, float scale, float softcap, int window) {
  extern __shared__ uint4 smem_raw[];  // uint4: 16-byte alignment
  const int ld = hd + kPad;            // halves per shared row
  __half* Qs = reinterpret_cast<__half*>(smem_raw);
  __half* Ks = Qs + kRows * ld;
  __half* Vs = Ks + kKeys * ld;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, s = lane & 3;
  const int gqa = n_head / n_head_kv;
  const RowPacking rp = pack_rows(gqa);
  const int kvh = blockIdx.y / rp.head_chunks, g0 = (blockIdx.y % rp.head_chunks) * rp.heads;
  const int head0 = kvh * gqa + g0;  // query head of row r: head0 + r % rp.heads
  // Later tokens see more keys: the blocks that start first take them (less of a tail).
  const int q0 = int(gridDim.x - 1 - blockIdx.x) * rp.tokens;
  const int tokens_here = min(rp.tokens, n_tok - q0);
  const int pos0 = *pos0p;
  const int64_t q_stride = int64_t(n_head) * hd, kv_dim = int64_t(n_head_kv) * hd;
  const __half* k_head = k_cache + int64_t(kvh) * hd;
  const __half* v_head = v_cache + int64_t(kvh) * hd;

  // Keys [0, k_end) exist for this block (the last query's position is k_end - 1); the cache
  // rows beyond may hold anything and are never read.
  const int k_end = pos0 + q0 + tokens_here;

  // Q: scaled, rounded to F16 once. Rows without a query (past n_tok, the padding row of a
  // group of 7, heads past the group) are zeros; they are computed but never stored.
  for (int i = tid; i < kRows * (hd / 4); i += kThreads) {
    const int r = i / (hd / 4), c = 4 * (i % (hd / 4));
    const int t = r / rp.heads, gh = g0 + r % rp.heads;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (t < tokens_here && gh < gqa)
      v = *reinterpret_cast<const float4*>(q + int64_t(q0 + t) * q_stride +
                                           int64_t(head0 + r % rp.heads) * hd + c);
    __half2* dst = reinterpret_cast<__half2*>(Qs + r * ld + c);
    dst[0] = __floats2half2_rn(v.x * scale, v.y * scale);
    dst[1] = __floats2half2_rn(v.z * scale, v.w * scale);
  }

  // This warp's queries and the positions of the thread's two rows (g and g + 8 of the warp's
  // 16); rows without a query take the warp's last position so that they see something.
  const TokenSpan span = warp_tokens(warp, rp, tokens_here);
  const bool active = span.lo <= span.hi;
  const int w_lo = pos0 + q0 + span.lo, w_hi = pos0 + q0 + span.hi;
  int qpos[2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
    qpos[i] = pos0 + q0 + min((warp * kWarpRows + g + 8 * i) / rp.heads, span.hi);

  // One K or V tile: 64 rows of hd halves, 16 bytes per cp.async; rows from k_end on are zeros
  // (a zero V row times a zero weight keeps garbage, even NaN, out of the sums).
  auto load_tile = [&](__half* dst, const __half* src_head, int kt) {
    const int chunks = hd / 8;
    for (int i = tid; i < kKeys * chunks; i += kThreads) {
      const int kk = i / chunks, c = 8 * (i % chunks);
      const bool valid = kt + kk < k_end;
      const __half* src = valid ? src_head + int64_t(kt + kk) * kv_dim + c : src_head;
      cp_async16(smem_u32(dst + kk * ld + c), src, valid);
    }
    cp_async_commit();
  };

  float o[DMAX / 8][4];  // O: n-tile j holds dimensions 8j..8j+7
#pragma unroll
  for (int j = 0; j < DMAX / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // per row: running max, sum

  // ldmatrix row addresses of this lane (see the PTX notes above):
  //   Q (A operand): matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15), lane -> row lane % 16,
  //     column 8 * (lane / 16);
  //   K (B operand of S, keys as columns): matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15),
  //     (keys 8-15, d 0-7), (keys 8-15, d 8-15) give b0, b1 of key n-tile 2i and of 2i + 1;
  //   V (B operand of P V, .trans): (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15),
  //     (keys 8-15, d 8-15) give b0, b1 of dimension n-tile 2i and of 2i + 1.
  const uint32_t q_addr = smem_u32(Qs + (warp * kWarpRows + (lane & 15)) * ld + 8 * (lane >> 4));
  const uint32_t k_addr =
      smem_u32(Ks + ((lane & 7) + 8 * (lane >> 4)) * ld + 8 * ((lane >> 3) & 1));
  const uint32_t v_addr =
      smem_u32(Vs + ((lane & 7) + 8 * ((lane >> 3) & 1)) * ld + 8 * (lane >> 4));
  constexpr uint32_t kHalf = sizeof(__half);

  const int kt_begin = tiles_begin(pos0 + q0, window);
  load_tile(Ks, k_head, kt_begin);
  for (int kt = kt_begin; kt < k_end; kt += kKeys) {
    cp_async_wait_all();
    __syncthreads();  // K(kt) (and Qs) visible; every warp is done with the previous V tile
    load_tile(Vs, v_head, kt);
    // Warp-uniform: ldmatrix and mma need the whole warp.
    const int kind = active ? classify_tile(kt, w_lo, w_hi, window) : kSkip;

    float sc[kKeys / 8][4];  // S, then P: n-tile j holds keys kt + 8j .. kt + 8j + 7
    if (kind != kSkip) {
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
      for (int kd = 0; kd < DMAX / 16; ++kd) {
        if (kd < hd / 16) {
          uint32_t a[4];
          ldmatrix_x4(q_addr + kd * 16 * kHalf, a);
#pragma unroll
          for (int np = 0; np < kKeys / 16; ++np) {
            uint32_t b[4];
            ldmatrix_x4(k_addr + (np * 16 * ld + kd * 16) * kHalf, b);
            mma_f16(sc[2 * np], a, b[0], b[1]);
            mma_f16(sc[2 * np + 1], a, b[2], b[3]);
          }
        }
      }
      // Soft-cap, then the mask (a masked score is -inf whatever the cap made of it).
      if (softcap > 0.0f) {
        const float inv_cap = 1.0f / softcap;
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) sc[j][c] = softcap * tanhf(sc[j][c] * inv_cap);
      }
      if (kind == kMasked) {
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c)
            if (!key_visible(kt + 8 * j + 2 * s + (c & 1), qpos[c >> 1], window))
              sc[j][c] = -INFINITY;
      }
      // Online softmax. A row that sees no key yet (window) keeps m = -inf; its exponents are
      // then taken against 0 and give 0, never NaN (exp2(-inf - -inf)).
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float mx = m[i];
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) mx = fmaxf(mx, fmaxf(sc[j][2 * i], sc[j][2 * i + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_ref = mx == -INFINITY ? 0.0f : mx;
        const float alpha = exp2f((m[i] - m_ref) * kLog2e);
        const float neg = -m_ref * kLog2e;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) {
          sc[j][2 * i] = exp2f(fmaf(sc[j][2 * i], kLog2e, neg));
          sc[j][2 * i + 1] = exp2f(fmaf(sc[j][2 * i + 1], kLog2e, neg));
          sum += sc[j][2 * i] + sc[j][2 * i + 1];
        }
        l[i] = l[i] * alpha + sum;  // this thread's part of the row; the 4 meet at the end
        m[i] = mx;
#pragma unroll
        for (int j = 0; j < DMAX / 8; ++j) o[j][2 * i] *= alpha, o[j][2 * i + 1] *= alpha;
      }
    }

    cp_async_wait_all();
    __syncthreads();  // V(kt) visible; every warp is done with K(kt)
    if (kt + kKeys < k_end) load_tile(Ks, k_head, kt + kKeys);

    if (kind != kSkip) {
      // O += P V, 16 keys per step; P's A fragment is two adjacent S n-tiles.
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) {
        const uint32_t a[4] = {pack_half2(sc[2 * ks][0], sc[2 * ks][1]),
                               pack_half2(sc[2 * ks][2], sc[2 * ks][3]),
                               pack_half2(sc[2 * ks + 1][0], sc[2 * ks + 1][1]),
                               pack_half2(sc[2 * ks + 1][2], sc[2 * ks + 1][3])};
#pragma unroll
        for (int dp = 0; dp < DMAX / 16; ++dp) {
          if (dp < hd / 16) {
            uint32_t b[4];
            ldmatrix_x4_trans(v_addr + (ks * 16 * ld + dp * 16) * kHalf, b);
            mma_f16(o[2 * dp], a, b[0], b[1]);
            mma_f16(o[2 * dp + 1], a, b[2], b[3]);
          }
        }
      }
    }
  }

  // Rows g and g + 8: the sums of the 4 threads of the row, then O / l for rows with a query.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float li = l[i];
    li += __shfl_xor_sync(0xffffffffu, li, 1);
    li += __shfl_xor_sync(0xffffffffu, li, 2);
    const int r = warp * kWarpRows + g + 8 * i, t = r / rp.heads, gh = g0 + r % rp.heads;
    if (!active || t > span.hi || gh >= gqa) continue;
    float* dst = out + int64_t(q0 + t) * q_stride + int64_t(head0 + r % rp.heads) * hd + 2 * s;
    const float inv = 1.0f / li;
#pragma unroll
    for (int j = 0; j < DMAX / 8; ++j)
      if (j < hd / 8)
        *reinterpret_cast<float2*>(dst + 8 * j) =
            make_float2(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
  }
}

template <int DMAX>
void launch_flash(const float* q, const __half* kc, const __half* vc, float* out, int64_t n_tok,
                  const int32_t* pos0, const AttentionParams& p, cudaStream_t stream) {
  const size_t smem = smem_bytes(p.head_dim);
  CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_flash_kernel<DMAX>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const RowPacking rp = pack_rows(p.n_head / p.n_head_kv);
  const dim3 grid(unsigned(ceil_div(n_tok, rp.tokens)), unsigned(p.n_head_kv * rp.head_chunks));
  attn_prefill_flash_kernel<DMAX>
      <<<grid, kThreads, smem, stream>>>(q, kc, vc, out, int(n_tok), pos0, p.n_head, p.n_head_kv,
                                         p.head_dim, p.scale, p.softcap, p.window);
  CUDA_CHECK_LAUNCH("attn_prefill_flash_kernel");
}

}  // namespace

bool attention_prefill_uses_flash(KvType kv, const AttentionParams& p) {
  return kv == KvType::F16 && kernel_tuning().flash_prefill && p.head_dim > 0 &&
         p.head_dim % 16 == 0 && p.head_dim <= 256;
}

void attention_prefill_flash(const float* q, const void* k_cache, const void* v_cache, float* out,
                             int64_t n_tok, const int32_t* pos0, const AttentionParams& p,
                             void* stream_v) {
  if (n_tok <= 0) return;
  cudaStream_t stream = as_stream(stream_v);
  const auto* kc = static_cast<const __half*>(k_cache);
  const auto* vc = static_cast<const __half*>(v_cache);
  if (p.head_dim <= 64)
    launch_flash<64>(q, kc, vc, out, n_tok, pos0, p, stream);
  else if (p.head_dim <= 128)
    launch_flash<128>(q, kc, vc, out, n_tok, pos0, p, stream);
  else
    launch_flash<256>(q, kc, vc, out, n_tok, pos0, p, stream);
}

}  // namespace lockstep::cuda_ops
