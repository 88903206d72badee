#include "util/stdio_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "util/error.h"

namespace lockstep {

namespace {

[[noreturn]] void throw_stdout_error(int err) {
  // err is 0 when the failure happened in an earlier write through printf whose errno may since
  // have been replaced: then no reason is better than a wrong one.
  throw Error(err ? std::string("writing to stdout failed: ") + std::strerror(err)
                  : std::string("writing to stdout failed"));
}

}  // namespace

std::string read_whole_file(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(what + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    const int err = errno;
    ::close(fd);
    throw InputError(what + ": " + (S_ISDIR(st.st_mode) ? "is a directory" : std::strerror(err)));
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw InputError(what + ": " + std::strerror(err));
    }
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

// A signal (chat's Ctrl-C handler is installed without SA_RESTART) may interrupt a write: that
// is not a failure, the write is retried.
void flush_retrying_interrupts() {
  errno = 0;
  while (std::fflush(stdout) != 0) {
    if (errno != EINTR) throw_stdout_error(errno);
    std::clearerr(stdout);
    errno = 0;
  }
}

void write_stdout(std::string_view text) {
  flush_retrying_interrupts();  // whatever printf left in the buffer goes first
  const char* p = text.data();
  size_t n = text.size();
  while (n > 0) {
    const ssize_t w = ::write(STDOUT_FILENO, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_stdout_error(errno);
    }
    p += w;
    n -= size_t(w);
  }
}

void flush_stdout() {
  flush_retrying_interrupts();
  if (std::ferror(stdout)) throw_stdout_error(0);
}

}  // namespace lockstep
