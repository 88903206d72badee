#include "cli/progress_line.h"

#include <unistd.h>

#include <cstdio>

#include "util/error.h"
#include "util/stderr_line.h"

namespace lockstep::cli {

namespace {
using Clock = std::chrono::steady_clock;
constexpr auto kFirstDraw = std::chrono::milliseconds(250);
constexpr auto kRedraw = std::chrono::milliseconds(200);

// The one line being drawn; a message from below the CLI (util/stderr_line.h) erases it first.
ProgressLine* g_active = nullptr;
void erase_active() {
  if (g_active) g_active->erase();
}
}  // namespace

bool progress_wanted(bool quiet) {
  return !quiet && isatty(STDERR_FILENO) == 1;
}

ProgressLine::ProgressLine(bool enabled) : enabled_(enabled), since_(Clock::now()) {
  if (!enabled_) return;
  g_active = this;
  set_stderr_line_hook(erase_active);
  ticker_ = std::thread([this] { run(); });
}

ProgressLine::~ProgressLine() {
  if (!enabled_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  ticker_.join();
  set_stderr_line_hook(nullptr);
  g_active = nullptr;
  clear();
}

void ProgressLine::erase() {
  std::lock_guard<std::mutex> lock(mu_);
  if (drawn_) std::fputs("\r\x1b[K", stderr);
  drawn_ = false;
}

void ProgressLine::stage(std::string text) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  stage_ = one_line(text);
  fraction_ = -1;
  since_ = Clock::now();
}

void ProgressLine::fraction(double done) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  fraction_ = done < 0 ? 0 : done > 1 ? 1 : done;
}

void ProgressLine::clear() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (drawn_) std::fputs("\r\x1b[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
  stage_.clear();
}

void ProgressLine::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, kRedraw);
    if (!stop_ && !stage_.empty() && Clock::now() - since_ >= kFirstDraw) draw_locked();
  }
}

void ProgressLine::draw_locked() {
  const double s = std::chrono::duration<double>(Clock::now() - since_).count();
  if (fraction_ >= 0)
    std::fprintf(stderr, "\r\x1b[K[lockstep] %s %3.0f%% %.1f s", stage_.c_str(), 100 * fraction_,
                 s);
  else
    std::fprintf(stderr, "\r\x1b[K[lockstep] %s... %.1f s", stage_.c_str(), s);
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace lockstep::cli
