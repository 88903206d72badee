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

#include "backend/backend_options.h"
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

// Read plus written bytes per second / 1e9 of device-to-device copies of a buffer as large as
// fits in a quarter of the free memory (at most 1 GiB), the best of several; 0 when the buffers
// cannot be had. The yardstick for "% of the card's bandwidth" in bench reports.
double cuda_copy_gb_per_s();

// Sequences (continuous batching slots) one CUDA backend holds at most.
constexpr int kMaxCudaSequences = 256;

// Uploads the model's weights (in their file formats) and allocates the KV cache (options.n_ctx
// positions) and scratch, per options.cuda (backend/backend_options.h). Throws Error(kExitDevice)
// "model needs X GiB, device has Y GiB free" when the device cannot hold them, and InputError for
// a weight type or head size the kernels do not handle. options.n_seq sequences (1 to
// kMaxCudaSequences) of options.n_ctx positions each. The kernels' tuning knobs
// (options.cuda.tuning) are process-wide: the last CUDA backend created sets them.
std::unique_ptr<GatedBackend> create_cuda_backend(const Model& model, const BackendOptions& options,
                                                  GateKey key);

}  // namespace lockstep
