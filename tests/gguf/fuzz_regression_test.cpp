// Inputs kept from fuzzing (tests/gguf/fuzz_regressions/): each must parse or raise a
// FormatError through the reader, and `lockstep inspect` must answer 0 or 2 on it, never crash.
// scripts/fuzz.sh seeds every new fuzzing run with these files too.
#include <gtest/gtest.h>

#include <filesystem>

#include "gguf/gguf_reader.h"
#include "gguf/gguf_test_util.h"
#include "util/error.h"

namespace lockstep::gguf_test {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> regression_inputs() {
  const fs::path dir = "tests/gguf/fuzz_regressions";
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) {
    ADD_FAILURE() << dir << " is missing (tests run from the repository root)";
    return out;
  }
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() != ".md") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  EXPECT_FALSE(out.empty());
  return out;
}

TEST(GgufFuzzRegressions, ReaderParsesOrRaisesFormatError) {
  for (const auto& path : regression_inputs()) {
    SCOPED_TRACE(path.string());
    const std::vector<uint8_t> bytes = read_file(path.string());
    try {
      auto f = gguf::GgufFile::from_bytes(bytes, path.filename().string());
      uint64_t sum = 0;
      for (const auto& t : f.tensors())
        for (uint64_t k = 0; k < t.n_bytes; ++k) sum += t.data[k];
      for (const auto& e : f.metadata()) sum += e.value.to_display().size();
      (void)sum;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(": at byte "), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a FormatError: " << e.what();
    }
  }
}

TEST(GgufFuzzRegressions, InspectAnswersZeroOrTwo) {
  for (const auto& path : regression_inputs()) {
    SCOPED_TRACE(path.string());
    for (const char* flags : {"", "--json "}) {
      const auto r = run_cli(std::string("inspect ") + flags + path.string());
      EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 2) << r.exit_code << "\n" << r.err;
      if (r.exit_code == 2 && r.out.empty()) {
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      }
    }
  }
}

// What run and tokenize do with a file before any compute: the tokenizer and the model binding.
// Their errors quote strings from the file, which must stay on one line too.
TEST(GgufFuzzRegressions, TokenizeAnswersZeroOrTwoWithOneLine) {
  for (const auto& path : regression_inputs()) {
    SCOPED_TRACE(path.string());
    const auto r = run_cli("tokenize -m " + path.string() + " x");
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 2) << r.exit_code << "\n" << r.err;
    if (r.exit_code == 2) {
      EXPECT_EQ(r.out, "");
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
  }
}

}  // namespace
}  // namespace lockstep::gguf_test
