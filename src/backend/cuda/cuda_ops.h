// Host-callable entry points of the CUDA kernels, for the backend and for the op-level tests.
// Plain C++ (no CUDA headers): device pointers are passed as typed pointers or void*, streams as
// void* (a cudaStream_t; nullptr is the default stream). Every function enqueues work
// asynchronously on the stream and throws lockstep::Error when a launch fails.
//
// Layouts: activations are row-major float32, one row of `cols` floats per token. Weights are in
// their GGUF block format, rows of row_bytes(type, cols) bytes, one row per output feature. The KV
// cache holds one row of n_head_kv * head_dim values (F16 or F32) per position.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend_options.h"
#include "backend/kv_type.h"
#include "model/hparams.h"
#include "quant/tensor_type.h"

namespace lockstep::cuda_ops {

// ---- device memory (tests and the backend's bookkeeping) ----------------------------------
void* device_alloc(size_t bytes);  // throws Error(kExitDevice) when the device is out of memory
void device_free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);  // synchronous
void copy_to_host(void* dst, const void* src, size_t bytes);    // synchronous
void device_memset(void* dst, int byte, size_t bytes);          // synchronous
void synchronize();  // waits for the device; surfaces asynchronous kernel faults as Error

// The kernels' launch choices (backend/backend_options.h). Process-wide: the CUDA backend sets
// them when it is created; the op tests set them directly. Read by the host code that launches
// the kernels, never from the environment.
void set_kernel_tuning(const CudaKernelTuning& tuning);
const CudaKernelTuning& kernel_tuning();

// True when the matrix-vector and dequantize kernels handle this weight type and row width.
bool weight_type_supported(TensorType type, int64_t cols);

// ---- matrix-vector products (decode) ------------------------------------------------------
enum class MatvecMode {
  Store,       // y = W x (+ bias)
  Accumulate,  // y += W x (+ bias): the residual add is fused
};

// Device scratch for the int8 form of one matvec input (Q4_K and Q6_K weights): groups of 32
// values as two int8 terms (x ~ dx * (xq + xq2 / 254)) with a float scale dx and the float sum of
// each group. Given one, a Q4_K/Q6_K matvec quantizes its input into it (a small launch before
// the product) and dots the weights with dp4a; without one it uses float activations.
// One scratch per stream: its contents live from the quantizing launch to the product after it.
// A batched product (matvec_batch and friends) needs room for each of its tokens.
struct ActQ8Scratch {
  int8_t* xq = nullptr;   // max_cols * max_tokens values: rint(x / dx)
  int8_t* xq2 = nullptr;  // max_cols * max_tokens values: rint((x / dx - xq) * 254)
  float* dx = nullptr;    // max_cols / 32 * max_tokens scales
  float* xs = nullptr;    // max_cols / 32 * max_tokens sums
  // max_tokens RMS-norm scales of a batched product's inputs, computed once per product rather
  // than in every thread block (the fused pre-norm of the float path)
  float* norm_scale = nullptr;
  // The split products of the tiled mmq kernel (mmq.cu): their partial sums and one arrival
  // counter per output tile (zero between launches).
  float* mmq_part = nullptr;
  int* mmq_count = nullptr;
  int64_t mmq_part_floats = 0, mmq_count_ints = 0;
  int64_t max_cols = 0;
  int64_t max_tokens = 1;
};
// The sizes act_q8_scratch gives mmq_part and mmq_count for max_tokens tokens.
int64_t mmq_part_floats(int64_t max_tokens);
int64_t mmq_count_ints(int64_t max_tokens);
size_t act_q8_scratch_bytes(int64_t max_cols, int64_t max_tokens = 1);
// Carves a scratch out of act_q8_scratch_bytes(max_cols, max_tokens) bytes of device memory
// (256-aligned).
ActQ8Scratch act_q8_scratch(void* device_buffer, int64_t max_cols, int64_t max_tokens = 1);
// True when a product of this weight type and row width, given `act`, takes the int8 path (Q4_K,
// Q6_K up to kernel_tuning().q6k_int8_max_cols wide, a scratch wide enough); else its input stays
// float.
bool matvec_uses_int8(TensorType type, int64_t cols, const ActQ8Scratch* act);

// W: rows x cols in format `type`; x: cols floats; y: rows floats; bias: rows floats or nullptr.
// act: see ActQ8Scratch (nullptr: float activations for every type).
void matvec(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, float* y,
            const float* bias, MatvecMode mode, void* stream, const ActQ8Scratch* act = nullptr);

// Up to three products y_j = W_j x (+ bias_j) with weights of one type and width, in one launch
// (the Q, K and V projections). With norm_weight, x is first RMS-normalised in the same launch:
// x / sqrt(mean(x^2) + eps) * norm_weight (the layer's pre-norm fused into its projections).
struct MatvecTarget {
  const void* w = nullptr;
  int64_t rows = 0;
  float* y = nullptr;
  const float* bias = nullptr;
};
void matvec_multi(TensorType type, int64_t cols, const float* x, const MatvecTarget* targets, int n,
                  void* stream, const float* norm_weight = nullptr, float eps = 0.0f,
                  const ActQ8Scratch* act = nullptr);

// y = silu(W_gate x) * (W_up x), both weights of the same type and shape (the fused FFN input);
// norm_weight as for matvec_multi. activation GeluTanh: y = gelu_tanh(W_gate x) * (W_up x)
// (gemma's GeGLU), the GELU computed in float64 as the CPU reference does.
void matvec_swiglu(TensorType type, const void* w_gate, const void* w_up, int64_t rows,
                   int64_t cols, const float* x, float* y, void* stream,
                   const float* norm_weight = nullptr, float eps = 0.0f,
                   const ActQ8Scratch* act = nullptr,
                   FfnActivation activation = FfnActivation::Silu);

// The same three products for n_tok tokens at once (a batched decode step): x holds n_tok rows of
// cols floats, y (each target's) n_tok rows of `rows` floats. The weights are read once per call,
// and each token's row is bit for bit what the single-token call gives for that token alone (batch
// invariance). With an int8 scratch, it must hold n_tok tokens (Error otherwise).
void matvec_batch(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x,
                  int64_t n_tok, float* y, const float* bias, MatvecMode mode, void* stream,
                  const ActQ8Scratch* act = nullptr);
void matvec_multi_batch(TensorType type, int64_t cols, const float* x, int64_t n_tok,
                        const MatvecTarget* targets, int n, void* stream,
                        const float* norm_weight = nullptr, float eps = 0.0f,
                        const ActQ8Scratch* act = nullptr);
void matvec_swiglu_batch(TensorType type, const void* w_gate, const void* w_up, int64_t rows,
                         int64_t cols, const float* x, int64_t n_tok, float* y, void* stream,
                         const float* norm_weight = nullptr, float eps = 0.0f,
                         const ActQ8Scratch* act = nullptr,
                         FfnActivation activation = FfnActivation::Silu);

// ---- quantized matrix products for small batches (mmq.cu) -----------------------------------
// The batched decode step's products on the int8 tensor cores: each token's input is quantized
// once into `act` (which must hold n_tok tokens of cols) as the int8 matvecs do, and each weight
// block is read once per 64 tokens. Shapes, targets, bias, mode and norm_weight as for the
// matvec_*_batch functions above. A row's result does not depend on the batch (any n_tok >= 1
// gives the same bits for a token), but it differs in the last bits from the matvecs' (another
// summation order); both stay within the two-term input's error bound (mmq_gpu_test.cpp).
// True for Q4_0, Q5_0, Q8_0 (cols % 32 == 0) and Q4_K, Q6_K (cols % 256 == 0).
bool mmq_supported(TensorType type, int64_t cols);
void mmq(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t n_tok,
         float* y, const float* bias, MatvecMode mode, void* stream, const ActQ8Scratch& act);
void mmq_multi(TensorType type, int64_t cols, const float* x, int64_t n_tok,
               const MatvecTarget* targets, int n, void* stream, const float* norm_weight,
               float eps, const ActQ8Scratch& act);
void mmq_swiglu(TensorType type, const void* w_gate, const void* w_up, int64_t rows, int64_t cols,
                const float* x, int64_t n_tok, float* y, void* stream, const float* norm_weight,
                float eps, const ActQ8Scratch& act);

// ---- dequantization (prefill GEMM tiles, embeddings, norm weights) --------------------------
// Rows row0 .. row0 + n_rows - 1 of W to F16 (dst_hi, n_rows x cols). When dst_lo is not null it
// receives the F16 rounding residual, so that hi + lo represents each value to ~22 bits.
void dequantize_rows_f16(TensorType type, const void* w, int64_t cols, int64_t row0, int64_t n_rows,
                         void* dst_hi, void* dst_lo, void* stream);
// The same to float32.
void dequantize_rows_f32(TensorType type, const void* w, int64_t cols, int64_t row0, int64_t n_rows,
                         float* dst, void* stream);
// Embedding lookup: dst row i = W row ids[i] (ids in device memory). An id outside [0, n_rows)
// yields a row of NaN rather than a read out of bounds.
void get_rows(TensorType type, const void* w, int64_t cols, int64_t n_rows, const int32_t* ids,
              int64_t n_ids, float* dst, void* stream);

// ---- GEMM through cuBLAS (prefill) --------------------------------------------------------
// Y[n_tok x rows] (leading dimension ldy) = X[n_tok x cols] * W^T, or += with accumulate.
// W is dequantized tile by tile (at most tile_elems values at a time) to F16 and multiplied with
// cublasGemmEx (F16 x F16 -> F32, FP32 accumulation). With `precise`, both operands are split
// into F16 hi + lo parts and three products are summed, which gives close to FP32 accuracy.
class Matmul {
 public:
  Matmul(size_t max_cols_x_tokens, size_t tile_elems, bool precise);
  ~Matmul();
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;

  void run(TensorType type, const void* w, int64_t rows, int64_t cols, const float* x,
           int64_t n_tok, float* y, int64_t ldy, bool accumulate, void* stream);
  size_t device_bytes() const;  // scratch held by this object

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- greedy picks (argmax.cu) ----------------------------------------------------------------
// out[r] = greedy_pick (backend/greedy_pick.h) of the first `cols` of row r of `logits` (rows of
// `stride` floats): the lowest id of the largest value, or -1 for a row with a NaN or +inf or no
// finite value.
void greedy_pick_rows(const float* logits, int64_t stride, int64_t rows, int64_t cols, int32_t* out,
                      void* stream);

// ---- normalisation, activation, elementwise -----------------------------------------------
// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for each of `rows` rows (in place allowed).
void rmsnorm(const float* x, const float* weight, float* y, int64_t rows, int64_t cols, float eps,
             void* stream);
// Gemma's post-norms: h[r] += x[r] / sqrt(mean(x[r]^2) + eps) * weight, for each of `rows` rows
// (the block output normalised, then the residual add; the same arithmetic as rmsnorm).
void rmsnorm_add(const float* x, const float* weight, float* h, int64_t rows, int64_t cols,
                 float eps, void* stream);
// y = silu(gate) * up, n elements.
void swiglu(const float* gate, const float* up, float* y, int64_t n, void* stream);
// y = gelu_tanh(gate) * up, n elements (GeGLU; the GELU in float64 like the CPU reference).
void geglu(const float* gate, const float* up, float* y, int64_t n, void* stream);
// x[i] = cap * tanh(x[i] / cap) in float64, n elements (gemma2's final logits soft-cap).
void softcap(float* x, int64_t n, float cap, void* stream);
// x[i] *= s, n elements (gemma's embedding scale).
void scale(float* x, int64_t n, float s, void* stream);
// y[r][c] += bias[c] for rows x cols.
void add_bias(float* y, const float* bias, int64_t rows, int64_t cols, void* stream);

// ---- rotary embedding and the KV cache ----------------------------------------------------
// Element type of the KV cache (backend/kv_type.h): F16 by default, F32 on request.
using lockstep::kv_type_bytes;
using lockstep::KvType;

// Table of the rope_dim/2 inverse frequencies base^(-2i/rope_dim), in float64 on the device.
double* make_rope_table(float freq_base, int rope_dim);  // free with device_free

struct RopeParams {
  int n_head = 0, n_head_kv = 0, head_dim = 0, rope_dim = 0;
  RopeType type = RopeType::Normal;
  float freq_scale = 1.0f;
  const double* inv_freq = nullptr;  // make_rope_table
  // Llama 3.1+ frequency factors (device, rope_dim/2 floats): pair i's frequency is divided by
  // freq_factors[i]; nullptr: none.
  const float* freq_factors = nullptr;
  // YaRN, as the CPU reference's RopeParams (backend/cpu/ops_ref.h): pair i's angle blends the
  // scaled and unscaled angle by a ramp over pairs [yarn_low, yarn_high]; cos and sin are
  // multiplied by mscale.
  bool yarn = false;
  double yarn_low = 0, yarn_high = 0, mscale = 1.0;
};

// For token i (position *pos0 + i, pos0 read from device memory so CUDA graphs stay valid):
// rotates q (n_tok x n_head*head_dim) in place, rotates k and writes it, and v, into row
// *pos0 + i of the caches (each n_ctx x n_head_kv*head_dim of type kv).
void rope_and_store_kv(float* q, const float* k, const float* v, void* k_cache, void* v_cache,
                       KvType kv, int64_t n_tok, const int32_t* pos0, const RopeParams& p,
                       void* stream);

// Where the tokens of a batched decode step go (device arrays of n_tok entries each): token i is
// at position pos[i] of sequence seq[i], whose cache rows start seq[i] * seq_rows rows into the
// layer's cache (k_cache / v_cache point at sequence 0).
struct TokenRows {
  const int32_t* pos = nullptr;
  const int32_t* seq = nullptr;
  int64_t seq_rows = 0;
};
// rope_and_store_kv for tokens at their own positions and sequences.
void rope_and_store_kv_rows(float* q, const float* k, const float* v, void* k_cache, void* v_cache,
                            KvType kv, int64_t n_tok, const TokenRows& rows, const RopeParams& p,
                            void* stream);

// ---- attention ----------------------------------------------------------------------------
struct AttentionParams {
  int n_head = 0, n_head_kv = 0, head_dim = 0;
  float scale = 1.0f;  // usually 1/sqrt(head_dim)
  // gemma2: score = softcap * tanh(score / softcap) before the mask and softmax; 0: none.
  float softcap = 0;
  // Sliding window: a query at position p sees positions p - window + 1 .. p (itself included);
  // 0: all of 0 .. p.
  int window = 0;
};

// One query token at position *pos (device memory), keys 0..*pos from the caches. The sequence is
// split into chunks of kAttnSplit positions processed in parallel and merged (flash-decoding);
// the grid covers max_ctx positions and idle chunks exit at once, so a captured graph stays valid
// as the position advances. `partials` needs attention_decode_scratch_floats(...) floats.
constexpr int kAttnSplit = 32;
size_t attention_decode_scratch_floats(int max_ctx, const AttentionParams& p);
void attention_decode(const float* q, const void* k_cache, const void* v_cache, KvType kv,
                      float* out, float* partials, const int32_t* pos, int max_ctx,
                      const AttentionParams& p, void* stream);

// attention_decode for n_tok query tokens (rows of q and out), each over its own sequence's
// positions 0..rows.pos[i]; every token's arithmetic is the single-token kernel's. max_ctx bounds
// the positions of this call (the grid); partials holds n_tok * attention_decode_scratch_floats(
// max_ctx_of_the_cache, p) floats, token i's at i * that.
void attention_decode_rows(const float* q, const void* k_cache, const void* v_cache, KvType kv,
                           float* out, float* partials, size_t partials_per_token, int64_t n_tok,
                           const TokenRows& rows, int max_ctx, const AttentionParams& p,
                           void* stream);

// Causal attention for n_tok query tokens at positions *pos0 .. *pos0 + n_tok - 1 whose keys and
// values (and all earlier ones) are already in the caches. Online softmax over key tiles: the
// score matrix is never materialised. q, out: n_tok x n_head*head_dim.
void attention_prefill(const float* q, const void* k_cache, const void* v_cache, KvType kv,
                       float* out, int64_t n_tok, const int32_t* pos0, const AttentionParams& p,
                       void* stream);

// Whether attention_prefill takes the tensor-core kernel (attention_flash.cu): an F16 cache,
// head_dim a multiple of 16 (at most 256), and CudaKernelTuning::flash_prefill on. Otherwise
// it runs the FP32 CUDA-core kernel.
bool attention_prefill_uses_flash(KvType kv, const AttentionParams& p);
// The tensor-core kernel itself, for what attention_prefill_uses_flash accepts (F16 caches).
void attention_prefill_flash(const float* q, const void* k_cache, const void* v_cache, float* out,
                             int64_t n_tok, const int32_t* pos0, const AttentionParams& p,
                             void* stream);

// ---- fault injection (TEST KNOB, backend/fault.h) ------------------------------------------
// Same pseudo-random values as the CPU reference's faults (splitmix64 of the same keys).
// LayerCorrupt: h[i] += (hash4(key, layer, position, i) & 1 ? -magnitude : magnitude), i < n;
// key 1 (LayerCorrupt) or 3 (BatchCorrupt), as the CPU backends use them.
void fault_corrupt_hidden(float* h, int64_t n, int layer, int position, float magnitude,
                          void* stream, uint64_t key = 1);
// KvDrift: every K and V value of positions [pos_begin, pos_end) of one layer's cache moves by
// scale * unit_noise(hash4(2, layer, pos << 32 | i, 0 for K / 1 for V)).
void fault_drift_kv(void* k_cache, void* v_cache, KvType kv, int64_t kv_dim, int layer,
                    int64_t pos_begin, int64_t pos_end, float scale, void* stream);
// x[0..n) = NaN.
void fill_nan(float* x, int64_t n, void* stream);

}  // namespace lockstep::cuda_ops
