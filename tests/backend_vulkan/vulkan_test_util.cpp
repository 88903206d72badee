#include "backend_vulkan/vulkan_test_util.h"

namespace lockstep::vulkan_test {

#ifdef LOCKSTEP_HAVE_VULKAN
std::string skip_reason() {
  try {
    if (vulkan_devices().empty()) return "no Vulkan device";
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
}

int test_device() {
  const auto devices = vulkan_devices();
  for (size_t i = 0; i < devices.size(); ++i)
    if (!devices[i].is_cpu) return int(i);
  return 0;
}

void run_commands(vk::Context& ctx, const std::function<void(vk::Recorder&)>& body) {
  VkCommandBuffer cmd = ctx.allocate_command_buffer();
  vk::Recorder rec(ctx, cmd);
  try {
    rec.begin();
    body(rec);
    rec.end();
    ctx.submit_and_wait(cmd);
  } catch (...) {
    ctx.free_command_buffer(cmd);
    throw;
  }
  ctx.free_command_buffer(cmd);
}
#else
std::string skip_reason() {
  return "this lockstep was built without Vulkan (LOCKSTEP_VULKAN=OFF, or no Vulkan headers or "
         "glslc at build time)";
}
#endif

}  // namespace lockstep::vulkan_test
