#include "cli/interactive_process_util.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>

namespace lockstep::test {

namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? int(left.count()) : 0;
}

}  // namespace

InteractiveRun::InteractiveRun(const std::vector<std::string>& args, bool terminal)
    : terminal_(terminal) {
  std::vector<std::string> argv_s = {LOCKSTEP_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  int err_pipe[2];
  if (pipe(err_pipe) != 0) throw std::runtime_error("pipe failed");
  int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
  if (terminal) {
    struct winsize ws {};
    ws.ws_row = 40;
    ws.ws_col = 200;
    int master = -1;
    pid_ = forkpty(&master, nullptr, nullptr, &ws);
    if (pid_ < 0) throw std::runtime_error("forkpty failed");
    if (pid_ == 0) {
      dup2(err_pipe[1], 2);
      close(err_pipe[0]);
      close(err_pipe[1]);
      execv(argv[0], argv.data());
      _exit(127);
    }
    in_fd_ = out_fd_ = master;
  } else {
    if (pipe(in_pipe) != 0 || pipe(out_pipe) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      dup2(in_pipe[0], 0);
      dup2(out_pipe[1], 1);
      dup2(err_pipe[1], 2);
      for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]})
        close(fd);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    in_fd_ = in_pipe[1];
    out_fd_ = out_pipe[0];
  }
  close(err_pipe[1]);
  err_fd_ = err_pipe[0];
}

InteractiveRun::~InteractiveRun() {
  if (!exited_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
  }
  if (!terminal_ && in_fd_ >= 0) close(in_fd_);
  if (out_fd_ >= 0) close(out_fd_);
  if (err_fd_ >= 0) close(err_fd_);
}

void InteractiveRun::write(const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(in_fd_, text.data() + done, text.size() - done);
    if (n <= 0) throw std::runtime_error("writing to the child failed");
    done += size_t(n);
  }
}

void InteractiveRun::close_stdin() {
  if (terminal_) {
    write("\x04");  // Ctrl-D at the start of a line: end of input
  } else if (in_fd_ >= 0) {
    close(in_fd_);
    in_fd_ = -1;
  }
}

void InteractiveRun::interrupt() {
  if (terminal_) {
    struct termios t {};
    tcgetattr(in_fd_, &t);
    write(std::string(1, char(t.c_cc[VINTR])));  // the line discipline raises SIGINT
  } else {
    kill(pid_, SIGINT);
  }
}

void InteractiveRun::pump(int timeout_ms) {
  std::vector<pollfd> fds;
  if (out_fd_ >= 0) fds.push_back({out_fd_, POLLIN, 0});
  if (err_fd_ >= 0) fds.push_back({err_fd_, POLLIN, 0});
  if (fds.empty() || poll(fds.data(), fds.size(), timeout_ms) <= 0) return;
  for (const auto& p : fds) {
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
    char buf[4096];
    const ssize_t n = read(p.fd, buf, sizeof buf);
    std::string& to = p.fd == err_fd_ ? err_ : out_;
    if (n > 0) {
      to.append(buf, size_t(n));
    } else {  // end of file (or EIO: the terminal's other side closed)
      if (p.fd == err_fd_) {
        close(err_fd_);
        err_fd_ = -1;
      } else {
        close(out_fd_);
        if (terminal_) in_fd_ = -1;
        out_fd_ = -1;
      }
    }
  }
}

bool InteractiveRun::wait_for(const std::string& which, const std::string& text, int timeout_ms,
                              size_t from) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  const std::string& buf = which == "err" ? err_ : out_;
  for (;;) {
    if (buf.size() > from && buf.find(text, from) != std::string::npos) return true;
    if (ms_left(deadline) == 0 || (out_fd_ < 0 && err_fd_ < 0)) return false;
    pump(std::min(ms_left(deadline), 50));
  }
}

bool InteractiveRun::wait_for_out(const std::string& text, int timeout_ms, size_t from) {
  return wait_for("out", text, timeout_ms, from);
}

bool InteractiveRun::wait_for_err(const std::string& text, int timeout_ms, size_t from) {
  return wait_for("err", text, timeout_ms, from);
}

bool InteractiveRun::wait_for_line_editor(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    // On Linux the master side reports the terminal's (the slave's) settings.
    struct termios t {};
    if (terminal_ && tcgetattr(in_fd_, &t) == 0 && !(t.c_lflag & ICANON)) return true;
    if (Clock::now() >= deadline) return false;
    pump(10);
  }
}

bool InteractiveRun::wait_for_out_bytes(size_t bytes, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out_.size() < bytes && Clock::now() < deadline) pump(50);
  return out_.size() >= bytes;
}

int InteractiveRun::wait(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!exited_) {
    if (waitpid(pid_, &status_, WNOHANG) == pid_) {
      exited_ = true;
      break;
    }
    if (ms_left(deadline) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
      exited_ = true;
      return -1;
    }
    pump(20);
  }
  // What was left in the pipes (bounded: a grandchild could hold them open).
  const auto drain_until = Clock::now() + std::chrono::seconds(2);
  while ((out_fd_ >= 0 || err_fd_ >= 0) && ms_left(drain_until) > 0) pump(50);
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
}

}  // namespace lockstep::test
