// The Vulkan backend's operations, one function per shader: each records one dispatch into a
// Recorder (nothing runs until the command buffer is submitted). Buffers are passed as device
// addresses; shapes as counts. The op tests (tests/backend_vulkan) call these directly.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/vulkan/vk_context.h"
#include "model/hparams.h"
#include "quant/tensor_type.h"

namespace lockstep::vk {

// The weight formats the shaders decode: F32, F16 (rows of any length), Q4_0, Q5_0, Q8_0, Q4_K,
// Q6_K (rows of whole blocks).
bool weight_type_supported(TensorType type, int64_t cols);

// A matrix in its file format in device memory: row r starts at data + r * row_bytes.
struct DeviceMatrix {
  TensorType type = TensorType::F32;
  int64_t rows = 0, cols = 0;
  uint64_t row_bytes = 0;  // in device memory (device_row_bytes)
  VkDeviceAddress data = 0;
  bool padded = false;  // Q6_K blocks of kQ6kPaddedBlockBytes (to_device_layout)
};

// Q6_K's 210-byte blocks start mid-word every other block, so the shaders read their words as
// two; padded to 212 bytes at upload, every block starts on a word (the same values; the
// shaders' specialization constant 2 says which). Other types keep the file's layout.
constexpr uint32_t kQ6kPaddedBlockBytes = 212;
uint64_t device_row_bytes(TensorType type, int64_t cols, uint64_t file_row_bytes, bool pad);
// Copies `rows` rows of the file's layout (file_row_bytes apart) into dst, in the device layout
// (device_row_bytes apart; pad applies to Q6_K only).
void to_device_layout(TensorType type, int64_t rows, int64_t cols, uint64_t file_row_bytes,
                      bool pad, const uint8_t* src, uint8_t* dst);

// How the products are computed, process-wide, set by the backend from VulkanBackendOptions
// (LOCKSTEP_VULKAN_MATVEC_TEAM, _ROWS, _GROUPS, _GEMM_MIN_TOKENS): speed only. matvec.comp's
// shape, 0: chosen from the matrix (vk_ops.cpp); the team size changes a row's summation order,
// never between prefill and decode.
struct ProductTuning {
  int team = 0;             // threads per row: 4, 8, 16 or 32
  int rows_per_thread = 0;  // 1, 2 or 4
  int max_groups = 0;       // workgroups per product at most (each then takes several row groups)
  // Products of at least this many tokens over float inputs use the shared-memory tiled
  // gemm.comp (where gemm_takes); 0: never (VulkanBackendOptions's default is 5). Its sums run
  // in another order than matvec.comp's, so a prompt chunk this long gives rows that differ from
  // decode's in the last bits.
  int gemm_min_tokens = 0;
};
void set_product_tuning(const ProductTuning& tuning);

// RMSNorm taken into a product: x is the norm's input, and the product meets
// rmsnorm(x) * weight as record_rmsnorm computes it (its scale summed in another order).
struct NormFirst {
  VkDeviceAddress weight = 0;  // 0: no norm
  float eps = 0;
};

// Whether record_matmul / record_matmul_swiglu can take `norm` into a product of w with x.
bool matvec_takes_norm(const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride,
                       const NormFirst& norm);

// The int8 form of products' inputs (shaders/quantize_q8.comp): per group of 32 elements two
// int8 terms and a scale, v = dx (q + q2 / 254) to within dx / 508. The products of Q4_K and Q6_K
// matrices read it where the device has integer dot products (Context::integer_dot_product()):
// one instruction per four weights and input term instead of a dozen float ones.
bool matvec_reads_q8(TensorType type);
// 32-bit words the int8 form of one token's row of n elements takes (n a multiple of 32).
uint32_t q8_words_per_token(uint32_t n);
// Row t of `out` (q8_words_per_token(n) words apart) = the int8 form of row t of x (x_stride
// floats apart; 16-byte aligned, n a multiple of 32), or of RMSNorm's output of it with `norm`.
void record_quantize_q8(Recorder& rec, VkDeviceAddress x, uint32_t x_stride, uint32_t n, int n_tok,
                        VkDeviceAddress out, const NormFirst& norm = {});

// Whether record_matmul computes w . x for n_tok tokens of float inputs (no norm taken in, no
// int8 form) with gemm.comp: n_tok >= gemm_min_tokens, rows of a multiple of 32, x 16-byte
// aligned with x_stride a multiple of 4, and the device's shared memory holds its tiles.
bool gemm_takes(const Context& ctx, const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride,
                int n_tok);

// y[t][r] (+)= W[r] . x[t] (+ bias[r]) for t < n_tok; x rows x_stride floats apart, y rows
// y_stride apart. bias 0: none. norm: see NormFirst (only where matvec_takes_norm). q8: x's int8
// form (record_quantize_q8, with the norm taken in when there is one), read instead of x where
// matvec_reads_q8(w.type); 0: none.
void record_matmul(Recorder& rec, const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride,
                   VkDeviceAddress y, uint32_t y_stride, int n_tok, bool accumulate,
                   VkDeviceAddress bias = 0, const NormFirst& norm = {}, VkDeviceAddress q8 = 0);

// out[t] = row ids[1 + t] of `table`, as floats (table.cols each), t < n_tok.
void record_get_rows(Recorder& rec, const DeviceMatrix& table, VkDeviceAddress ids,
                     VkDeviceAddress out, int n_tok);

// Row t of y = RMSNorm(row in_first + t of x) * weight, t < n_rows; rows of n floats.
void record_rmsnorm(Recorder& rec, VkDeviceAddress x, VkDeviceAddress weight, VkDeviceAddress y,
                    uint32_t n, int n_rows, uint32_t in_first, float eps);

struct AttentionShape {
  uint32_t n_head = 0, n_head_kv = 0, head_dim = 0;
};

// RoPE of n_tok tokens' q rows (in place) and k rows at positions ids[0] + t, from `table`
// (rope_table()), and the turned k rows and the v rows (kv_dim floats each) into one layer's F16
// caches at those positions. k and v are left as they were.
void record_rope_kv_store(Recorder& rec, VkDeviceAddress q, VkDeviceAddress k, VkDeviceAddress v,
                          VkDeviceAddress table, VkDeviceAddress ids, VkDeviceAddress k_cache,
                          VkDeviceAddress v_cache, const AttentionShape& shape, uint32_t rope_dim,
                          bool neox, int n_tok);

// (cos, sin) of every (position < n_ctx, pair < rope_dim / 2): cpu_ref::rope_turn's floats, so
// the frequency factors of Llama 3.1+ (freq_factors: rope_dim / 2 values, or none) and YaRN's
// blend and magnitude (from hp) cost the shaders nothing.
std::vector<float> rope_table(const HParams& hp, int n_ctx,
                              const std::vector<float>& freq_factors = {});

// Causal attention of n_tok query rows (positions ids[0] + t) over one layer's F16 caches into
// out; scores: n_tok * n_head * n_ctx floats of scratch. With q8, the rows' int8 form as well
// (what record_quantize_q8 would write from out without a norm), where attention_writes_q8.
void record_attention(Recorder& rec, VkDeviceAddress q, VkDeviceAddress k_cache,
                      VkDeviceAddress v_cache, VkDeviceAddress out, VkDeviceAddress scores,
                      VkDeviceAddress ids, const AttentionShape& shape, uint32_t n_ctx, float scale,
                      int n_tok, VkDeviceAddress q8 = 0);
bool attention_writes_q8(const AttentionShape& shape);

// y[t][r] = silu(gate[r] . x[t]) * (up[r] . x[t]) for t < n_tok, y rows gate.rows floats apart.
// Where matvec.comp takes both matrices (the same type and shape), one dispatch computes a row
// of each and writes the product; otherwise the two products (up's into up_scratch, as big as y)
// and record_swiglu. The arithmetic of each is that of record_matmul and record_swiglu.
void record_matmul_swiglu(Recorder& rec, const DeviceMatrix& gate, const DeviceMatrix& up,
                          VkDeviceAddress x, uint32_t x_stride, VkDeviceAddress y,
                          VkDeviceAddress up_scratch, int n_tok, const NormFirst& norm = {},
                          VkDeviceAddress q8 = 0);

// gate[i] = silu(gate[i]) * up[i], i < n.
void record_swiglu(Recorder& rec, VkDeviceAddress gate, VkDeviceAddress up, uint64_t n);

// Every shader module the ops above use for these weight types (to build them up front), with
// the int8-input products where `q8` and the tiled products where `gemm`.
std::vector<std::string> pipeline_names(const std::vector<TensorType>& weight_types, bool q8,
                                        bool gemm);

}  // namespace lockstep::vk
