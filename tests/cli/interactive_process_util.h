// The built lockstep binary as a user drives it: a live child process that the test writes to
// while it runs, waits on for some output, interrupts (Ctrl-C) and then waits for. stdin and
// stdout are either pipes or a pseudo-terminal (isatty true, as at a real terminal; the terminal's
// output is then what the user sees: answer, prompts and echo). stderr is always a pipe of its own.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace lockstep::test {

class InteractiveRun {
 public:
  InteractiveRun(const std::vector<std::string>& args, bool terminal);
  ~InteractiveRun();  // kills the child if it still runs
  InteractiveRun(const InteractiveRun&) = delete;
  InteractiveRun& operator=(const InteractiveRun&) = delete;

  void write(const std::string& text);  // to stdin (typed, at a terminal)
  void close_stdin();                   // end of input (pipes only)
  // Ctrl-C: the interrupt character typed at the terminal, or SIGINT sent through the pipe mode.
  void interrupt();
  // Reads what comes until `text` appears in stdout (or stderr) after byte `from`, or the timeout
  // passes. Returns whether it appeared.
  bool wait_for_out(const std::string& text, int timeout_ms, size_t from = 0);
  bool wait_for_err(const std::string& text, int timeout_ms, size_t from = 0);
  // At a terminal: waits until the child has put it in raw mode (libedit reading a line), so that
  // what is typed next goes to the line editor, not to the kernel's line discipline.
  bool wait_for_line_editor(int timeout_ms);
  // Reads until stdout holds at least `bytes` bytes, or the timeout passes.
  bool wait_for_out_bytes(size_t bytes, int timeout_ms);
  // The exit code, or -1 when the child did not exit by itself within the timeout (then killed).
  int wait(int timeout_ms);

  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  void pump(int timeout_ms);
  bool wait_for(const std::string& buffer_name, const std::string& text, int timeout_ms,
                size_t from);

  bool terminal_;
  pid_t pid_ = -1;
  int in_fd_ = -1, out_fd_ = -1, err_fd_ = -1;  // in_fd_ == out_fd_ for a terminal
  std::string out_, err_;
  bool exited_ = false;
  int status_ = 0;
};

}  // namespace lockstep::test
