// Dequantization of weight rows: to F16 tiles (hi and optional lo residual) for the prefill GEMM,
// to float32 for norm weights and tests, and the embedding lookup (get_rows).
// One thread decodes one part (EPT = G*C elements) of one block, with the same decoders as the
// matrix-vector kernels, so prefill and decode see identical weight values before rounding.
#include <cmath>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/quant_blocks.cuh"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

// Output rows come from `row_ids` when given (embedding lookup; ids out of [0, n_src_rows) give
// NaN rows), else they are rows row0 + r.
template <class B, typename Out>
__global__ void dequant_kernel(const uint8_t* __restrict__ w, int64_t row0, int64_t n_rows,
                               int64_t n_blocks, int64_t row_bytes, int64_t cols,
                               const int32_t* __restrict__ row_ids, int64_t n_src_rows,
                               Out* __restrict__ hi, __half* __restrict__ lo) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t per_row = n_blocks * B::TPB;
  if (idx >= n_rows * per_row) return;
  const int64_t r = idx / per_row;
  const int64_t rem = idx - r * per_row;
  const int64_t b = rem / B::TPB;
  const int t = int(rem - b * B::TPB);

  constexpr int E = B::G * B::C;
  float v[E];
  int64_t src_row = row0 + r;
  bool valid = true;
  if (row_ids) {
    src_row = row_ids[r];
    valid = src_row >= 0 && src_row < n_src_rows;
  }
  if (valid) {
    dequant_part<B>(w + src_row * row_bytes + b * B::BYTES, t, v);
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) v[e] = __int_as_float(0x7fc00000);
  }
  const int64_t base = r * cols + b * B::QK;
#pragma unroll
  for (int g = 0; g < B::G; ++g) {
    const int64_t at = base + B::start(t, g);
    const float* f = v + g * B::C;
    if constexpr (sizeof(Out) == 4) {
#pragma unroll
      for (int c = 0; c < B::C; ++c) hi[at + c] = f[c];
    } else if constexpr (B::C % 4 == 0) {
      // Runs of 4 or 8 halves start at multiples of 4 or 8: store them 8 or 16 bytes at a time.
#pragma unroll
      for (int c = 0; c < B::C; c += 4) {
        uint32_t h[4], l[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const __half hk = __float2half_rn(f[c + k]);
          h[k] = __half_as_ushort(hk);
          l[k] = __half_as_ushort(__float2half_rn(f[c + k] - __half2float(hk)));
        }
        *reinterpret_cast<uint2*>(hi + at + c) = make_uint2(h[0] | h[1] << 16, h[2] | h[3] << 16);
        if (lo)
          *reinterpret_cast<uint2*>(lo + at + c) = make_uint2(l[0] | l[1] << 16, l[2] | l[3] << 16);
      }
    } else {
#pragma unroll
      for (int c = 0; c < B::C; ++c) {
        const __half h = __float2half_rn(f[c]);
        hi[at + c] = h;
        if (lo) lo[at + c] = __float2half_rn(f[c] - __half2float(h));
      }
    }
  }
}

// F16 tiles for the prefill GEMM, for formats whose blocks hold a multiple of 8 elements. The
// flattened (row, block) index of a tile is contiguous in the output (rows hold whole blocks), so
// a thread block decodes kCtaThreads / TPB consecutive blocks into shared memory and then writes
// its span with fully coalesced 16-byte stores.
constexpr int kCtaThreads = 256;

template <class B, bool LO>
__global__ void __launch_bounds__(kCtaThreads)
    dequant_f16_kernel(const uint8_t* __restrict__ w, int64_t row0, int64_t n_rows,
                       int64_t n_blocks, int64_t row_bytes, __half* __restrict__ hi,
                       __half* __restrict__ lo) {
  constexpr int kBlocks = kCtaThreads / B::TPB, kSpan = kBlocks * B::QK, E = B::G * B::C;
  static_assert(B::C % 4 == 0, "runs of 4 halves are stored 8 bytes at a time");
  __shared__ __align__(16) __half s_hi[kSpan];
  __shared__ __align__(16) __half s_lo[LO ? kSpan : 8];  // the residual only where asked for
  const int64_t total = n_rows * n_blocks;
  const int64_t fb0 = int64_t(blockIdx.x) * kBlocks;
  const int local = threadIdx.x / B::TPB, t = threadIdx.x % B::TPB;
  const int64_t fb = fb0 + local;
  if (fb < total) {
    const int64_t r = fb / n_blocks, b = fb - r * n_blocks;
    float v[E];
    dequant_part<B>(w + (row0 + r) * row_bytes + b * B::BYTES, t, v);
#pragma unroll
    for (int g = 0; g < B::G; ++g)
#pragma unroll
      for (int c = 0; c < B::C; c += 4) {
        const int at = local * B::QK + B::start(t, g) + c;  // a multiple of 4
        uint32_t h[4], l[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float f = v[g * B::C + c + k];
          const __half hk = __float2half_rn(f);
          h[k] = __half_as_ushort(hk);
          if constexpr (LO) l[k] = __half_as_ushort(__float2half_rn(f - __half2float(hk)));
        }
        *reinterpret_cast<uint2*>(s_hi + at) = make_uint2(h[0] | h[1] << 16, h[2] | h[3] << 16);
        if constexpr (LO)
          *reinterpret_cast<uint2*>(s_lo + at) = make_uint2(l[0] | l[1] << 16, l[2] | l[3] << 16);
      }
  }
  __syncthreads();
  const int64_t left = total - fb0;
  const int64_t n_elems = (left < kBlocks ? left : int64_t(kBlocks)) * B::QK;
  uint4* dst_hi = reinterpret_cast<uint4*>(hi + fb0 * B::QK);
  for (int64_t i = threadIdx.x; i < n_elems / 8; i += kCtaThreads) {
    dst_hi[i] = reinterpret_cast<const uint4*>(s_hi)[i];
    if constexpr (LO)
      reinterpret_cast<uint4*>(lo + fb0 * B::QK)[i] = reinterpret_cast<const uint4*>(s_lo)[i];
  }
}

template <typename Out>
void launch_dequant(TensorType type, const void* w, int64_t cols, int64_t row0, int64_t n_rows,
                    const int32_t* row_ids, int64_t n_src_rows, Out* hi, __half* lo,
                    cudaStream_t stream) {
  if (n_rows <= 0) return;
  if (cols <= 0 || !weight_type_supported(type, cols))
    throw Error(std::string("cuda dequantize: unsupported weight ") + tensor_type_info(type).name +
                " with rows of " + std::to_string(cols));
  dispatch_decoder(decoder_for(type, cols), [&](auto blk) {
    using B = decltype(blk);
    const int64_t n_blocks = cols / B::QK;
    if constexpr (sizeof(Out) == 2 && B::QK % 8 == 0) {
      if (!row_ids) {
        const int64_t grid = ceil_div(n_rows * n_blocks, kCtaThreads / B::TPB);
        if (lo)
          dequant_f16_kernel<B, true><<<unsigned(grid), kCtaThreads, 0, stream>>>(
              static_cast<const uint8_t*>(w), row0, n_rows, n_blocks, n_blocks * B::BYTES, hi, lo);
        else
          dequant_f16_kernel<B, false><<<unsigned(grid), kCtaThreads, 0, stream>>>(
              static_cast<const uint8_t*>(w), row0, n_rows, n_blocks, n_blocks * B::BYTES, hi, lo);
        CUDA_CHECK_LAUNCH("dequant_f16_kernel");
        return;
      }
    }
    const int64_t threads = n_rows * n_blocks * B::TPB;
    dequant_kernel<B, Out><<<unsigned(ceil_div(threads, kCtaThreads)), kCtaThreads, 0, stream>>>(
        static_cast<const uint8_t*>(w), row0, n_rows, n_blocks, n_blocks * B::BYTES, cols, row_ids,
        n_src_rows, hi, lo);
    CUDA_CHECK_LAUNCH("dequant_kernel");
  });
}

}  // namespace

void dequantize_rows_f16(TensorType type, const void* w, int64_t cols, int64_t row0, int64_t n_rows,
                         void* dst_hi, void* dst_lo, void* stream) {
  launch_dequant<__half>(type, w, cols, row0, n_rows, nullptr, 0, static_cast<__half*>(dst_hi),
                         static_cast<__half*>(dst_lo), as_stream(stream));
}

void dequantize_rows_f32(TensorType type, const void* w, int64_t cols, int64_t row0, int64_t n_rows,
                         float* dst, void* stream) {
  launch_dequant<float>(type, w, cols, row0, n_rows, nullptr, 0, dst, nullptr, as_stream(stream));
}

void get_rows(TensorType type, const void* w, int64_t cols, int64_t n_rows, const int32_t* ids,
              int64_t n_ids, float* dst, void* stream) {
  launch_dequant<float>(type, w, cols, 0, n_ids, ids, n_rows, dst, nullptr, as_stream(stream));
}

}  // namespace lockstep::cuda_ops
