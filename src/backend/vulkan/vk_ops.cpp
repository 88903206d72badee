#include "backend/vulkan/vk_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backend/cpu/ops_ref.h"
#include "util/error.h"

namespace lockstep::vk {

namespace {

// Must match the shaders' kRowsPerGridX and kTile (shaders/matmul.comp), and kThreads,
// kGroupsPerGridX and TOKENS (shaders/matvec.comp, shaders.cmake).
constexpr uint32_t kRowsPerGridX = 32768;
constexpr uint32_t kMatmulTile = 8;
constexpr uint32_t kMatvecThreads = 128;
constexpr uint32_t kMatvecGroupsPerGridX = 32768;
constexpr uint32_t kMatvecTileTokens = 8;
// Must match gemm.comp: its tile (rows x tokens) and its shared memory (two tiles of 64 x 36
// floats).
constexpr uint32_t kGemmTileRows = 64, kGemmTileTokens = 64, kGemmSharedBytes = 2 * 64 * 36 * 4;
// Up to this many tokens, matvec_<type> (one token per grid layer: the weights read once per
// token) beats matvec_tile_<type> (8 tokens per layer) by using more of the machine.
constexpr int kMatvecMaxTokens = 4;

const char* type_suffix(TensorType type) {
  switch (type) {
    case TensorType::F32:
      return "f32";
    case TensorType::F16:
      return "f16";
    case TensorType::Q4_0:
      return "q4_0";
    case TensorType::Q5_0:
      return "q5_0";
    case TensorType::Q8_0:
      return "q8_0";
    case TensorType::Q4_K:
      return "q4_k";
    case TensorType::Q6_K:
      return "q6_k";
    default:
      return nullptr;
  }
}

std::string module_name(const char* shader, TensorType type) {
  const char* suffix = type_suffix(type);
  if (!suffix)
    throw Error(std::string("vulkan: no shader for weight type ") + tensor_type_info(type).name);
  return std::string(shader) + "_" + suffix;
}

uint32_t ceil_div(uint64_t a, uint64_t b) {
  return uint32_t((a + b - 1) / b);
}

struct MatmulPush {
  uint64_t w, x, y, bias;
  uint32_t rows, cols, row_bytes, n_tok, x_stride, y_stride, flags;
  uint64_t w2 = 0;      // matvec.comp only: the up matrix (flags & 4)
  uint64_t norm_w = 0;  // matvec.comp only: RMSNorm first (flags & 8)
  float norm_eps = 0;
};
constexpr uint32_t kAccumulate = 1, kAddBias = 2, kSwiglu = 4, kNorm = 8;  // MatmulPush::flags

ProductTuning g_tuning;

// matvec.comp's threads per row: a warp's worth (32) unless the row has fewer units. Measured on
// an H100 (bench/NOTES.md): teams of 8 or 16 with more units per thread, and 2 or 4 rows per
// thread, were all slower than 32 threads on one row; latency, not work per thread, rules there.
uint32_t matvec_team(uint64_t units) {
  if (g_tuning.team) return uint32_t(g_tuning.team);
  uint32_t team = 32;
  while (team > 4 && units < team) team /= 2;
  return team;
}

// Elements in one of dot_unit.glsl's units of each type (q8: with the int8 form of the inputs).
uint64_t matvec_unit_elems(TensorType type, bool q8) {
  switch (type) {
    case TensorType::F32:
    case TensorType::F16:
      return 4;
    case TensorType::Q4_K:
      return q8 ? 32 : 16;
    case TensorType::Q6_K:
      return 32;
    default:
      return 8;  // Q4_0, Q5_0, Q8_0
  }
}

uint32_t matvec_rows_per_thread() {
  return g_tuning.rows_per_thread ? uint32_t(g_tuning.rows_per_thread) : 1;
}
struct GetRowsPush {
  uint64_t w, ids, out;
  uint32_t cols, row_bytes, n_tok;
};
struct RmsnormPush {
  uint64_t x, weight, y;
  uint32_t n, in_first;
  float eps;
  uint32_t vec4s;
};
struct RopeKvStorePush {
  uint64_t q, k, v, table, ids, k_cache, v_cache;
  uint32_t n_head, n_head_kv, head_dim, rope_dim, neox, n_tok;
};
struct AttentionPush {
  uint64_t q, k_cache, v_cache, out, scores, ids;
  uint32_t n_head, n_head_kv, head_dim, n_ctx;
  float scale;
  uint32_t flags;  // 1: q8 too
  uint64_t q8;
};
struct QuantizeQ8Push {
  uint64_t x, norm_w, out;
  uint32_t n, x_stride;
  float eps;
  uint32_t flags;  // 1: RMSNorm first
};
constexpr uint32_t kQuantizeThreads = 64;  // shaders/quantize_q8.comp: one thread per group
struct SwigluPush {
  uint64_t gate, up;
  uint32_t n;
};

}  // namespace

uint64_t device_row_bytes(TensorType type, int64_t cols, uint64_t file_row_bytes, bool pad) {
  if (type != TensorType::Q6_K || !pad) return file_row_bytes;
  return uint64_t(cols / 256) * kQ6kPaddedBlockBytes;
}

void to_device_layout(TensorType type, int64_t rows, int64_t cols, uint64_t file_row_bytes,
                      bool pad, const uint8_t* src, uint8_t* dst) {
  const uint64_t dev = device_row_bytes(type, cols, file_row_bytes, pad);
  if (dev == file_row_bytes) {
    std::memcpy(dst, src, size_t(file_row_bytes * uint64_t(rows)));
    return;
  }
  const int64_t blocks = cols / 256;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* out = dst + uint64_t(r) * dev + uint64_t(b) * kQ6kPaddedBlockBytes;
      std::memcpy(out, src + uint64_t(r) * file_row_bytes + uint64_t(b) * 210, 210);
      out[210] = out[211] = 0;
    }
}

void set_product_tuning(const ProductTuning& t) {
  g_tuning = t;
}

bool weight_type_supported(TensorType type, int64_t cols) {
  // Plain types: any length (the shaders mask the last chunk); block types: whole blocks.
  return type_suffix(type) != nullptr && cols % tensor_type_info(type).block_elems == 0;
}

namespace {

// matvec.comp reads x as vec4s and the weights in whole 32-element units; matmul.comp takes what
// does not fit (F32 and F16 rows of other lengths, unaligned inputs).
bool matvec_fits(const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride) {
  return x % 16 == 0 && x_stride % 4 == 0 && w.cols % 32 == 0 && w.data % 4 == 0;
}

MatmulPush matmul_push(const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride,
                       VkDeviceAddress y, uint32_t y_stride, int n_tok, uint32_t flags,
                       VkDeviceAddress bias) {
  return MatmulPush{w.data,
                    x,
                    y,
                    bias,
                    uint32_t(w.rows),
                    uint32_t(w.cols),
                    uint32_t(w.row_bytes),
                    uint32_t(n_tok),
                    x_stride,
                    y_stride,
                    flags};
}

void add_norm(MatmulPush& p, const NormFirst& norm) {
  if (!norm.weight) return;
  p.flags |= kNorm;
  p.norm_w = norm.weight;
  p.norm_eps = norm.eps;
}

// Specialization constant 2 of the shaders that read Q6_K (kQ6kBlockBytes, common.glsl): its
// block stride. team and rows: matvec.comp's constants 0 and 1 (others ignore them). Empty (the
// modules' defaults, the pipelines built at load) where all are the defaults.
Specialization weight_spec(const DeviceMatrix& w, uint32_t team = 32, uint32_t rows = 1) {
  const bool padded = w.type == TensorType::Q6_K && w.padded;
  if (!padded && team == 32 && rows == 1) return {};
  if (!padded) return {team, rows};
  return {team, rows, kQ6kPaddedBlockBytes};
}

// matvec.comp's shape (its specialization constants: team, rows per thread) comes from the
// matrix alone; rows_per_thread 0: matvec_rows_per_thread().
void dispatch_matvec(Recorder& rec, const DeviceMatrix& w, const MatmulPush& p, int n_tok,
                     bool q8 = false, uint32_t rows_per_thread = 0) {
  const bool one_per_layer = n_tok <= kMatvecMaxTokens;
  const uint32_t team = matvec_team(uint64_t(w.cols) / matvec_unit_elems(w.type, q8));
  if (!rows_per_thread) rows_per_thread = matvec_rows_per_thread();
  uint32_t groups = ceil_div(w.rows, kMatvecThreads / team * rows_per_thread);
  if (g_tuning.max_groups > 0)
    groups = std::min(groups, uint32_t(std::min(g_tuning.max_groups, 32768)));
  const char* shader =
      one_per_layer ? (q8 ? "matvec_q8" : "matvec") : (q8 ? "matvec_tile_q8" : "matvec_tile");
  rec.dispatch(module_name(shader, w.type).c_str(), weight_spec(w, team, rows_per_thread), p,
               std::min(groups, kMatvecGroupsPerGridX), ceil_div(groups, kMatvecGroupsPerGridX),
               one_per_layer ? uint32_t(n_tok) : ceil_div(n_tok, kMatvecTileTokens));
}

}  // namespace

bool matvec_reads_q8(TensorType type) {
  return type == TensorType::Q4_K || type == TensorType::Q6_K;
}

uint32_t q8_words_per_token(uint32_t n) {
  return n / 4 * 2 + n / 32 * 2;  // both terms, the scales and the sums
}

void record_quantize_q8(Recorder& rec, VkDeviceAddress x, uint32_t x_stride, uint32_t n, int n_tok,
                        VkDeviceAddress out, const NormFirst& norm) {
  if (n % 32 != 0 || x % 16 != 0 || x_stride % 4 != 0 || norm.weight % 16 != 0)
    throw Error("vulkan: the int8 form needs 16-byte aligned rows of a multiple of 32 floats");
  QuantizeQ8Push p{x, norm.weight, out, n, x_stride, norm.eps, norm.weight ? 1u : 0u};
  rec.dispatch("quantize_q8", p, ceil_div(n / 32, kQuantizeThreads), uint32_t(n_tok));
}

bool matvec_takes_norm(const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride,
                       const NormFirst& norm) {
  return matvec_fits(w, x, x_stride) && norm.weight % 16 == 0;
}

bool gemm_takes(const Context& ctx, const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride,
                int n_tok) {
  return g_tuning.gemm_min_tokens > 0 && n_tok >= g_tuning.gemm_min_tokens &&
         matvec_fits(w, x, x_stride) && ctx.max_shared_bytes() >= kGemmSharedBytes;
}

namespace {

// Whether record_matmul's arguments send it to gemm.comp: float inputs, nothing taken in.
bool uses_gemm(const Recorder& rec, const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride,
               int n_tok, const NormFirst& norm, VkDeviceAddress q8) {
  return !norm.weight && !(q8 && matvec_reads_q8(w.type)) &&
         gemm_takes(rec.context(), w, x, x_stride, n_tok);
}

}  // namespace

void record_matmul(Recorder& rec, const DeviceMatrix& w, VkDeviceAddress x, uint32_t x_stride,
                   VkDeviceAddress y, uint32_t y_stride, int n_tok, bool accumulate,
                   VkDeviceAddress bias, const NormFirst& norm, VkDeviceAddress q8) {
  const uint32_t flags = (accumulate ? kAccumulate : 0u) | (bias ? kAddBias : 0u);
  if (uses_gemm(rec, w, x, x_stride, n_tok, norm, q8)) {
    const MatmulPush p = matmul_push(w, x, x_stride, y, y_stride, n_tok, flags, bias);
    return rec.dispatch(module_name("gemm", w.type).c_str(), weight_spec(w), p,
                        ceil_div(w.rows, kGemmTileRows), ceil_div(n_tok, kGemmTileTokens));
  }
  if (q8 && matvec_reads_q8(w.type)) {
    MatmulPush p =
        matmul_push(w, q8, q8_words_per_token(uint32_t(w.cols)), y, y_stride, n_tok, flags, bias);
    return dispatch_matvec(rec, w, p, n_tok, true);
  }
  MatmulPush p = matmul_push(w, x, x_stride, y, y_stride, n_tok, flags, bias);
  if (norm.weight && !matvec_takes_norm(w, x, x_stride, norm))
    throw Error("vulkan: a product that cannot take RMSNorm in was asked to");
  add_norm(p, norm);
  if (matvec_fits(w, x, x_stride)) return dispatch_matvec(rec, w, p, n_tok);
  rec.dispatch(module_name("matmul", w.type).c_str(), weight_spec(w), p,
               std::min<uint32_t>(uint32_t(w.rows), kRowsPerGridX), ceil_div(w.rows, kRowsPerGridX),
               ceil_div(n_tok, kMatmulTile));
}

void record_matmul_swiglu(Recorder& rec, const DeviceMatrix& gate, const DeviceMatrix& up,
                          VkDeviceAddress x, uint32_t x_stride, VkDeviceAddress y,
                          VkDeviceAddress up_scratch, int n_tok, const NormFirst& norm,
                          VkDeviceAddress q8) {
  const bool same_shape = up.type == gate.type && up.rows == gate.rows && up.cols == gate.cols &&
                          up.row_bytes == gate.row_bytes;
  const uint32_t F = uint32_t(gate.rows);
  // Prompt chunks over float inputs: two tiled products and swiglu.comp (below).
  const bool gemm = uses_gemm(rec, gate, x, x_stride, n_tok, norm, q8) &&
                    uses_gemm(rec, up, x, x_stride, n_tok, norm, q8);
  if (!gemm && same_shape && q8 && matvec_reads_q8(gate.type)) {
    MatmulPush p =
        matmul_push(gate, q8, q8_words_per_token(uint32_t(gate.cols)), y, F, n_tok, kSwiglu, 0);
    p.w2 = up.data;
    return dispatch_matvec(rec, gate, p, n_tok, true, 1);
  }
  if (!gemm && same_shape && matvec_fits(gate, x, x_stride) && matvec_fits(up, x, x_stride)) {
    MatmulPush p = matmul_push(gate, x, x_stride, y, F, n_tok, kSwiglu, 0);
    p.w2 = up.data;
    add_norm(p, norm);
    return dispatch_matvec(rec, gate, p, n_tok, false, 1);  // the thread's second row is up's
  }
  rec.begin_independent();
  record_matmul(rec, gate, x, x_stride, y, F, n_tok, false, 0, norm, q8);
  record_matmul(rec, up, x, x_stride, up_scratch, F, n_tok, false, 0, norm, q8);
  rec.end_independent();
  record_swiglu(rec, y, up_scratch, uint64_t(n_tok) * F);
}

void record_get_rows(Recorder& rec, const DeviceMatrix& table, VkDeviceAddress ids,
                     VkDeviceAddress out, int n_tok) {
  GetRowsPush p{table.data,     ids, out, uint32_t(table.cols), uint32_t(table.row_bytes),
                uint32_t(n_tok)};
  rec.dispatch(module_name("get_rows", table.type).c_str(), weight_spec(table), p,
               ceil_div(ceil_div(table.cols, 32), 64), uint32_t(n_tok));
}

void record_rmsnorm(Recorder& rec, VkDeviceAddress x, VkDeviceAddress weight, VkDeviceAddress y,
                    uint32_t n, int n_rows, uint32_t in_first, float eps) {
  const bool vec4s = n % 4 == 0 && x % 16 == 0 && weight % 16 == 0 && y % 16 == 0;
  RmsnormPush p{x, weight, y, n, in_first, eps, vec4s ? 1u : 0u};
  rec.dispatch("rmsnorm", p, uint32_t(n_rows));
}

void record_rope_kv_store(Recorder& rec, VkDeviceAddress q, VkDeviceAddress k, VkDeviceAddress v,
                          VkDeviceAddress table, VkDeviceAddress ids, VkDeviceAddress k_cache,
                          VkDeviceAddress v_cache, const AttentionShape& s, uint32_t rope_dim,
                          bool neox, int n_tok) {
  RopeKvStorePush p{q,
                    k,
                    v,
                    table,
                    ids,
                    k_cache,
                    v_cache,
                    s.n_head,
                    s.n_head_kv,
                    s.head_dim,
                    rope_dim,
                    neox ? 1u : 0u,
                    uint32_t(n_tok)};
  const uint64_t threads = uint64_t(s.n_head) * (rope_dim / 2) + s.n_head_kv * s.head_dim / 2;
  rec.dispatch("rope_kv_store", p, ceil_div(threads, 64), uint32_t(n_tok));
}

std::vector<float> rope_table(const HParams& hp, int n_ctx,
                              const std::vector<float>& freq_factors) {
  cpu_ref::RopeParams p = cpu_ref::rope_params(hp);
  if (!freq_factors.empty()) p.freq_factors = freq_factors.data();
  const int64_t half = hp.rope_dim / 2;
  std::vector<float> t(size_t(n_ctx) * size_t(half) * 2);
  for (int64_t pos = 0; pos < n_ctx; ++pos)
    for (int64_t i = 0; i < half; ++i) {
      const cpu_ref::RopeTurn turn = cpu_ref::rope_turn(p, pos, i);
      t[size_t(2 * (pos * half + i))] = turn.c;
      t[size_t(2 * (pos * half + i) + 1)] = turn.s;
    }
  return t;
}

void record_attention(Recorder& rec, VkDeviceAddress q, VkDeviceAddress k_cache,
                      VkDeviceAddress v_cache, VkDeviceAddress out, VkDeviceAddress scores,
                      VkDeviceAddress ids, const AttentionShape& s, uint32_t n_ctx, float scale,
                      int n_tok, VkDeviceAddress q8) {
  if (q8 && !attention_writes_q8(s))
    throw Error("vulkan: the attention writes the int8 form only for heads of a multiple of 32");
  AttentionPush p{q,           k_cache,    v_cache, out,   scores,       ids, s.n_head,
                  s.n_head_kv, s.head_dim, n_ctx,   scale, q8 ? 1u : 0u, q8};
  rec.dispatch("attention", p, s.n_head, uint32_t(n_tok));
}

bool attention_writes_q8(const AttentionShape& s) {
  return s.head_dim % 32 == 0;
}

void record_swiglu(Recorder& rec, VkDeviceAddress gate, VkDeviceAddress up, uint64_t n) {
  SwigluPush p{gate, up, uint32_t(n)};
  const uint32_t groups = ceil_div(n, 256);
  rec.dispatch("swiglu", p, std::min<uint32_t>(groups, 65535), ceil_div(groups, 65535));
}

std::vector<std::string> pipeline_names(const std::vector<TensorType>& weight_types, bool q8,
                                        bool gemm) {
  std::vector<std::string> names = {"rmsnorm", "rope_kv_store", "attention", "swiglu"};
  if (q8) names.push_back("quantize_q8");
  for (TensorType t : weight_types) {
    std::vector<const char*> shaders = {"matmul", "matvec", "matvec_tile", "get_rows"};
    if (q8 && matvec_reads_q8(t)) shaders.insert(shaders.end(), {"matvec_q8", "matvec_tile_q8"});
    if (gemm) shaders.push_back("gemm");
    for (const char* s : shaders) {
      const std::string n = module_name(s, t);
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    }
  }
  return names;
}

}  // namespace lockstep::vk
