// The Vulkan backend's default prompt chunk (backend/vulkan/chunk_plan.h): 512 tokens, halved
// until the model, its cache and the chunk's scratch fit the device, never below 64. A rule
// without a device: no Vulkan needed.
#include <gtest/gtest.h>

#include <vector>

#include "backend/vulkan/chunk_plan.h"

namespace lockstep::vk {
namespace {

constexpr size_t kMiB = size_t(1) << 20;
constexpr int kStart = 512, kLeast = 64;

// Scratch of 1 MiB a token; the sizes asked for are recorded.
struct Scratch {
  std::vector<size_t> asked;
  size_t operator()(size_t tokens) {
    asked.push_back(tokens);
    return tokens * kMiB;
  }
};

int plan(size_t fixed, size_t device, int start, Scratch& s) {
  return auto_chunk_tokens(fixed, std::ref(s), device, start, kLeast);
}

TEST(VulkanChunkPlan, KeepsTheStartWhereItFits) {
  Scratch s;
  EXPECT_EQ(plan(1000 * kMiB, 1512 * kMiB, kStart, s), 512);  // exactly full
  EXPECT_EQ(s.asked, std::vector<size_t>({512}));
}

TEST(VulkanChunkPlan, HalvesUntilItFits) {
  Scratch s;
  // 1000 MiB fixed + 128 MiB of scratch fit 1150 MiB; 256 and 512 do not.
  EXPECT_EQ(plan(1000 * kMiB, 1150 * kMiB, kStart, s), 128);
  EXPECT_EQ(s.asked, std::vector<size_t>({512, 256, 128}));
}

TEST(VulkanChunkPlan, StopsAtTheLeastEvenWhereThatDoesNotFit) {
  Scratch s;
  EXPECT_EQ(plan(1000 * kMiB, 900 * kMiB, kStart, s), kLeast);  // the allocation then refuses
  EXPECT_EQ(s.asked, std::vector<size_t>({512, 256, 128}));
  Scratch odd;  // a start cut to the context: 300 -> 150 -> 75 -> 64, not 37
  EXPECT_EQ(plan(0, 10 * kMiB, 300, odd), kLeast);
  EXPECT_EQ(odd.asked, std::vector<size_t>({300, 150, 75}));
}

TEST(VulkanChunkPlan, AShortContextIsLeftAlone) {
  Scratch s;
  EXPECT_EQ(plan(1000 * kMiB, 1 * kMiB, 32, s), 32);
  EXPECT_TRUE(s.asked.empty());
}

}  // namespace
}  // namespace lockstep::vk
