// The Vulkan backend. Plain C++ header (no Vulkan types), compiled only when
// LOCKSTEP_HAVE_VULKAN is defined; code elsewhere guards its include with #ifdef.
//
// Like CUDA, it is obtainable only through the parity gate: create_vulkan_backend() takes a
// GateKey, and the backend is a GatedBackend that refuses to compute until the gate has verified
// it against the CPU reference (or the user turned the gate off).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend_options.h"
#include "backend/gate_key.h"
#include "backend/gated_backend.h"
#include "model/model.h"

namespace lockstep {

// True when a Vulkan GPU can be used (what `auto` asks: a CPU implementation such as lavapipe
// does not count, and `why` then says so); with device >= 0, whether device number `device`
// exists, whatever its kind (the user named it). Otherwise `why` (if given) says why not, in one
// line. Never throws; the device list is read once per process.
bool vulkan_device_available(std::string* why = nullptr, int device = -1);

struct VulkanDeviceInfo {
  std::string name;
  bool is_cpu = false;  // a CPU implementation (Mesa's lavapipe)
};
// The devices the loader reports, in its order (what --backend vulkan's device index counts).
// Throws Error(kExitDevice) when there is no loader or no driver.
std::vector<VulkanDeviceInfo> vulkan_devices();

// Uploads the model's weights (in their file formats) and allocates the F16 KV cache and
// scratch. Throws Error(kExitDevice) naming the cause when there is no loader or device, a
// feature is missing, the device has too little memory or a pipeline does not build; InputError
// for a model the shaders do not implement.
std::unique_ptr<GatedBackend> create_vulkan_backend(const Model& model,
                                                    const BackendOptions& options, GateKey key);

// Errors the Khronos validation layer reported in this process (the tests require 0).
uint64_t vulkan_validation_errors();

}  // namespace lockstep
