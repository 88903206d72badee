// inspect on a real file (../shared): a token id stored as -1 reads as "none".
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/cli_process_util.h"

namespace lockstep::test {
namespace {

TEST(LlamaCompatModel, InspectShowsMinusOneTokenIdsAsNone) {
  // stories260K stores the padding id as -1 (4294967295 as a uint32) and has no eot key.
  const char* kStories = "../shared/models/stories260K.gguf";
  const auto r = run_lockstep({"inspect", kStories});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("bos 1, eos 2, eot none, pad none,"), std::string::npos) << r.out;
  // The JSON keeps the number the file holds.
  const auto j = nlohmann::json::parse(run_lockstep({"inspect", kStories, "--json"}).out);
  EXPECT_EQ(j["tokenizer"]["pad"], 4294967295u);
}

}  // namespace
}  // namespace lockstep::test
