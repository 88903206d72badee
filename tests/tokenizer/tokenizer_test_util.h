// Shared helpers for the tokenizer tests: reading ../shared data (a missing file fails the test
// loudly), the llama.cpp .inp/.out test-vector format, and running the lockstep binary.
#pragma once

#include <string>
#include <vector>

#include "common/model_paths.h"
#include "tokenizer/vocab.h"

namespace lockstep::tokenizer::test {

inline const std::string kVocabDir = "../shared/vocab/";
// SmolLM2-135M-Instruct from models/ or the default-model cache; empty when absent.
inline const std::string kSmolLM2 = lockstep::test::smollm2_path();

// Whole file, byte-exact. A missing or unreadable file is a fatal test failure (ADD_FAILURE and
// an exception), never a skip.
std::string read_file(const std::string& path);

// Splits a .inp file into its test strings (see ../shared/vocab/README.md).
std::vector<std::string> split_inp(const std::string& data);
// Parses a .out file: one line of space-separated ids per test string.
std::vector<std::vector<TokenId>> parse_out(const std::string& data);

// Loads a vocab, caching it for the life of the test binary (the big ones take a moment).
const Vocab& cached_vocab(const std::string& path);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the lockstep binary with the given arguments (each passed as one argv entry).
CommandResult run_lockstep(const std::vector<std::string>& args);

// "[1, 2, 3]" for messages.
std::string ids_to_string(const std::vector<TokenId>& ids);

}  // namespace lockstep::tokenizer::test
