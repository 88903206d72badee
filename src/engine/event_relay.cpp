#include "engine/event_relay.h"

#include <utility>

namespace lockstep {

EventRelay::EventRelay() : thread_([this] { run(); }) {}

EventRelay::~EventRelay() {
  flush();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void EventRelay::post(const StreamCallback& callback, const StreamEvent& ev) {
  if (!callback) return;
  Item item;
  item.callback = callback;
  item.event = ev;
  item.text = std::string(ev.text);
  item.finish_reason = std::string(ev.finish_reason);
  item.error = std::string(ev.error);
  if (ev.logprobs) item.logprobs = *ev.logprobs;
  posted_.push_back(std::move(item));
}

void EventRelay::flush() {
  if (posted_.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queue_.empty()) {
      queue_.swap(posted_);
    } else {
      for (Item& item : posted_) queue_.push_back(std::move(item));
      posted_.clear();
    }
  }
  wake_.notify_one();
}

void EventRelay::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [&] { return queue_.empty() && !delivering_; });
}

void EventRelay::run() {
  std::vector<Item> batch;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping, and everything delivered
    batch.swap(queue_);
    delivering_ = true;
    lock.unlock();
    for (Item& item : batch) {
      StreamEvent ev = item.event;
      ev.text = item.text;
      ev.finish_reason = item.finish_reason;
      ev.error = item.error;
      ev.logprobs = item.logprobs ? &*item.logprobs : nullptr;
      // A callback that throws loses its own event, not the other requests' (the HTTP layer's
      // callbacks do not throw; this keeps the relay thread alive regardless).
      try {
        item.callback(ev);
      } catch (...) {
      }
    }
    batch.clear();
    lock.lock();
    delivering_ = false;
    if (queue_.empty()) idle_.notify_all();
  }
  delivering_ = false;
  idle_.notify_all();
}

}  // namespace lockstep
