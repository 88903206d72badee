// The CLI's plumbing under hostile surroundings, as a user meets it: the built binary with a FIFO
// or a directory where a file belongs, a symlink as make-model's output, stdout on a full device,
// absurd thread counts, and file names carrying newlines into error messages. Each must end in a
// clear one-line error with the documented exit code, never a hang, a crash or a silent success.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/cli_process_util.h"
#include "engine/chain_model_util.h"
#include "gguf/gguf_writer.h"

namespace lockstep::test {
namespace {

const std::string& chain_model() {
  static const std::string path = [] {
    const std::string p = temp_dir() + "/plumbing-chain.gguf";
    const auto bytes = chain_model_bytes();
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }();
  return path;
}

// Exactly one non-empty stderr line, containing every one of `what`; nothing on stdout (with
// --json: only the JSON error object).
void expect_one_line_error(const CliRun& r, int code, const std::vector<std::string>& what,
                           const std::string& ctx, bool json = false) {
  EXPECT_FALSE(r.timed_out) << ctx << ": hung";
  EXPECT_EQ(r.exit_code, code) << ctx << "\n" << r.err;
  if (json)
    EXPECT_EQ(r.out.rfind("{\"error\":", 0), 0u) << ctx << ": " << r.out;
  else
    EXPECT_EQ(r.out, "") << ctx;
  const auto lines = r.err_lines();
  ASSERT_EQ(lines.size(), 1u) << ctx << "\n" << r.err;
  for (const auto& w : what) EXPECT_NE(lines[0].find(w), std::string::npos) << ctx << ": " << w;
}

int thread_limit() {
  return 4 * std::max(1, int(std::thread::hardware_concurrency()));
}

TEST(CliPlumbing, ThreadCountsBeyondTheLimitAreUsageErrors) {
  const std::string limit = std::to_string(thread_limit());
  for (const std::string& t : {std::to_string(thread_limit() + 1), std::string("10000")}) {
    expect_one_line_error(
        run_lockstep({"run", "-m", chain_model(), "-p", "", "--temp", "0", "-t", t}, "", {}, 60), 2,
        {"--threads", limit}, "run -t " + t);
    expect_one_line_error(run_lockstep({"bench", "-m", chain_model(), "-t", t}, "", {}, 60), 2,
                          {"--threads", limit}, "bench -t " + t);
    const std::string out = temp_dir() + "/never-threads.gguf";
    expect_one_line_error(
        run_lockstep({"make-model", "--preset", "tiny", "--arch", "llama", "-o", out, "-t", t}, "",
                     {}, 60),
        2, {"--threads", limit}, "make-model -t " + t);
    EXPECT_FALSE(std::filesystem::exists(out));
  }
  // The limit itself is allowed.
  const auto r = run_lockstep(
      {"run", "-m", chain_model(), "-p", "", "--temp", "0", "-n", "1", "-t", limit}, "", {}, 120);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(CliPlumbing, FifoAsModelIsRejectedInsteadOfHanging) {
  const std::string fifo = temp_dir() + "/model.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // Nobody ever writes to the FIFO: opening it for reading without O_NONBLOCK waits forever.
  const std::vector<std::vector<std::string>> commands = {
      {"run", "-m", fifo, "-p", "x"}, {"inspect", fifo},     {"inspect", "--json", fifo},
      {"tokenize", "-m", fifo, "x"},  {"bench", "-m", fifo},
  };
  for (const auto& args : commands)
    expect_one_line_error(run_lockstep(args, "", {}, 20), 2, {fifo, "not a regular file"}, args[0],
                          std::find(args.begin(), args.end(), "--json") != args.end());
}

TEST(CliPlumbing, MakeModelRefusesToReplaceWhatIsNotARegularFile) {
  const std::string dir = temp_dir() + "/make-model-targets";
  std::filesystem::create_directories(dir);
  const std::string real = dir + "/real.gguf", link = dir + "/link.gguf", fifo = dir + "/out.fifo";
  std::ofstream(real) << "keep me";
  std::filesystem::create_symlink(real, link);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& target : {link, fifo, dir}) {
    expect_one_line_error(
        run_lockstep({"make-model", "--preset", "tiny", "--arch", "llama", "-o", target}, "", {},
                     60),
        2, {target, "not a regular file"}, target);
  }
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_EQ(std::filesystem::file_size(real), 7u);
  struct stat st {};
  ASSERT_EQ(lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  // A regular file is still replaced.
  const auto r =
      run_lockstep({"make-model", "--preset", "tiny", "--arch", "llama", "-o", real}, "", {}, 60);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(std::filesystem::file_size(real), 7u);
}

// Runs the binary through the shell with stdout on /dev/full (the shared helper captures stdout
// in a file, which never fills). `timeout` turns a regression into a failure, not a hang.
CliRun run_into_dev_full(const std::vector<std::string>& args, const std::string& stdin_text) {
  static int counter = 0;
  const std::string base = temp_dir() + "/full" + std::to_string(counter++);
  std::ofstream(base + ".in", std::ios::binary) << stdin_text;
  std::string cmd = "timeout 120 '" + std::string(LOCKSTEP_BINARY) + "'";
  for (const auto& a : args) cmd += " '" + a + "'";  // temp paths hold no quotes
  cmd += " <'" + base + ".in' >/dev/full 2>'" + base + ".err'";
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.timed_out = r.exit_code == 124;
  std::ifstream in(base + ".err", std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  return r;
}

TEST(CliPlumbing, FailedWritesOnStdoutAreErrors) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string& m = chain_model();
  const std::string expected = "lockstep: error: writing to stdout failed: No space left on device";
  struct Case {
    std::vector<std::string> args;
    std::string stdin_text;
  };
  const std::vector<Case> cases = {
      {{"run", "-m", m, "-t", "1", "--temp", "0", "-p", ""}, ""},
      {{"run", "-m", m, "-t", "1", "--temp", "0", "-p", "", "--json"}, ""},
      {{"inspect", m}, ""},
      {{"inspect", "--json", m}, ""},
      {{"bench", "-m", m, "-p", "8", "-n", "4", "-r", "1", "-t", "1"}, ""},
      {{"bench", "-m", m, "-p", "8", "-n", "4", "-r", "1", "-t", "1", "--json"}, ""},
      {{"chat", "-m", m, "-t", "1", "-c", "1024", "--temp", "0", "-n", "4"}, "hello\nagain\n"},
      {{"tokenize", "-m", m, "Once upon a time"}, ""},
      {{"--help"}, ""},
  };
  for (const auto& c : cases) {
    const std::string ctx = c.args[0] + (c.args.back() == "--json" ? " --json" : "");
    const CliRun r = run_into_dev_full(c.args, c.stdin_text);
    EXPECT_FALSE(r.timed_out) << ctx;
    EXPECT_EQ(r.exit_code, 1) << ctx << "\n" << r.err;
    const auto lines = r.err_lines();
    ASSERT_FALSE(lines.empty()) << ctx;
    // Human inspect output goes through printf, whose failed buffer flush leaves the error flag
    // but not always the reason.
    if (ctx == "inspect") {
      EXPECT_EQ(lines.back().rfind(expected.substr(0, expected.find(": No space")), 0), 0u)
          << lines.back();
    } else {
      EXPECT_EQ(lines.back(), expected) << ctx << "\n" << r.err;
    }
    // Streamed output stops at the first failed write: no timings line after the error, and a
    // chat does not go on to its second turn.
    if (c.args[0] == "run" && ctx != "run --json") {
      EXPECT_EQ(r.err.find("finish"), std::string::npos) << r.err;
    }
    if (c.args[0] == "chat") {
      EXPECT_EQ(r.err.find("new prompt tok"), std::string::npos) << r.err;
    }
  }
}

TEST(CliPlumbing, ControlCharactersInAnErrorStayOnOneLine) {
  gguf::GgufWriter w;
  w.set("general.architecture", gguf::Value::of_string("llama\nsecond line\x1b[31m"));
  const std::string path = temp_dir() + "/newline-arch.gguf";
  w.write(path);
  for (const char* cmd : {"run", "bench"}) {
    expect_one_line_error(run_lockstep({cmd, "-m", path, "-p", "1"}, "", {}, 60), 2,
                          {path, "llama\\nsecond line\\x1b[31m"}, cmd);
  }
  // A usage error quoting a flag's value is escaped the same way.
  expect_one_line_error(run_lockstep({"run", "-m", chain_model(), "--temp", "1\n2"}, "", {}, 60), 2,
                        {"--temp", "1\\n2"}, "--temp");
}

TEST(CliPlumbing, DirectoryAsPromptFileIsBadInput) {
  const std::string dir = temp_dir() + "/prompt-dir";
  std::filesystem::create_directories(dir);
  expect_one_line_error(
      run_lockstep({"run", "-m", chain_model(), "-t", "1", "-f", dir}, "", {}, 60), 2,
      {"cannot read prompt file '" + dir + "' (-f): is a directory"}, "run -f DIR");
  expect_one_line_error(run_lockstep({"tokenize", "-m", chain_model(), "-f", dir}, "", {}, 60), 2,
                        {dir, "is a directory"}, "tokenize -f DIR");
  // A pipe is a fine prompt file (as in -f <(command)).
  const std::string fifo = temp_dir() + "/prompt.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] { std::ofstream(fifo) << "hello"; });
  const auto r = run_lockstep({"tokenize", "-m", chain_model(), "--ids", "-f", fifo}, "", {}, 60);
  writer.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, 1), "[") << r.out;
}

TEST(CliPlumbing, ExplicitlyEmptyModelPathIsAnError) {
  // With $LOCKSTEP_MODEL naming a good model, a silent fallback to the default would succeed.
  const std::map<std::string, std::optional<std::string>> env = {{"LOCKSTEP_MODEL", chain_model()}};
  for (const std::string cmd : {"run", "chat", "bench", "tokenize"}) {
    std::vector<std::string> args = {cmd, "-m", ""};
    if (cmd == "run") args.insert(args.end(), {"-p", "", "-t", "1"});
    if (cmd == "tokenize") args.push_back("x");
    expect_one_line_error(run_lockstep(args, "", env, 60), 2, {"-m", "empty path"}, cmd);
  }
  const auto r = run_lockstep({"run", "-p", "", "-t", "1", "--temp", "0"}, "", env, 60);
  EXPECT_EQ(r.exit_code, 0) << r.err;  // not giving -m still means the default
}

}  // namespace
}  // namespace lockstep::test
