// Progress of long work on stderr while stderr is a terminal (loading a model, the parity gate,
// make-model): one line, redrawn in place a few times a second with the stage, a percentage when
// the work knows it, and the seconds spent, then erased. Quiet when stderr is not a terminal or
// with --quiet, so logs and pipes never see it. Short stages (under a quarter of a second) are
// never drawn.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace lockstep::cli {

class ProgressLine {
 public:
  // Draws only when `enabled`; see progress_wanted().
  explicit ProgressLine(bool enabled);
  ~ProgressLine();  // erases the line
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Starts a stage ("loading model.gguf"); its clock and fraction start over.
  void stage(std::string text);
  // The fraction of the current stage done, in [0, 1] (from any thread).
  void fraction(double done);
  // Erases the line (before other stderr output, such as the header).
  void clear();
  // Erases the line without ending the stage (it is drawn again on the next tick).
  void erase();

 private:
  void run();
  void draw_locked();

  const bool enabled_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::string stage_;
  double fraction_ = -1;  // < 0: unknown
  std::chrono::steady_clock::time_point since_;
  bool drawn_ = false, stop_ = false;
  std::thread ticker_;
};

// True when stderr is a terminal and --quiet was not given.
bool progress_wanted(bool quiet);

}  // namespace lockstep::cli
