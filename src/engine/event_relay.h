// Hands the scheduler's stream events to their callbacks on a thread of its own, so that the
// scheduler thread starts the next forward pass instead of waking the clients one by one. Waking a
// client is a futex syscall and often a context switch; 64 of them took most of a serving step's
// host time (bench/NOTES.md, "Serving: the clients hear about a step while the next one runs").
// Events are delivered in the order they were posted, so every request still hears its pieces in
// order and its final event last.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/scheduler.h"

namespace lockstep {

class EventRelay {
 public:
  EventRelay();
  ~EventRelay();  // delivers what was flushed, then joins
  EventRelay(const EventRelay&) = delete;
  EventRelay& operator=(const EventRelay&) = delete;

  // Keeps a copy of `ev` (its views and pointer may die after the call) for `callback`. Posting
  // thread only; nothing is delivered before flush().
  void post(const StreamCallback& callback, const StreamEvent& ev);
  // Hands everything posted so far to the relay thread.
  void flush();
  // Returns when everything flushed so far has been delivered (tests; shutdown).
  void drain();

 private:
  struct Item {
    StreamCallback callback;
    StreamEvent event;  // its views and pointer are set from the members below at delivery
    std::string text, finish_reason, error;
    std::optional<TokenLogprobs> logprobs;
  };
  void run();

  std::vector<Item> posted_;  // posting thread only
  std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::vector<Item> queue_;
  bool delivering_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace lockstep
