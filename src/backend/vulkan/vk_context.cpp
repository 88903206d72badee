#include "backend/vulkan/vk_context.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "backend/vulkan/vk_shaders.h"
#include "util/error.h"
#include "util/stderr_line.h"

namespace lockstep::vk {

namespace {

constexpr uint32_t kPushBytes = 128;  // the minimum every Vulkan device guarantees

[[noreturn]] void fail(const std::string& what) {
  throw Error("vulkan: " + what, kExitDevice);
}

const char* result_name(VkResult r) {
  switch (r) {
    case VK_SUCCESS:
      return "VK_SUCCESS";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
      return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_LAYER_NOT_PRESENT:
      return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
      return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
      return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS:
      return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_INVALID_SHADER_NV:
      return "VK_ERROR_INVALID_SHADER_NV";
    default:
      return "VkResult error";
  }
}

void check(VkResult r, const std::string& what) {
  if (r != VK_SUCCESS)
    fail(what + " failed (" + result_name(r) + " " + std::to_string(int(r)) + ")");
}

// The loader, opened once per process and never closed (drivers keep threads and state).
PFN_vkGetInstanceProcAddr loader_entry() {
  static std::once_flag once;
  static PFN_vkGetInstanceProcAddr entry = nullptr;
  static std::string error;
  std::call_once(once, [] {
    void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      error = "no Vulkan loader (libvulkan.so.1: " + std::string(e ? e : "not found") + ")";
      return;
    }
    entry = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
    if (!entry) error = "the Vulkan loader has no vkGetInstanceProcAddr";
  });
  if (!entry) fail(error);
  return entry;
}

std::atomic<uint64_t> g_validation_errors{0};
std::mutex g_first_error_mutex;
std::string g_first_error;

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT,
    const VkDebugUtilsMessengerCallbackDataEXT* data, void*) {
  if (!(severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) return VK_FALSE;
  const char* msg = data && data->pMessage ? data->pMessage : "(no message)";
  if (g_validation_errors.fetch_add(1) == 0) {
    std::lock_guard<std::mutex> lock(g_first_error_mutex);
    g_first_error = msg;
  }
  stderr_line("[lockstep] vulkan validation error: %s\n", msg);
  return VK_FALSE;
}

bool has_layer(const Api& api, const char* name) {
  uint32_t n = 0;
  if (api.vkEnumerateInstanceLayerProperties(&n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkLayerProperties> layers(n);
  if (api.vkEnumerateInstanceLayerProperties(&n, layers.data()) != VK_SUCCESS) return false;
  for (const auto& l : layers)
    if (std::strcmp(l.layerName, name) == 0) return true;
  return false;
}

// Loads the global functions and creates an instance (with the validation layer and its
// messenger extension when asked and installed).
VkInstance create_instance(Api& api, bool want_validation, bool* validation_on) {
  const PFN_vkGetInstanceProcAddr get = loader_entry();
#define LOCKSTEP_VK_GLOBAL(fn) api.fn = reinterpret_cast<PFN_##fn>(get(nullptr, #fn));
#define LOCKSTEP_VK_INSTANCE(fn)
#define LOCKSTEP_VK_DEVICE(fn)
#include "backend/vulkan/vk_functions.inc"
#undef LOCKSTEP_VK_GLOBAL
#undef LOCKSTEP_VK_INSTANCE
#undef LOCKSTEP_VK_DEVICE
  if (!api.vkCreateInstance) fail("the Vulkan loader lacks vkCreateInstance");
  const char* layer = "VK_LAYER_KHRONOS_validation";
  const char* ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
  *validation_on = want_validation && has_layer(api, layer);
  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "lockstep";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  info.pApplicationInfo = &app;
  if (*validation_on) {
    info.enabledLayerCount = 1;
    info.ppEnabledLayerNames = &layer;
    info.enabledExtensionCount = 1;
    info.ppEnabledExtensionNames = &ext;
  }
  VkInstance instance = VK_NULL_HANDLE;
  const VkResult r = api.vkCreateInstance(&info, nullptr, &instance);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER) fail("no Vulkan driver (ICD) found by the loader");
  check(r, "vkCreateInstance");
#define LOCKSTEP_VK_GLOBAL(fn)
#define LOCKSTEP_VK_INSTANCE(fn) api.fn = reinterpret_cast<PFN_##fn>(get(instance, #fn));
#define LOCKSTEP_VK_DEVICE(fn)
#include "backend/vulkan/vk_functions.inc"
#undef LOCKSTEP_VK_GLOBAL
#undef LOCKSTEP_VK_INSTANCE
#undef LOCKSTEP_VK_DEVICE
  return instance;
}

std::vector<VkPhysicalDevice> physical_devices(const Api& api, VkInstance instance) {
  uint32_t n = 0;
  check(api.vkEnumeratePhysicalDevices(instance, &n, nullptr), "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> out(n);
  check(api.vkEnumeratePhysicalDevices(instance, &n, out.data()), "vkEnumeratePhysicalDevices");
  out.resize(n);
  return out;
}

bool is_gpu(VkPhysicalDeviceType t) {
  return t == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU || t == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ||
         t == VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU;
}

}  // namespace

uint64_t validation_error_count() {
  return g_validation_errors.load();
}

std::string first_validation_error() {
  std::lock_guard<std::mutex> lock(g_first_error_mutex);
  return g_first_error;
}

std::vector<DeviceSummary> list_devices() {
  Api api;
  bool validation = false;
  VkInstance instance = create_instance(api, false, &validation);
  std::vector<DeviceSummary> out;
  try {
    for (VkPhysicalDevice d : physical_devices(api, instance)) {
      VkPhysicalDeviceProperties p;
      api.vkGetPhysicalDeviceProperties(d, &p);
      out.push_back({p.deviceName, p.deviceType});
    }
  } catch (...) {
    api.vkDestroyInstance(instance, nullptr);
    throw;
  }
  api.vkDestroyInstance(instance, nullptr);
  return out;
}

Context::Context(const ContextOptions& options) {
  try {
    instance_ = create_instance(api_, options.validation, &validation_);
    if (validation_ && api_.vkCreateDebugUtilsMessengerEXT) {
      VkDebugUtilsMessengerCreateInfoEXT m{};
      m.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT;
      m.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                          VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT;
      m.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                      VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT;
      m.pfnUserCallback = on_validation_message;
      check(api_.vkCreateDebugUtilsMessengerEXT(instance_, &m, nullptr, &messenger_),
            "vkCreateDebugUtilsMessengerEXT");
    }
    validation_seen_ = validation_error_count();

    // The device: the one asked for, else the first GPU, else (when allowed) the first CPU one.
    const auto devices = physical_devices(api_, instance_);
    if (devices.empty()) fail("no Vulkan device");
    std::vector<VkPhysicalDeviceProperties> props(devices.size());
    for (size_t i = 0; i < devices.size(); ++i)
      api_.vkGetPhysicalDeviceProperties(devices[i], &props[i]);
    int chosen = -1;
    if (options.device >= 0) {
      if (size_t(options.device) >= devices.size())
        fail("no Vulkan device " + std::to_string(options.device) + " (there are " +
             std::to_string(devices.size()) + ")");
      chosen = options.device;
    } else {
      for (size_t i = 0; i < devices.size() && chosen < 0; ++i)
        if (is_gpu(props[i].deviceType)) chosen = int(i);
      for (size_t i = 0; i < devices.size() && chosen < 0; ++i)
        if (options.allow_cpu_device) chosen = int(i);
      if (chosen < 0)
        fail("no Vulkan GPU (only the CPU implementation " + std::string(props[0].deviceName) +
             ")");
    }
    physical_ = devices[size_t(chosen)];
    const VkPhysicalDeviceProperties& p = props[size_t(chosen)];
    device_name_ = p.deviceName;
    max_groups_x_ = p.limits.maxComputeWorkGroupCount[0];
    max_shared_bytes_ = p.limits.maxComputeSharedMemorySize;
    if (VK_API_VERSION_MAJOR(p.apiVersion) == 1 && VK_API_VERSION_MINOR(p.apiVersion) < 2)
      fail(device_name_ + " supports Vulkan " + std::to_string(VK_API_VERSION_MINOR(p.apiVersion)) +
           ".x only; the backend needs 1.2");
    if (p.limits.maxPushConstantsSize < kPushBytes ||
        p.limits.maxComputeWorkGroupInvocations < 256 || p.limits.maxComputeSharedMemorySize < 8192)
      fail(device_name_ + ": compute limits below what the shaders need");

    // The matmul shader's reductions use subgroup arithmetic (core since Vulkan 1.1, optional).
    VkPhysicalDeviceSubgroupProperties subgroup{};
    subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
    VkPhysicalDeviceProperties2 p2{};
    p2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
    p2.pNext = &subgroup;
    api_.vkGetPhysicalDeviceProperties2(physical_, &p2);
    if (!(subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) ||
        !(subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) ||
        !(subgroup.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT))
      fail(device_name_ + " lacks subgroup arithmetic or shuffles in compute shaders");
    // matvec.comp keeps one shared-memory partial per subgroup, at most 128 / 4 of them.
    if (subgroup.subgroupSize < 4 || subgroup.subgroupSize > 128)
      fail(device_name_ + " has subgroups of " + std::to_string(subgroup.subgroupSize) +
           " invocations; the shaders need 4 to 128");

    VkPhysicalDeviceVulkan12Features f12{};
    f12.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES;
    VkPhysicalDeviceFeatures2 f2{};
    f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
    f2.pNext = &f12;
    api_.vkGetPhysicalDeviceFeatures2(physical_, &f2);
    if (!f12.bufferDeviceAddress)
      fail(device_name_ + " lacks the bufferDeviceAddress feature the shaders use");

    // Integer dot products: optional (the float products serve without them).
    uint32_t n_ext = 0;
    api_.vkEnumerateDeviceExtensionProperties(physical_, nullptr, &n_ext, nullptr);
    std::vector<VkExtensionProperties> exts(n_ext);
    api_.vkEnumerateDeviceExtensionProperties(physical_, nullptr, &n_ext, exts.data());
    const auto has_ext = [&exts](const char* name) {
      for (const VkExtensionProperties& e : exts)
        if (std::strcmp(e.extensionName, name) == 0) return true;
      return false;
    };
    const bool has_dot_ext = has_ext(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
    VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR dot_features{};
    dot_features.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES_KHR;
    if (has_dot_ext) {
      VkPhysicalDeviceFeatures2 fd{};
      fd.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
      fd.pNext = &dot_features;
      api_.vkGetPhysicalDeviceFeatures2(physical_, &fd);
      integer_dot_ = dot_features.shaderIntegerDotProduct == VK_TRUE;
    }
    // The compiler's statistics per pipeline, for the profile only.
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR exec_features{};
    exec_features.sType =
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR;
    if (options.profile && has_ext(VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME)) {
      VkPhysicalDeviceFeatures2 fe{};
      fe.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
      fe.pNext = &exec_features;
      api_.vkGetPhysicalDeviceFeatures2(physical_, &fe);
      pipeline_stats_ = exec_features.pipelineExecutableInfo == VK_TRUE;
    }

    uint32_t nq = 0;
    api_.vkGetPhysicalDeviceQueueFamilyProperties(physical_, &nq, nullptr);
    std::vector<VkQueueFamilyProperties> families(nq);
    api_.vkGetPhysicalDeviceQueueFamilyProperties(physical_, &nq, families.data());
    bool found = false;
    for (uint32_t i = 0; i < nq && !found; ++i)
      if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) queue_family_ = i, found = true;
    if (!found) fail(device_name_ + " has no compute queue");
    if (options.profile) {
      const uint32_t bits = families[queue_family_].timestampValidBits;
      if (bits == 0) {
        std::fprintf(stderr, "vulkan: %s has no timestamps on its compute queue: no profile\n",
                     device_name_.c_str());
      } else {
        profile_ = true;
        timestamp_ns_ = double(p.limits.timestampPeriod);
        timestamp_mask_ = bits >= 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1;
      }
    }

    api_.vkGetPhysicalDeviceMemoryProperties(physical_, &memory_);
    for (uint32_t i = 0; i < memory_.memoryHeapCount; ++i)
      if (memory_.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
        device_local_bytes_ = std::max<uint64_t>(device_local_bytes_, memory_.memoryHeaps[i].size);

    const float priority = 1.0f;
    VkDeviceQueueCreateInfo q{};
    q.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
    q.queueFamilyIndex = queue_family_;
    q.queueCount = 1;
    q.pQueuePriorities = &priority;
    VkPhysicalDeviceVulkan12Features want12{};
    want12.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES;
    want12.bufferDeviceAddress = VK_TRUE;
    VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR want_dot{};
    want_dot.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES_KHR;
    want_dot.shaderIntegerDotProduct = VK_TRUE;
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR want_exec{};
    want_exec.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR;
    want_exec.pipelineExecutableInfo = VK_TRUE;
    std::vector<const char*> enabled;
    void** chain = &want12.pNext;
    if (integer_dot_) {
      enabled.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
      *chain = &want_dot;
      chain = &want_dot.pNext;
    }
    if (pipeline_stats_) {
      enabled.push_back(VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
      *chain = &want_exec;
    }
    VkDeviceCreateInfo d{};
    d.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
    d.pNext = &want12;
    d.enabledExtensionCount = uint32_t(enabled.size());
    d.ppEnabledExtensionNames = enabled.empty() ? nullptr : enabled.data();
    d.queueCreateInfoCount = 1;
    d.pQueueCreateInfos = &q;
    check(api_.vkCreateDevice(physical_, &d, nullptr, &device_), "vkCreateDevice");
#define LOCKSTEP_VK_GLOBAL(fn)
#define LOCKSTEP_VK_INSTANCE(fn)
#define LOCKSTEP_VK_DEVICE(fn) \
  api_.fn = reinterpret_cast<PFN_##fn>(api_.vkGetDeviceProcAddr(device_, #fn));
#include "backend/vulkan/vk_functions.inc"
#undef LOCKSTEP_VK_GLOBAL
#undef LOCKSTEP_VK_INSTANCE
#undef LOCKSTEP_VK_DEVICE
    api_.vkGetDeviceQueue(device_, queue_family_, 0, &queue_);

    VkCommandPoolCreateInfo pool{};
    pool.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
    pool.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pool.queueFamilyIndex = queue_family_;
    check(api_.vkCreateCommandPool(device_, &pool, nullptr, &pool_), "vkCreateCommandPool");
    VkFenceCreateInfo fence{};
    fence.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
    check(api_.vkCreateFence(device_, &fence, nullptr, &fence_), "vkCreateFence");
    VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushBytes};
    VkPipelineLayoutCreateInfo layout{};
    layout.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
    layout.pushConstantRangeCount = 1;
    layout.pPushConstantRanges = &range;
    check(api_.vkCreatePipelineLayout(device_, &layout, nullptr, &layout_),
          "vkCreatePipelineLayout");
  } catch (...) {
    release();  // a throwing constructor runs no destructor
    throw;
  }
}

Context::~Context() {
  release();
}

void Context::release() {
  if (device_) {
    api_.vkDeviceWaitIdle(device_);
    print_profile();
    for (auto& [cmd, t] : timestamps_) api_.vkDestroyQueryPool(device_, t.pool, nullptr);
    timestamps_.clear();
    for (const BuiltPipeline& p : pipelines_) api_.vkDestroyPipeline(device_, p.pipeline, nullptr);
    pipelines_.clear();
    if (layout_) api_.vkDestroyPipelineLayout(device_, layout_, nullptr);
    if (fence_) api_.vkDestroyFence(device_, fence_, nullptr);
    if (pool_) api_.vkDestroyCommandPool(device_, pool_, nullptr);
    api_.vkDestroyDevice(device_, nullptr);
    device_ = VK_NULL_HANDLE;
  }
  if (messenger_) api_.vkDestroyDebugUtilsMessengerEXT(instance_, messenger_, nullptr);
  messenger_ = VK_NULL_HANDLE;
  if (instance_) api_.vkDestroyInstance(instance_, nullptr);
  instance_ = VK_NULL_HANDLE;
}

uint32_t Context::memory_type(uint32_t allowed, bool host_visible) const {
  const VkMemoryPropertyFlags want =
      host_visible ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                   : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
  for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i)
    if ((allowed & (1u << i)) && (memory_.memoryTypes[i].propertyFlags & want) == want) return i;
  // A device without device-local memory types (none known) still gets any allowed one.
  for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i)
    if ((allowed & (1u << i)) && !host_visible) return i;
  fail(device_name_ + ": no " + (host_visible ? "host-visible" : "device") + " memory type");
}

Buffer Context::create_buffer(size_t bytes, bool host_visible, const std::string& what) {
  Buffer b;
  b.bytes = std::max<size_t>(bytes, 4);
  VkBufferCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  info.size = b.bytes;
  info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT |
               VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(api_.vkCreateBuffer(device_, &info, nullptr, &b.buffer), "vkCreateBuffer (" + what + ")");
  VkMemoryRequirements req;
  api_.vkGetBufferMemoryRequirements(device_, b.buffer, &req);
  VkMemoryAllocateFlagsInfo flags{};
  flags.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO;
  flags.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
  VkMemoryAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  alloc.pNext = &flags;
  alloc.allocationSize = req.size;
  try {
    alloc.memoryTypeIndex = memory_type(req.memoryTypeBits, host_visible);
  } catch (...) {
    api_.vkDestroyBuffer(device_, b.buffer, nullptr);
    throw;
  }
  const VkResult r = api_.vkAllocateMemory(device_, &alloc, nullptr, &b.memory);
  if (r != VK_SUCCESS) {
    api_.vkDestroyBuffer(device_, b.buffer, nullptr);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      fail("out of device memory allocating " + std::to_string(bytes >> 20) + " MiB for " + what +
           " on " + device_name_);
    check(r, "vkAllocateMemory (" + what + ")");
  }
  check(api_.vkBindBufferMemory(device_, b.buffer, b.memory, 0), "vkBindBufferMemory");
  VkBufferDeviceAddressInfo addr{};
  addr.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO;
  addr.buffer = b.buffer;
  b.address = api_.vkGetBufferDeviceAddress(device_, &addr);
  if (host_visible)
    check(api_.vkMapMemory(device_, b.memory, 0, VK_WHOLE_SIZE, 0, &b.mapped), "vkMapMemory");
  return b;
}

void Context::destroy(Buffer& b) {
  if (b.buffer) api_.vkDestroyBuffer(device_, b.buffer, nullptr);
  if (b.memory) api_.vkFreeMemory(device_, b.memory, nullptr);
  b = Buffer{};
}

VkPipeline Context::pipeline(const char* name, const Specialization& spec) {
  for (const BuiltPipeline& p : pipelines_)
    if (p.name == name && p.spec == spec) return p.pipeline;
  const SpirvModule* spirv = find_spirv(name);
  if (!spirv) fail(std::string("no shader module '") + name + "' in this build");
  VkShaderModuleCreateInfo m{};
  m.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  m.codeSize = spirv->bytes;
  m.pCode = spirv->words;
  VkShaderModule module = VK_NULL_HANDLE;
  check(api_.vkCreateShaderModule(device_, &m, nullptr, &module),
        std::string("shader module ") + name);
  VkComputePipelineCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
  info.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  info.stage.module = module;
  info.stage.pName = "main";
  std::vector<VkSpecializationMapEntry> entries(spec.size());
  for (size_t i = 0; i < spec.size(); ++i)
    entries[i] = {uint32_t(i), uint32_t(4 * i), sizeof(uint32_t)};
  VkSpecializationInfo spec_info{uint32_t(spec.size()), entries.data(), 4 * spec.size(),
                                 spec.data()};
  if (!spec.empty()) info.stage.pSpecializationInfo = &spec_info;
  info.layout = layout_;
  if (pipeline_stats_) info.flags = VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
  VkPipeline p = VK_NULL_HANDLE;
  const VkResult r = api_.vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &info, nullptr, &p);
  api_.vkDestroyShaderModule(device_, module, nullptr);
  check(r, std::string("building the compute pipeline ") + name);
  pipelines_.push_back({name, spec, p});
  if (pipeline_stats_) {
    std::string label = name;
    for (size_t i = 0; i < spec.size(); ++i) label += (i ? "," : " <") + std::to_string(spec[i]);
    stats_.push_back({spec.empty() ? label : label + ">", pipeline_statistics(p)});
  }
  return p;
}

std::string Context::pipeline_statistics(VkPipeline p) const {
  if (!api_.vkGetPipelineExecutablePropertiesKHR || !api_.vkGetPipelineExecutableStatisticsKHR)
    return "";
  VkPipelineInfoKHR pi{};
  pi.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR;
  pi.pipeline = p;
  uint32_t n_exec = 0;
  if (api_.vkGetPipelineExecutablePropertiesKHR(device_, &pi, &n_exec, nullptr) != VK_SUCCESS)
    return "";
  std::string out;
  for (uint32_t e = 0; e < n_exec; ++e) {
    VkPipelineExecutableInfoKHR ei{};
    ei.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR;
    ei.pipeline = p;
    ei.executableIndex = e;
    uint32_t n = 0;
    if (api_.vkGetPipelineExecutableStatisticsKHR(device_, &ei, &n, nullptr) != VK_SUCCESS)
      continue;
    std::vector<VkPipelineExecutableStatisticKHR> st(n);
    for (auto& s : st) s.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR;
    if (api_.vkGetPipelineExecutableStatisticsKHR(device_, &ei, &n, st.data()) != VK_SUCCESS)
      continue;
    for (uint32_t i = 0; i < n; ++i) {
      std::string v;
      switch (st[i].format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
          v = st[i].value.b32 ? "yes" : "no";
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
          v = std::to_string(st[i].value.i64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
          v = std::to_string(st[i].value.u64);
          break;
        default:
          v = std::to_string(st[i].value.f64);
      }
      out += (out.empty() ? "" : ", ") + std::string(st[i].name) + " " + v;
    }
  }
  return out;
}

VkCommandBuffer Context::allocate_command_buffer() {
  VkCommandBufferAllocateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  info.commandPool = pool_;
  info.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  info.commandBufferCount = 1;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  check(api_.vkAllocateCommandBuffers(device_, &info, &cmd), "vkAllocateCommandBuffers");
  return cmd;
}

void Context::free_command_buffer(VkCommandBuffer cmd) {
  if (!cmd) return;
  if (auto it = timestamps_.find(cmd); it != timestamps_.end()) {
    api_.vkDestroyQueryPool(device_, it->second.pool, nullptr);
    timestamps_.erase(it);
  }
  api_.vkFreeCommandBuffers(device_, pool_, 1, &cmd);
}

// Queries per command buffer: a 7B forward records ~450 dispatches and copies.
constexpr uint32_t kTimestampsPerCommandBuffer = 8192;

void Context::profile_begin(VkCommandBuffer cmd) {
  Timestamps& t = timestamps_[cmd];
  if (!t.pool) {
    VkQueryPoolCreateInfo q{};
    q.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
    q.queryType = VK_QUERY_TYPE_TIMESTAMP;
    q.queryCount = kTimestampsPerCommandBuffer;
    check(api_.vkCreateQueryPool(device_, &q, nullptr, &t.pool), "vkCreateQueryPool");
  }
  t.marks.clear();
  api_.vkCmdResetQueryPool(cmd, t.pool, 0, kTimestampsPerCommandBuffer);
  api_.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, t.pool, 0);
}

void Context::profile_mark(VkCommandBuffer cmd, std::string what) {
  Timestamps& t = timestamps_[cmd];
  if (!t.pool || t.marks.size() + 1 >= kTimestampsPerCommandBuffer) return;  // untimed
  t.marks.push_back(std::move(what));
  api_.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, t.pool,
                           uint32_t(t.marks.size()));
}

void Context::collect_profile(VkCommandBuffer cmd) {
  auto it = timestamps_.find(cmd);
  if (it == timestamps_.end() || it->second.marks.empty()) return;
  const Timestamps& t = it->second;
  std::vector<uint64_t> ticks(t.marks.size() + 1);
  check(api_.vkGetQueryPoolResults(device_, t.pool, 0, uint32_t(ticks.size()),
                                   ticks.size() * sizeof(uint64_t), ticks.data(), sizeof(uint64_t),
                                   VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
        "vkGetQueryPoolResults");
  for (size_t i = 0; i < t.marks.size(); ++i) {
    const uint64_t dt = (ticks[i + 1] - ticks[i]) & timestamp_mask_;
    auto& [ms, count] = profile_totals_[t.marks[i]];
    ms += double(dt) * timestamp_ns_ * 1e-6;
    ++count;
  }
}

void Context::print_profile() const {
  if (profile_totals_.empty()) return;
  std::vector<std::pair<std::string, std::pair<double, uint64_t>>> rows(profile_totals_.begin(),
                                                                        profile_totals_.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  double total = 0;
  for (const auto& r : rows) total += r.second.first;
  std::fprintf(stderr, "vulkan profile on %s: %.1f ms of GPU time in dispatches and copies\n",
               device_name_.c_str(), total);
  std::fprintf(stderr, "  %10s %8s %10s %6s  %s\n", "ms", "calls", "us/call", "%", "shader [grid]");
  for (const auto& [name, v] : rows)
    std::fprintf(stderr, "  %10.2f %8llu %10.2f %6.2f  %s\n", v.first,
                 static_cast<unsigned long long>(v.second), 1e3 * v.first / double(v.second),
                 100.0 * v.first / total, name.c_str());
  for (const auto& [name, stats] : stats_)
    if (!stats.empty())
      std::fprintf(stderr, "vulkan pipeline %s: %s\n", name.c_str(), stats.c_str());
}

void Context::submit_and_wait(VkCommandBuffer cmd) {
  VkSubmitInfo s{};
  s.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  s.commandBufferCount = 1;
  s.pCommandBuffers = &cmd;
  check(api_.vkQueueSubmit(queue_, 1, &s, fence_), "vkQueueSubmit");
  const VkResult r = api_.vkWaitForFences(device_, 1, &fence_, VK_TRUE, UINT64_MAX);
  check(r, "waiting for the device");
  check(api_.vkResetFences(device_, 1, &fence_), "vkResetFences");
  check_validation();
  if (profile_) collect_profile(cmd);
}

void Context::check_validation() {
  const uint64_t n = validation_error_count();
  if (n == validation_seen_) return;
  validation_seen_ = n;
  fail("the validation layer reported errors (" + std::to_string(n) +
       " in this process; first: " + first_validation_error() + ")");
}

Recorder::Recorder(Context& ctx, VkCommandBuffer cmd) : ctx_(ctx), cmd_(cmd) {}

void Recorder::begin() {
  VkCommandBufferBeginInfo b{};
  b.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  check(ctx_.api().vkBeginCommandBuffer(cmd_, &b), "vkBeginCommandBuffer");
  if (ctx_.profiling()) ctx_.profile_begin(cmd_);
}

void Recorder::end() {
  check(ctx_.api().vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
}

void Recorder::dispatch_raw(const char* name, const Specialization& spec, const void* push,
                            size_t bytes, uint32_t gx, uint32_t gy, uint32_t gz) {
  const Api& api = ctx_.api();
  api.vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, ctx_.pipeline(name, spec));
  api.vkCmdPushConstants(cmd_, ctx_.pipeline_layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0,
                         uint32_t(bytes), push);
  api.vkCmdDispatch(cmd_, gx, gy, gz);
  if (!independent_) barrier();
  if (ctx_.profiling())
    ctx_.profile_mark(cmd_, std::string(name) + " [" + std::to_string(gx) + "," +
                                std::to_string(gy) + "," + std::to_string(gz) + "]");
}

void Recorder::end_independent() {
  independent_ = false;
  barrier();
}

void Recorder::copy(const Buffer& src, size_t src_offset, const Buffer& dst, size_t dst_offset,
                    size_t bytes, const char* what) {
  VkBufferCopy region{src_offset, dst_offset, bytes};
  ctx_.api().vkCmdCopyBuffer(cmd_, src.buffer, dst.buffer, 1, &region);
  barrier();
  if (ctx_.profiling()) ctx_.profile_mark(cmd_, what);
}

void Recorder::barrier() {
  VkMemoryBarrier m{};
  m.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  m.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  m.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                    VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                    VK_ACCESS_HOST_READ_BIT;
  ctx_.api().vkCmdPipelineBarrier(
      cmd_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
          VK_PIPELINE_STAGE_HOST_BIT,
      0, 1, &m, 0, nullptr, 0, nullptr);
}

}  // namespace lockstep::vk
