// The CUDA backend. Plain C++ header (no CUDA types), compiled only when LOCKSTEP_HAVE_CUDA is
// defined; code elsewhere guards its include with #ifdef LOCKSTEP_HAVE_CUDA.
//
// The backend is obtainable only through the parity gate: create_cuda_backend() takes a GateKey,
// which only ParityGate can construct, and the backend is a GatedBackend that refuses to compute
// until the gate has verified it against the CPU reference (or the user turned the gate off).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/gate_key.h"
#include "backend/gated_backend.h"
#include "model/model.h"

namespace lockstep {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
  int cc_major = 0, cc_minor = 0;  // compute capability
};

// True when a CUDA device can be used; otherwise `why` (if given) says why not, in one line.
// Never throws.
bool cuda_device_available(std::string* why = nullptr);
// Name and memory of device `index`. Throws Error (kExitDevice) when there is no such device.
CudaDeviceInfo cuda_device_info(int index = 0);

struct CudaBackendOptions {
  int device = 0;
  int n_ctx = 0;        // KV cache length; 0: min(n_ctx_train, 4096)
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
  bool cuda_graphs = true;  // replay the single-token decode step as a CUDA graph
  // Weight values per dequantized F16 tile of the prefill GEMM (bounds that scratch).
  size_t gemm_tile_elems = size_t(32) << 20;
};

// Uploads the model's weights (in their file formats) and allocates the KV cache and scratch.
// Throws Error(kExitDevice) "model needs X GiB, device has Y GiB free" when the device cannot
// hold them, and InputError for a weight type or head size the kernels do not handle.
// The environment variable LOCKSTEP_CUDA_PRECISION overrides two options: "f32" sets
// f32_kv_cache and precise_prefill (closest agreement with the CPU reference), "f16" clears them;
// any other value is an InputError.
std::unique_ptr<GatedBackend> create_cuda_backend(const Model& model,
                                                  const CudaBackendOptions& opts, GateKey key);

}  // namespace lockstep
