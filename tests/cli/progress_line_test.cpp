// The progress line (cli/progress_line.h) as a user sees it: drawn in place on stderr while stderr
// is a terminal, never when stderr is a pipe or with --quiet. make-model of a 135M shape takes
// seconds, long enough for the line to be drawn (short stages are not).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/cli_process_util.h"
#include "common/model_paths.h"

extern char** environ;

namespace lockstep::test {
namespace {

struct TerminalRun {
  int exit_code = -1;
  std::string err;  // what the terminal showed of stderr
};

// Runs lockstep with stderr on a pseudo-terminal (stdin and stdout on /dev/null).
TerminalRun run_with_stderr_at_terminal(const std::vector<std::string>& args) {
  TerminalRun r;
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  EXPECT_GE(master, 0);
  EXPECT_EQ(grantpt(master), 0);
  EXPECT_EQ(unlockpt(master), 0);
  const std::string slave_name = ptsname(master);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, slave_name.c_str(), O_RDWR, 0);
  posix_spawn_file_actions_addclose(&fa, master);
  std::vector<std::string> argv_s = {LOCKSTEP_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, LOCKSTEP_BINARY, &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  // Read until the child has exited and the terminal is drained.
  int status = 0;
  bool exited = false;
  for (int waited_ms = 0; waited_ms < 300000;) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 50) > 0) {
      char buf[4096];
      const ssize_t n = read(master, buf, sizeof buf);
      if (n > 0) {
        r.err.append(buf, size_t(n));
        continue;
      }
    } else {
      waited_ms += 50;
    }
    if (exited) break;
    if (waitpid(pid, &status, WNOHANG) == pid) exited = true;
  }
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  close(master);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<std::string> make_model_args(const std::string& out, bool quiet) {
  std::vector<std::string> a = {"make-model", "--preset", "smollm2-135m", "--arch", "llama",
                                "--quant",    "q4_k_m",   "-o",           out,      "-t",
                                "1"};
  if (quiet) a.push_back("--quiet");
  return a;
}

TEST(ProgressLine, DrawnInPlaceAtATerminalAndErasedAtTheEnd) {
  const std::string out = temp_dir() + "/progress.gguf";
  const TerminalRun r = run_with_stderr_at_terminal(make_model_args(out, false));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string drawn = "\r\x1b[K[lockstep] make-model: writing " + out;
  ASSERT_NE(r.err.find(drawn), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("%"), std::string::npos) << r.err;
  // Erased before the final report, which starts a clean line.
  EXPECT_NE(r.err.find("\r\x1b[Kmake-model: wrote " + out), std::string::npos) << r.err;
}

TEST(ProgressLine, NeverWithQuietOrWhenStderrIsNotATerminal) {
  const std::string out = temp_dir() + "/quiet.gguf";
  const TerminalRun quiet = run_with_stderr_at_terminal(make_model_args(out, true));
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err.find("[lockstep] make-model"), std::string::npos) << quiet.err;
  EXPECT_EQ(quiet.err.find('\x1b'), std::string::npos) << quiet.err;

  const CliRun piped = run_lockstep(make_model_args(out, false));
  ASSERT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_EQ(piped.err.find("[lockstep] make-model"), std::string::npos) << piped.err;
  EXPECT_EQ(piped.err.find('\x1b'), std::string::npos) << piped.err;
}

TEST(ProgressLine, LoadingAndTheGateAreShownBeforeTheHeader) {
  const std::string model = smollm2_path();
  if (model.empty()) GTEST_SKIP() << "SmolLM2 absent (scripts/get-default-model.sh)";
  const TerminalRun r = run_with_stderr_at_terminal(
      {"run", "-m", model, "-p", "Hi", "-n", "1", "--temp", "0", "--backend", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t gate = r.err.find("\r\x1b[K[lockstep] parity gate: the candidate against the CPU");
  ASSERT_NE(gate, std::string::npos) << r.err;
  const size_t header = r.err.find("\r\x1b[Klockstep run: " + model);
  ASSERT_NE(header, std::string::npos) << r.err;
  EXPECT_LT(gate, header);
}

}  // namespace
}  // namespace lockstep::test
