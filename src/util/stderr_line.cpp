#include "util/stderr_line.h"

#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace lockstep {

namespace {
std::mutex& line_mutex() {
  static std::mutex mu;
  return mu;
}
void (*g_hook)() = nullptr;
}  // namespace

void set_stderr_line_hook(void (*before_message)()) {
  std::lock_guard<std::mutex> lock(line_mutex());
  g_hook = before_message;
}

void stderr_line(const char* format, ...) {
  std::lock_guard<std::mutex> lock(line_mutex());
  if (g_hook) g_hook();
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fflush(stderr);
}

}  // namespace lockstep
