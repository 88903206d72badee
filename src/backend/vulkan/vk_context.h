// The Vulkan plumbing of the Vulkan backend: the loader (libvulkan.so.1, opened at run time so
// the binary needs no Vulkan library to start), one instance + device + compute queue per
// Context, buffers in device memory reached by device address, and a command recorder.
//
// Every failure is an Error(kExitDevice) whose one line names the cause (no loader, no device,
// a missing feature, out of device memory, a pipeline that does not build): the parity gate
// turns that into "exit 4" for a forced --backend vulkan and into "try the next backend" under
// auto.
#pragma once

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lockstep::vk {

// The Vulkan entry points the backend uses, loaded from the loader at run time.
struct Api {
#define LOCKSTEP_VK_GLOBAL(fn) PFN_##fn fn = nullptr;
#define LOCKSTEP_VK_INSTANCE(fn) PFN_##fn fn = nullptr;
#define LOCKSTEP_VK_DEVICE(fn) PFN_##fn fn = nullptr;
#include "backend/vulkan/vk_functions.inc"
#undef LOCKSTEP_VK_GLOBAL
#undef LOCKSTEP_VK_INSTANCE
#undef LOCKSTEP_VK_DEVICE
};

struct DeviceSummary {
  std::string name;
  VkPhysicalDeviceType type = VK_PHYSICAL_DEVICE_TYPE_OTHER;
  bool is_cpu() const { return type == VK_PHYSICAL_DEVICE_TYPE_CPU; }
};

// The devices the loader reports (empty when there are none). Throws Error(kExitDevice) when the
// loader or an instance is missing.
std::vector<DeviceSummary> list_devices();

// Validation-layer errors reported in this process so far (VK_LAYER_KHRONOS_validation, when a
// Context was created with validation on), and the first one's text.
uint64_t validation_error_count();
std::string first_validation_error();

// Values of a shader's specialization constants 0, 1, ... (uint32 each), fixed when its pipeline
// is built.
using Specialization = std::vector<uint32_t>;

struct ContextOptions {
  int device = -1;  // index into list_devices(); -1: the first GPU, else the first device
  bool allow_cpu_device = true;  // whether a CPU implementation (lavapipe) may be chosen
  bool validation = false;       // enable VK_LAYER_KHRONOS_validation when it is installed
  // Time every dispatch with GPU timestamps; the totals per shader and grid go to stderr when
  // the Context is destroyed (LOCKSTEP_VULKAN_PROFILE=1). Adds a timestamp after each dispatch.
  // Where the driver has VK_KHR_pipeline_executable_properties, each pipeline's compiler
  // statistics (registers, spills: what bounds a shader's occupancy) are printed with it.
  bool profile = false;
};

// A buffer and its memory; device-local unless created host-visible (then mapped).
struct Buffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceAddress address = 0;
  size_t bytes = 0;
  void* mapped = nullptr;
};

class Context {
 public:
  explicit Context(const ContextOptions& options);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const Api& api() const { return api_; }
  VkDevice device() const { return device_; }
  const std::string& device_name() const { return device_name_; }
  bool validation_enabled() const { return validation_; }
  // Bytes of the largest device-local heap (what the backend's plan is compared with).
  uint64_t device_local_bytes() const { return device_local_bytes_; }
  uint32_t max_workgroups_x() const { return max_groups_x_; }
  // Shared memory a compute workgroup may use (the tiled product needs 18 KiB; Vulkan guarantees
  // only 16).
  uint32_t max_shared_bytes() const { return max_shared_bytes_; }
  // Whether shaders may use SPV_KHR_integer_dot_product (OpSDotKHR on packed int8x4): the
  // device has VK_KHR_shader_integer_dot_product (core in Vulkan 1.3) with its feature, enabled
  // here. The int8-input products (vk_ops.h) need it; without it the float products serve.
  bool integer_dot_product() const { return integer_dot_; }

  // Throws Error(kExitDevice) naming `what` when the device has no memory for it.
  Buffer create_buffer(size_t bytes, bool host_visible, const std::string& what);
  void destroy(Buffer& b);

  // A pipeline from the embedded SPIR-V module `name` with its specialization constants 0, 1, ...
  // set to `spec` (the module's defaults where spec is empty); all share one layout of 128 bytes
  // of push constants. Built once per (name, spec). Throws Error(kExitDevice) when the module is
  // missing or does not build.
  VkPipeline pipeline(const char* name, const Specialization& spec = {});

  VkCommandBuffer allocate_command_buffer();
  void free_command_buffer(VkCommandBuffer cmd);
  // Submits `cmd` and waits for it; then throws Error(kExitDevice) if the device was lost or the
  // validation layer reported an error since the last check.
  void submit_and_wait(VkCommandBuffer cmd);
  // Throws when the validation layer has reported errors since the last call.
  void check_validation();

  VkPipelineLayout pipeline_layout() const { return layout_; }

  // The profile (ContextOptions::profile), used by Recorder: a command buffer's timestamps start
  // when its recording begins; each dispatch or copy is then followed by a timestamp and charged
  // the time since the previous one (its own run and the wait before it: what it costs the
  // chain). Accumulated at each submit_and_wait.
  bool profiling() const { return profile_; }
  void profile_begin(VkCommandBuffer cmd);
  void profile_mark(VkCommandBuffer cmd, std::string what);
  // "name [gx,gy,gz]" -> (milliseconds, count), what the destructor prints.
  const std::map<std::string, std::pair<double, uint64_t>>& profile_totals() const {
    return profile_totals_;
  }

 private:
  struct Timestamps {
    VkQueryPool pool = VK_NULL_HANDLE;
    std::vector<std::string> marks;  // marks[i] ends at query i + 1
  };
  void collect_profile(VkCommandBuffer cmd);
  void print_profile() const;
  // One line of the driver's statistics for pipeline p (pipeline_stats_ on), or "".
  std::string pipeline_statistics(VkPipeline p) const;
  void release();
  uint32_t memory_type(uint32_t allowed, bool host_visible) const;

  Api api_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  struct BuiltPipeline {
    std::string name;
    Specialization spec;
    VkPipeline pipeline;
  };
  std::vector<BuiltPipeline> pipelines_;
  VkPhysicalDeviceMemoryProperties memory_{};
  std::string device_name_;
  uint64_t device_local_bytes_ = 0;
  uint32_t max_groups_x_ = 65535;
  uint32_t max_shared_bytes_ = 16384;
  bool integer_dot_ = false;
  bool validation_ = false;
  uint64_t validation_seen_ = 0;
  bool profile_ = false;
  bool pipeline_stats_ = false;  // VK_KHR_pipeline_executable_properties on
  std::vector<std::pair<std::string, std::string>> stats_;  // pipeline name, its statistics
  double timestamp_ns_ = 1.0;                               // nanoseconds per timestamp tick
  uint64_t timestamp_mask_ = ~uint64_t(0);
  std::map<VkCommandBuffer, Timestamps> timestamps_;
  std::map<std::string, std::pair<double, uint64_t>> profile_totals_;
};

// Records compute dispatches into a command buffer, each followed by a barrier that makes its
// writes visible to everything after it (the backend's steps are a chain, each reading the
// previous one's output).
class Recorder {
 public:
  Recorder(Context& ctx, VkCommandBuffer cmd);
  void begin();
  void end();
  template <typename Push>
  void dispatch(const char* pipeline, const Push& push, uint32_t gx, uint32_t gy = 1,
                uint32_t gz = 1) {
    dispatch(pipeline, Specialization{}, push, gx, gy, gz);
  }
  template <typename Push>
  void dispatch(const char* pipeline, const Specialization& spec, const Push& push, uint32_t gx,
                uint32_t gy = 1, uint32_t gz = 1) {
    static_assert(sizeof(Push) <= 128, "push constants are limited to 128 bytes");
    dispatch_raw(pipeline, spec, &push, sizeof(Push), gx, gy, gz);
  }
  // `what` names the copy in the profile (ContextOptions::profile).
  void copy(const Buffer& src, size_t src_offset, const Buffer& dst, size_t dst_offset,
            size_t bytes, const char* what = "copy");
  // The dispatches recorded between these two read only what came before and write disjoint
  // buffers (q, k and v from one normed input): no barrier between them, one after the last, so
  // the GPU may run them side by side.
  void begin_independent() { independent_ = true; }
  void end_independent();
  VkCommandBuffer command_buffer() const { return cmd_; }
  const Context& context() const { return ctx_; }

 private:
  void dispatch_raw(const char* pipeline, const Specialization& spec, const void* push,
                    size_t bytes, uint32_t gx, uint32_t gy, uint32_t gz);
  void barrier();
  Context& ctx_;
  VkCommandBuffer cmd_;
  bool independent_ = false;
};

}  // namespace lockstep::vk
