// The SPIR-V modules compiled from shaders/*.comp at build time (shaders.cmake generates the
// table). Names: "<shader>" or "<shader>_<weight type>" ("matmul_q4_k", "rmsnorm").
#pragma once

#include <cstddef>
#include <cstdint>

namespace lockstep::vk {

struct SpirvModule {
  const char* name;
  const uint32_t* words;
  size_t bytes;
};

// The module named `name`, or nullptr.
const SpirvModule* find_spirv(const char* name);

}  // namespace lockstep::vk
