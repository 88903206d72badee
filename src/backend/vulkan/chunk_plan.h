// How many prompt tokens the Vulkan backend takes per forward chunk when the user sets none
// (VulkanBackendOptions::max_batch 0). Apart from the backend so that the rule is tested without
// a device (tests/backend_vulkan/chunk_plan_test.cpp); no Vulkan types.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>

namespace lockstep::vk {

// `start` tokens, halved while fixed_bytes (weights, KV cache, staging) plus the chunk's
// scratch_bytes(tokens) exceed device_bytes, but never below `least` (where even that does not
// fit, the backend's allocation refuses with the sizes). A start at or below `least` (a short
// context) stays as it is.
inline int auto_chunk_tokens(size_t fixed_bytes, const std::function<size_t(size_t)>& scratch_bytes,
                             size_t device_bytes, int start, int least) {
  int tokens = start;
  while (tokens > least && fixed_bytes + scratch_bytes(size_t(tokens)) > device_bytes)
    tokens = std::max(least, tokens / 2);
  return tokens;
}

}  // namespace lockstep::vk
