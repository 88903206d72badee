// Errors that cross a layer boundary. Each carries what went wrong and where, in one line,
// and the CLI maps its kind to a documented exit code (README "Exit codes").
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lockstep {

// Exit codes of the CLI. Keep in sync with README.md.
enum ExitCode : int {
  kExitOk = 0,
  kExitRuntime = 1,   // unexpected internal failure
  kExitBadInput = 2,  // usage error, bad flag, malformed/unsupported file
  kExitParity = 3,    // parity gate rejected a backend the user required
  kExitDevice = 4,    // GPU unavailable / out of memory for a forced GPU backend
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = kExitRuntime)
      : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Bad input from the user or from a file: bad flag, malformed GGUF, unknown architecture.
class InputError : public Error {
 public:
  explicit InputError(const std::string& what) : Error(what, kExitBadInput) {}
};

// A malformed or hostile GGUF file. The message names the file and the byte offset.
class FormatError : public InputError {
 public:
  FormatError(const std::string& file, uint64_t offset, const std::string& what)
      : InputError(file + ": at byte " + std::to_string(offset) + ": " + what) {}
};

// Text made safe to print inside one terminal line: a newline becomes "\n", any other control
// byte (and DEL) "\xNN"; other bytes are kept. Text longer than max_bytes is cut and ends in
// "...". Names quoted from files (keys, tensor names, metadata) go through this, with a cap.
std::string printable(std::string_view text, size_t max_bytes = std::string_view::npos);

// A whole error message as exactly one line (printable without a cap). Messages quote names
// taken from files and flags, so everything that prints an error's message goes through this.
std::string one_line(std::string_view message);

}  // namespace lockstep
