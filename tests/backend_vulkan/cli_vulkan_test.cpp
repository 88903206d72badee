// The Vulkan backend through the CLI: what a user sees when it serves, when it cannot (no
// driver, too little device memory: a forced --backend vulkan exits 4 with one line naming the
// cause; `auto` moves on to the next backend and says so), on the real stories260K model.
#include "backend_vulkan/vulkan_test_util.h"

#include <filesystem>

#include "common/cli_process_util.h"

namespace lockstep::vulkan_test {
namespace {

using test::CliRun;
using test::run_lockstep;

const std::string kModel = "../shared/models/stories260K.gguf";

std::vector<std::string> run_args(std::vector<std::string> extra) {
  std::vector<std::string> a = {"run", "-m", kModel,   "-p", "Once upon a time",
                                "-n",  "24", "--temp", "0"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

class VulkanCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kModel)) << kModel << " is missing (../shared)";
    REQUIRE_VULKAN_DEVICE();
  }
};

#ifdef LOCKSTEP_HAVE_VULKAN
std::map<std::string, std::optional<std::string>> device_env() {
  return {{"LOCKSTEP_VULKAN_DEVICE", std::to_string(test_device())},
          {"LOCKSTEP_VULKAN_VALIDATION", "1"},
          {"CUDA_VISIBLE_DEVICES", ""}};
}

TEST_F(VulkanCli, ForcedVulkanServesTheReferenceText) {
  CliRun ref = run_lockstep(run_args({"--backend", "cpu-ref"}));
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  CliRun r = run_lockstep(run_args({"--backend", "vulkan"}), "", device_env());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, ref.out);
  EXPECT_NE(r.err.find("backend vulkan (parity passed"), std::string::npos) << r.err;
}

// Prompt chunks of 5 tokens or more multiply in gemm.comp, decode in matvec.comp: the gate's
// probe (64 positions of its own text when the prompt is shorter) must run both. A 2-token prompt
// runs no tiled product itself, so the profile (LOCKSTEP_VULKAN_PROFILE) shows gemm.comp's
// dispatches with the gate on and none with it off.
TEST_F(VulkanCli, TheGateRunsTheTiledPromptProducts) {
  auto env = device_env();
  env["LOCKSTEP_VULKAN_PROFILE"] = "1";
  const std::vector<std::string> args = {"run", "-m",     kModel, "-p",        "Once",  "-n",
                                         "2",   "--temp", "0",    "--backend", "vulkan"};
  CliRun gated = run_lockstep(args, "", env);
  ASSERT_EQ(gated.exit_code, 0) << gated.err;
  EXPECT_NE(gated.err.find("prompt 2 tok"), std::string::npos) << gated.err;
  EXPECT_NE(gated.err.find("gemm_f32 ["), std::string::npos) << gated.err;
  EXPECT_NE(gated.err.find("matvec_f32 ["), std::string::npos) << gated.err;
  auto off_args = args;
  off_args.insert(off_args.end(), {"--parity", "off"});
  CliRun off = run_lockstep(off_args, "", env);
  ASSERT_EQ(off.exit_code, 0) << off.err;
  // Dispatch rows of the profile ("name [grid]"); its pipeline statistics, where the driver has
  // them, list every pipeline built, used or not.
  EXPECT_EQ(off.err.find("gemm_f32 ["), std::string::npos) << off.err;
  EXPECT_EQ(gated.out, off.out);
}

TEST_F(VulkanCli, NoDriverIsExit4WithOneLine) {
  auto env = device_env();
  env["VK_ICD_FILENAMES"] = "/nonexistent/lockstep-test-icd.json";
  env["VK_DRIVER_FILES"] = "/nonexistent/lockstep-test-icd.json";
  CliRun r = run_lockstep(run_args({"--backend", "vulkan"}), "", env);
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("vulkan"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("driver"), std::string::npos) << r.err;
}

TEST_F(VulkanCli, TooLittleDeviceMemoryForcedExits4AutoMovesOn) {
  // A 2-million-token context with 4096-token chunks: the attention score scratch alone
  // (4096 x 8 heads x 2M floats, 262 GB) is more than any device holds, while the CPU backend's
  // cache for it (1.3 GB, touched only where written) is fine.
  const std::vector<std::string> huge = {"-c", "2000000"};
  auto env = device_env();
  env["LOCKSTEP_VULKAN_MAX_BATCH"] = "4096";
  auto forced_args = run_args({"--backend", "vulkan"});
  forced_args.insert(forced_args.end(), huge.begin(), huge.end());
  CliRun forced = run_lockstep(forced_args, "", env);
  EXPECT_EQ(forced.exit_code, 4) << forced.err;
  EXPECT_TRUE(forced.out.empty()) << forced.out;
  ASSERT_EQ(forced.err_lines().size(), 1u) << forced.err;
  EXPECT_NE(forced.err.find("model needs"), std::string::npos) << forced.err;

  auto auto_args = run_args(huge);
  CliRun a = run_lockstep(auto_args, "", env);
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_NE(a.err.find("vulkan unavailable"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("trying cpu"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("backend cpu ("), std::string::npos) << a.err;
}
#endif

// Without a Vulkan device (or build) a forced --backend vulkan still says why, exit 4.
TEST(VulkanCliWithoutDevice, ForcedVulkanNamesWhatIsMissing) {
  if (skip_reason().empty()) GTEST_SKIP() << "skipped: a Vulkan device is present here";
  CliRun r = run_lockstep(run_args({"--backend", "vulkan"}));
  EXPECT_EQ(r.exit_code, 4) << r.err;
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("ulkan"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lockstep::vulkan_test
