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
// Activations stay float32 and sums are float32: no activation quantization.
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/quant_blocks.cuh"

namespace lockstep::cuda_ops {

using namespace lockstep::cuda;

namespace {

constexpr int kThreads = 128;
constexpr int kMaxJobs = 3;

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
  bool accumulate = false;
  const float* norm_w = nullptr;  // fused pre-norm: x is RMS-normalised and scaled by norm_w
  float eps = 0.0f;
};

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

__device__ __forceinline__ float silu(float g) {
  return g / (1.0f + expf(-g));
}

template <class B, int R, bool SWIGLU, bool NORM>
__global__ void __launch_bounds__(kThreads) matvec_kernel(const Args args) {
  constexpr int NMAT = SWIGLU ? 2 : 1;
  constexpr int kSlots = kThreads / B::TPB;
  constexpr int E = B::G * B::C;
  int j = 0;
#pragma unroll
  for (int k = 1; k < kMaxJobs; ++k)
    if (k < args.n_jobs && int64_t(blockIdx.x) >= args.first_cta[k]) j = k;
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
  float scale = 1.0f;
  if constexpr (NORM) scale = rms_scale(args.x, args.n_blocks * B::QK, args.eps);
  float acc[NMAT][R];
#pragma unroll
  for (int m = 0; m < NMAT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.0f;

  for (int64_t b = slot; b < args.n_blocks; b += kSlots) {
    float xv[E], xs[B::G];
    load_x<B>(args.x + b * B::QK, t, xv);
    if constexpr (NORM) {
      float nw[E];
      load_x<B>(args.norm_w + b * B::QK, t, nw);
#pragma unroll
      for (int e = 0; e < E; ++e) xv[e] = (xv[e] * scale) * nw[e];  // as norm.cu computes it
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
      for (int r = 0; r < R; ++r) acc[m][r] += block_dot<B>(wr[m][r] + b * B::BYTES, t, xv, xs);
  }

  __shared__ float red[kThreads / 32][NMAT * R];
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int m = 0; m < NMAT; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[m][r]);
      if (lane == 0) red[warp][m * R + r] = v;
    }
  __syncthreads();
  if (tid < R && row0 + tid < job.rows) {
    const int64_t row = row0 + tid;
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) {
      s0 += red[w][tid];
      if constexpr (SWIGLU) s1 += red[w][R + tid];
    }
    if constexpr (SWIGLU) {
      job.y[row] = silu(s0) * s1;
    } else {
      if (job.bias) s0 += job.bias[row];
      if (args.accumulate) s0 += job.y[row];
      job.y[row] = s0;
    }
  }
}

template <class B, int R, bool SWIGLU, bool NORM>
void launch_kernel(Args& args, int64_t cols, cudaStream_t stream) {
  args.n_blocks = cols / B::QK;
  args.row_bytes = args.n_blocks * B::BYTES;
  args.first_cta[0] = 0;
  for (int j = 0; j < args.n_jobs; ++j)
    args.first_cta[j + 1] = args.first_cta[j] + ceil_div(args.job[j].rows, R);
  const int64_t grid = args.first_cta[args.n_jobs];
  if (grid == 0) return;
  matvec_kernel<B, R, SWIGLU, NORM><<<unsigned(grid), kThreads, 0, stream>>>(args);
  CUDA_CHECK_LAUNCH("matvec_kernel");
}

template <class B, int R, bool SWIGLU>
void launch(Args& args, int64_t cols, cudaStream_t stream) {
  if (args.norm_w)
    launch_kernel<B, R, SWIGLU, true>(args, cols, stream);
  else
    launch_kernel<B, R, SWIGLU, false>(args, cols, stream);
}

void check_shape(TensorType type, int64_t rows, int64_t cols, const char* op) {
  if (rows <= 0 || cols <= 0 || !weight_type_supported(type, cols) || rows > (int64_t(1) << 31))
    throw Error(std::string("cuda ") + op + ": unsupported weight " + tensor_type_info(type).name +
                " of " + std::to_string(rows) + " x " + std::to_string(cols));
}

// Rows per thread block: 4 (2 for the two-matrix SwiGLU) so that each activation value loaded is
// used for 4 weight rows; fewer for short matrices, so that they still spread over the GPU.
void run(TensorType type, int64_t cols, Args& args, bool swiglu, cudaStream_t stream) {
  int64_t max_rows = 0;
  for (int j = 0; j < args.n_jobs; ++j) max_rows = std::max(max_rows, args.job[j].rows);
  const int r = max_rows >= 1024 ? (swiglu ? 2 : 4) : max_rows >= 256 ? 2 : 1;
  dispatch_decoder(decoder_for(type, cols), [&](auto blk) {
    using B = decltype(blk);
    if (swiglu)
      r == 1 ? launch<B, 1, true>(args, cols, stream) : launch<B, 2, true>(args, cols, stream);
    else if (r == 1)
      launch<B, 1, false>(args, cols, stream);
    else if (r == 2)
      launch<B, 2, false>(args, cols, stream);
    else
      launch<B, 4, false>(args, cols, stream);
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

void matvec(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, float* y,
            const float* bias, MatvecMode mode, void* stream) {
  check_shape(type, rows, cols, "matvec");
  Args args;
  args.job[0] = {static_cast<const uint8_t*>(w), nullptr, y, bias, rows};
  args.n_jobs = 1;
  args.x = x;
  args.accumulate = mode == MatvecMode::Accumulate;
  run(type, cols, args, false, as_stream(stream));
}

void matvec_multi(TensorType type, int64_t cols, const float* x, const MatvecTarget* targets, int n,
                  void* stream, const float* norm_weight, float eps) {
  if (n < 1 || n > kMaxJobs) throw Error("cuda matvec_multi: 1 to 3 targets");
  Args args;
  for (int j = 0; j < n; ++j) {
    check_shape(type, targets[j].rows, cols, "matvec_multi");
    args.job[j] = {static_cast<const uint8_t*>(targets[j].w), nullptr, targets[j].y,
                   targets[j].bias, targets[j].rows};
  }
  args.n_jobs = n;
  args.x = x;
  args.norm_w = norm_weight, args.eps = eps;
  run(type, cols, args, false, as_stream(stream));
}

void matvec_swiglu(TensorType type, const void* w_gate, const void* w_up, int64_t rows,
                   int64_t cols, const float* x, float* y, void* stream, const float* norm_weight,
                   float eps) {
  check_shape(type, rows, cols, "matvec_swiglu");
  Args args;
  args.job[0] = {static_cast<const uint8_t*>(w_gate), static_cast<const uint8_t*>(w_up), y, nullptr,
                 rows};
  args.n_jobs = 1;
  args.x = x;
  args.norm_w = norm_weight, args.eps = eps;
  run(type, cols, args, true, as_stream(stream));
}

}  // namespace lockstep::cuda_ops
