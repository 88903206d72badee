// Runs the built lockstep binary as a child process with given arguments, stdin and environment
// changes, and captures stdout, stderr and the exit code separately, so tests can hold stdout to
// "exactly the generated text".
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::test {

struct CliRun {
  int exit_code = -1;  // -1 when the process did not exit normally (signal, timeout)
  std::string out, err;
  bool timed_out = false;
  std::vector<std::string> err_lines() const;  // stderr split on '\n', without empty lines
};

// env: name -> value to set, or nullopt to unset; the rest of the environment is inherited.
// A child still running after timeout_s is killed and reported as timed out.
CliRun run_lockstep(const std::vector<std::string>& args, const std::string& stdin_text = "",
                    const std::map<std::string, std::optional<std::string>>& env = {},
                    int timeout_s = 300);

// A fresh directory under the system temp dir, removed at process exit.
std::string temp_dir();

}  // namespace lockstep::test
