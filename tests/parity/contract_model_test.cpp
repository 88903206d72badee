// contracts/parity-gate-v1.yaml lists falsifiers, each naming the test that discharges it. This
// test runs every named test on its own and fails unless it exists, ran, and passed, so the
// contract cannot silently name a test that was renamed, deleted or skipped.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

struct Falsifier {
  std::string id;
  std::string binary;
  std::string test;
};

std::string unquote(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.pop_back();
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

// The contract uses a small, fixed subset of YAML: "- id: X" starts a falsifier, "test: "b:T""
// names its test.
std::vector<Falsifier> read_contract(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::vector<Falsifier> out;
  bool in_falsifiers = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("falsifiers:", 0) == 0) in_falsifiers = true;
    if (!in_falsifiers) continue;
    auto pos = line.find("- id:");
    if (pos != std::string::npos) {
      out.push_back({unquote(line.substr(line.find(':', pos) + 2)), "", ""});
      continue;
    }
    pos = line.find("test:");
    if (pos != std::string::npos && !out.empty()) {
      std::string spec = unquote(line.substr(pos + 6));
      auto colon = spec.find(':');
      if (colon != std::string::npos) {
        out.back().binary = spec.substr(0, colon);
        out.back().test = spec.substr(colon + 1);
      }
    }
  }
  return out;
}

std::string run(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  *status = pclose(p);
  return out;
}

TEST(ParityContract, EveryFalsifierNamesATestThatRanAndPassed) {
  auto falsifiers = read_contract("contracts/parity-gate-v1.yaml");
  ASSERT_GE(falsifiers.size(), 10u);
  for (const auto& f : falsifiers) {
    SCOPED_TRACE(f.id);
    ASSERT_FALSE(f.binary.empty()) << "falsifier without a test";
    const std::string bin = std::string(LOCKSTEP_TEST_BIN_DIR) + "/" + f.binary;
    ASSERT_TRUE(std::filesystem::exists(bin)) << "no test binary " << bin;
    int status = 0;
    std::string out = run("'" + bin + "' --gtest_filter='" + f.test + "' 2>&1", &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("[  PASSED  ] 1 test."), std::string::npos)
        << f.test << " did not run exactly one passing test:\n"
        << out;
    EXPECT_EQ(out.find("[  SKIPPED ]"), std::string::npos) << f.test << " was skipped:\n" << out;
  }
}

}  // namespace
