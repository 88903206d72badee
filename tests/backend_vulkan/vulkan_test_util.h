// Helpers of the Vulkan op and backend tests: whether a device exists (the tests skip visibly
// without one), which device to use, and host-visible test buffers with guard regions.
//
// Every test file compiles without Vulkan too: bodies that need the backend's headers sit inside
// #ifdef LOCKSTEP_HAVE_VULKAN, and the #else branch holds one test that skips with the reason.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#ifdef LOCKSTEP_HAVE_VULKAN
#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_ops.h"
#include "backend/vulkan/vulkan_backend.h"
#endif

namespace lockstep::vulkan_test {

// Empty when a Vulkan device can run the tests; else why not ("this lockstep was built without
// Vulkan", "no Vulkan loader ...", "no Vulkan device").
std::string skip_reason();

#define REQUIRE_VULKAN_DEVICE()                                      \
  do {                                                               \
    const std::string why_ = ::lockstep::vulkan_test::skip_reason(); \
    if (!why_.empty()) GTEST_SKIP() << "skipped: " << why_;          \
  } while (0)

#ifdef LOCKSTEP_HAVE_VULKAN
// The device the tests use: the first GPU, else the first device (lavapipe in CI).
int test_device();

// A host-visible buffer of n elements of T with guard regions on both sides, filled with a
// sentinel; the interior starts as NaN bytes (0xFF) so an element a shader forgot to write fails.
// Shaders reach it by address().
template <typename T>
class TestBuffer {
 public:
  static constexpr size_t kGuard = 256;
  static constexpr uint8_t kSentinel = 0xA5;

  TestBuffer(vk::Context& ctx, size_t n, uint8_t fill = 0xFF) : ctx_(ctx), n_(n) {
    buf_ = ctx.create_buffer(bytes() + 2 * kGuard, true, "test buffer");
    uint8_t* p = static_cast<uint8_t*>(buf_.mapped);
    std::memset(p, kSentinel, kGuard);
    std::memset(p + kGuard, fill, bytes());
    std::memset(p + kGuard + bytes(), kSentinel, kGuard);
  }
  TestBuffer(vk::Context& ctx, const std::vector<T>& host) : TestBuffer(ctx, host.size()) {
    std::memcpy(data(), host.data(), bytes());
  }
  ~TestBuffer() { ctx_.destroy(buf_); }
  TestBuffer(const TestBuffer&) = delete;
  TestBuffer& operator=(const TestBuffer&) = delete;

  VkDeviceAddress address() const { return buf_.address + kGuard; }
  T* data() const { return reinterpret_cast<T*>(static_cast<uint8_t*>(buf_.mapped) + kGuard); }
  size_t bytes() const { return n_ * sizeof(T); }
  std::vector<T> read() const { return std::vector<T>(data(), data() + n_); }
  bool guards_intact() const {
    const uint8_t* p = static_cast<const uint8_t*>(buf_.mapped);
    for (size_t i = 0; i < kGuard; ++i)
      if (p[i] != kSentinel || p[kGuard + bytes() + i] != kSentinel) return false;
    return true;
  }

 private:
  vk::Context& ctx_;
  size_t n_;
  vk::Buffer buf_;
};

#define EXPECT_GUARDS(buf) EXPECT_TRUE((buf).guards_intact()) << "out-of-bounds write around " #buf

// Records what `body` records into one command buffer, submits it and waits (which throws when
// the validation layer reported an error).
void run_commands(vk::Context& ctx, const std::function<void(vk::Recorder&)>& body);
#endif

}  // namespace lockstep::vulkan_test
