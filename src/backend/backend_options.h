// Every knob of every backend, typed. The entry point (the CLI: flags and LOCKSTEP_* environment
// variables, src/cli/backend_knobs.cpp) fills one BackendOptions once; backends and their kernels
// read only what they are handed, never the environment. docs/knobs.md documents each knob.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "backend/fault.h"
#include "backend/kv_type.h"
#include "model/hparams.h"

namespace lockstep {

// The context a backend allocates when none is asked for: the model's training context, capped
// so that a 128k-context model does not reserve a 128k-token KV cache by default.
inline constexpr int kDefaultContextCap = 4096;
inline int default_n_ctx(const HParams& hp) {
  return int(std::min<int64_t>(hp.n_ctx_train, kDefaultContextCap));
}
// `requested` when positive, else the default above.
inline int resolve_n_ctx(const HParams& hp, int requested) {
  return requested > 0 ? requested : default_n_ctx(hp);
}

// The reference matmul's piece widths and input-slab limit (matmul_ref.h). Bench knobs: they
// change speed, never results.
struct RefMatmulTuning {
  int64_t prefill_chunk = 512;  // columns dequantized together for larger batches: 512|1024|2048
  int64_t decode_chunk = 2048;  // the same for batches of at most 2 tokens
  int64_t slab_bytes = 0;       // cap on a token group's input slab in bytes; 0: none
};

struct CpuBackendOptions {
  int max_batch = 64;            // tokens computed together; longer forward() calls are split
  KvType fast_kv = KvType::F16;  // the fast path's cache (the reference's is always F32)
  RefMatmulTuning ref_matmul;
};

// The CUDA kernels' launch choices. Bench knobs: each changes speed, never results (the same bits
// at every setting), except where a comment says otherwise.
struct CudaKernelTuning {
  bool pdl = true;          // programmatic dependent launch on sm_90+
  double prefetch_mb = 16;  // matvecs of at most this many MB of weights prefetch into L2
  int q8_rows = 0;          // rows per block of the int8 matvec: 0 auto, else 1|2|4|8
  int matvec_rows = 0;      // rows per block of the float matvec: 0 auto, else 1|2|4|8
  // Q6_K rows wider than this take the float-activation path (both paths are within the op
  // tests' bounds; they differ in the last bits).
  int64_t q6k_int8_max_cols = 4096;
  // Prefill attention over an F16 cache on tensor cores (attention_flash.cu) where the head
  // size is a multiple of 16; off: the FP32 CUDA-core kernel, which an F32 cache always takes.
  // Changes results: q and the softmax weights are rounded to F16 (within the op tests' bounds).
  bool flash_prefill = true;
  // The mmq route's tiled kernel (input shared by 128 rows in shared memory, K split for short
  // grids) instead of the 16-row kernel. Both batch-invariant; they differ in the last bits.
  // Off until it has run on a GPU: written 2026-12-08 when no device could be had (the op tests
  // run both kernels whatever this says; bench/NOTES.md, "Continuous batching on CUDA").
  bool mmq_tiled = false;
};

struct CudaBackendOptions {
  int device = 0;
  int max_batch = 512;  // tokens per prefill chunk (bounds the activation scratch)
  // Batches shorter than this run token by token through the decode path (matrix-vector kernels,
  // no weight dequantization); longer ones use the cuBLAS prefill.
  int min_gemm_batch = 8;
  // Prefill GEMMs with F16 hi+lo split operands (three cuBLAS products): close to FP32 accuracy at
  // about 3x the GEMM cost. Off: plain F16 x F16 -> F32 as llama.cpp does.
  bool precise_prefill = false;
  // KV cache in float32 (the CPU reference's precision) instead of F16: twice the cache memory
  // and attention bandwidth, no rounding of K and V.
  bool f32_kv_cache = false;
  // Decode matvecs with float activations only (no int8 path). Changes results (closer to the
  // reference); set together with the two above by precision "f32".
  bool f32_activations = false;
  bool cuda_graphs = true;  // replay the single-token decode step as a CUDA graph
  // A batched decode step (several sequences, one token each) takes one of three routes:
  //   B < batch_mmq_min (or the mmq route off): the batched matvecs, whose rows are bit for bit
  //     what each token alone gets;
  //   batch_mmq_min <= B (< batch_gemm_min when that is on): the int8 tensor-core products of
  //     mmq.cu (Q4_0, Q5_0, Q8_0, Q4_K, Q6_K; other types stay on the matvecs), which read each
  //     weight once per 64 tokens; a token's row is the same at every such B but differs in the
  //     last bits from the matvecs' (needs the int8 activations: off with f32_activations);
  //   B >= batch_gemm_min: the cuBLAS GEMMs on F16 weight tiles (a token's result depends on the
  //     batch: cuBLAS picks its kernel by shape).
  // 0 turns a route off; both 0 keeps every step on the matvecs (`--batch-invariant`). mmq beat
  // the GEMMs and the matvecs at 16 sequences on the H100 (0.5B 4917 vs 3758 tok/s, 7B 1411 vs
  // 987) and lost to the GEMMs from 32 on (7B B=64 2038 vs 3116, B=128 2234 vs 4923), but the
  // GEMM route is OFF by default: on the H100 it gave a sequence's rows of one step wrong
  // (cosine 0.1-0.4 against the reference, the KV it wrote then skewing later steps) in about one
  // run in ten of CudaArch.DISABLED_GemmRouteRepeat (gemma3 and phi3 tiny Q4_K_M models, four
  // sequences), with and without programmatic launches and CUDA graphs; never in the matvec or
  // mmq routes. Cause not found (bench/NOTES.md, "the GEMM decode route"). A gate probe at load
  // cannot vouch for an intermittent fault, so mmq serves every size from 16 until it is found.
  int batch_mmq_min = 16;
  int batch_gemm_min = 0;
  // TEST KNOB: the GEMM route also for fused-tensor models (phi3), where it stays off even when
  // batch_gemm_min is set; for the test that looks for the fault.
  bool gemm_route_fused = false;
  // TEST KNOB: the activation scratch starts as NaN (0xFF bytes) instead of whatever the
  // allocator hands back, so that a read of a value never written shows in every process.
  bool poison_scratch = false;
  // Weight values per dequantized F16 tile of the prefill GEMM (bounds that scratch).
  size_t gemm_tile_elems = size_t(32) << 20;
  CudaKernelTuning tuning;

  // "f32": the closest agreement with the CPU reference (F32 cache, split-F16 GEMMs, float
  // activations); "f16": the fast defaults.
  void set_precision_f32(bool f32) { f32_kv_cache = precise_prefill = f32_activations = f32; }
};

// The Vulkan backend (src/backend/vulkan, docs/vulkan.md).
struct VulkanBackendOptions {
  // Index into the loader's device list; -1: the first GPU (a CPU implementation such as Mesa's
  // lavapipe only when --backend vulkan is forced: `auto` never picks one).
  int device = -1;
  // Tokens per forward chunk (bounds the activation and score scratch); 0: 512, halved (to 64 at
  // least) until the model, its cache and the scratch fit the device.
  int max_batch = 0;
  // Enable the Khronos validation layer (when installed); any error it reports fails the backend
  // with exit code 4. The tests turn it on.
  bool validation = false;
  // Time every dispatch (GPU timestamps) and print the totals per shader to stderr when the
  // backend is destroyed. Changes speed a little, never results.
  bool profile = false;
  // The decode product's work shape (vk::ProductTuning; 0: chosen per matrix). Speed only.
  int matvec_team = 0;
  int matvec_rows = 0;
  int matvec_groups = 0;  // workgroups per product at most; 0: one per row group
  // Prompt chunks of at least this many tokens multiply in gemm.comp, the shared-memory tiled
  // product (vk::ProductTuning::gemm_min_tokens); 0: never. Its sums run in another order than
  // decode's products, so such chunks' rows differ from decode's in the last bits. The default,
  // 5, is the first chunk length decode's products (matvec.comp, one token per grid layer up to
  // 4) do not take: every product that serves is then one the gate ran, decode's in its steps
  // and gemm.comp in its 64-position prompt (matvec.comp's 8-token variant, which gives decode's
  // bits, serves only with a larger value here).
  int gemm_min_tokens = 5;
  // Take each layer's two RMSNorms into the products that read them (no dispatch of their own;
  // vk::NormFirst). Speed only: the norm's scale is summed in another order, so the last bits
  // change, never between prefill and decode. On by default: 0.5B Q4_K_M decode 534 vs 495 tok/s
  // on an H100, 7B unchanged (bench/NOTES.md).
  bool fuse_norm = true;
  // Q4_K and Q6_K products read their input in the int8 form (vk::record_quantize_q8: two int8
  // terms per element, error <= dx/508) with integer dot products, where the device has them;
  // 0: every product reads float inputs. Changes the last bits (both within the op tests'
  // bounds against float64), never between prefill and decode.
  bool int8_inputs = true;
  // ... but only for an input whose int8 readers hold at least this many bytes of weights: the
  // int8 form costs a dispatch of its own (quantize_q8), which small products do not earn back
  // (0.5B Q4_K_M decode on an H100: 500 tok/s with every Q4_K/Q6_K input in int8, 540 with 4 MiB,
  // where only its 2.3-3.4 MiB FFN downs go back to floats; 563 and 572 once the products got
  // faster; the 7B's inputs all hold more; bench/NOTES.md). Speed only.
  int64_t int8_min_bytes = int64_t(4) << 20;
  // Q6_K matrices uploaded with their 210-byte blocks padded to 212 (vk::kQ6kPaddedBlockBytes),
  // so that every block starts on a word and the products read each word once instead of
  // splicing two. Same values, same bits. Off: no gain measured on an H100 (tg128 0.5B 548 vs
  // 550, 7B 200 vs 213 tok/s, within the runs' spread; bench/NOTES.md).
  bool q6k_padded = false;
};

// What a backend is created with: the common settings, each family's own, and the TEST KNOB fault
// (backend/fault.h) the parity gate's candidate is told to inject.
struct BackendOptions {
  int threads = 0;  // CPU threads; 0: default_thread_count() (physical cores)
  int n_ctx = 0;    // 0: default_n_ctx(model); per sequence
  int n_seq = 1;    // sequences (slots) the KV cache holds (continuous batching)
  CpuBackendOptions cpu;
  CudaBackendOptions cuda;
  VulkanBackendOptions vulkan;
  std::optional<FaultSpec> fault;
};

}  // namespace lockstep
