// `lockstep qa` on the real SmolLM2-135M-Instruct (when present): every available backend answers
// the golden questions, and the report carries each backend's parity verdict.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/cli_process_util.h"
#include "common/model_paths.h"

namespace lockstep {
namespace {

TEST(QaModel, SmolLM2PassesOnEveryBackend) {
  const std::string model = test::smollm2_path();
  if (model.empty())
    GTEST_SKIP() << "skipped: SmolLM2-135M-Instruct absent (scripts/get-default-model.sh)";
  auto r =
      test::run_lockstep({"qa", "-m", model, "--json"}, "", {{"LOCKSTEP_FAULT", std::nullopt}});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["passed"].get<bool>());
  EXPECT_EQ(j["parity"]["cpu"]["status"], "passed");
  EXPECT_EQ(j["parity"]["cpu-ref"]["status"], "not-required");
}

TEST(QaModel, QaFailsWhenABackendIsRejected) {
  const std::string model = test::smollm2_path();
  if (model.empty())
    GTEST_SKIP() << "skipped: SmolLM2-135M-Instruct absent (scripts/get-default-model.sh)";
  auto r = test::run_lockstep({"qa", "-m", model, "--backends", "cpu"}, "",
                              {{"LOCKSTEP_FAULT", "nan:3"}});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace lockstep
