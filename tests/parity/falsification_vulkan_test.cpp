// The gate's falsification suite (falsification_model_test.cpp) with the Vulkan backend as the
// candidate: `--backend auto` with LOCKSTEP_VULKAN_DEVICE naming the test device (so `auto` takes
// it even when it is a CPU implementation, lavapipe in CI), CUDA hidden (so `auto` does not
// prefer it on a GPU machine), and the validation layer on. Skips visibly without a Vulkan
// device. The suites are named VulkanParityFalsification and VulkanParityTool.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>

#ifdef LOCKSTEP_HAVE_VULKAN
#include "backend/vulkan/vulkan_backend.h"
#endif

namespace lockstep::vulkan_falsification {

// Empty when a Vulkan device exists; else why the suite skips.
inline std::string skip_reason() {
#ifdef LOCKSTEP_HAVE_VULKAN
  try {
    if (vulkan_devices().empty()) return "no Vulkan device";
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
#else
  return "this lockstep was built without Vulkan";
#endif
}

// The first GPU, else the first device.
inline std::string device_index() {
#ifdef LOCKSTEP_HAVE_VULKAN
  const auto devices = vulkan_devices();
  for (size_t i = 0; i < devices.size(); ++i)
    if (!devices[i].is_cpu) return std::to_string(i);
#endif
  return "0";
}

inline std::map<std::string, std::optional<std::string>> candidate_env() {
  static const std::string device = skip_reason().empty() ? device_index() : "0";
  return {{"LOCKSTEP_VULKAN_DEVICE", device},
          {"LOCKSTEP_VULKAN_VALIDATION", "1"},
          {"CUDA_VISIBLE_DEVICES", ""}};
}

}  // namespace lockstep::vulkan_falsification

#define LOCKSTEP_FALSIFICATION_CANDIDATE "vulkan"
#define LOCKSTEP_FALSIFICATION_CANDIDATE_ENV ::lockstep::vulkan_falsification::candidate_env
#define LOCKSTEP_FALSIFICATION_REQUIRE_CANDIDATE()                            \
  do {                                                                        \
    const std::string why_ = ::lockstep::vulkan_falsification::skip_reason(); \
    if (!why_.empty()) GTEST_SKIP() << "skipped: " << why_;                   \
  } while (0)
#define ParityFalsification VulkanParityFalsification
#define ParityTool VulkanParityTool
#include "parity/falsification_model_test.cpp"
