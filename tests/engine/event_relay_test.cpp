// The scheduler's event relay: events reach their callbacks on another thread, in the order they
// were posted, with copies of everything the posted event only pointed to; nothing before flush();
// drain() and destruction deliver everything flushed.
#include "engine/event_relay.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace lockstep {
namespace {

struct Heard {
  std::mutex mu;
  std::vector<std::string> log;  // "request:text:reason:token:logprob"
  std::thread::id thread;
};

std::string entry(std::string_view name, std::string_view text, std::string_view reason,
                  int32_t token, const TokenLogprobs* lp) {
  std::string e;
  for (std::string_view part : {name, text, reason}) e.append(part).append(":");
  e.append(std::to_string(token));
  if (lp) e.append(":").append(std::to_string(lp->logprob));
  return e;
}

StreamCallback recorder(Heard& heard, const std::string& name) {
  return [&heard, name](const StreamEvent& ev) {
    std::lock_guard<std::mutex> lock(heard.mu);
    heard.thread = std::this_thread::get_id();
    heard.log.push_back(entry(name, ev.text, ev.finish_reason, ev.token, ev.logprobs));
  };
}

TEST(EventRelay, DeliversCopiesInPostedOrderOnItsOwnThread) {
  Heard heard;
  EventRelay relay;
  const StreamCallback a = recorder(heard, "a"), b = recorder(heard, "b");
  std::vector<std::string> expected;
  for (int step = 0; step < 50; ++step) {
    for (int r = 0; r < 2; ++r) {
      // The posted event points into storage that is overwritten right after post().
      std::string text = "piece" + std::to_string(step);
      std::string reason = step == 49 ? "eos" : "";
      TokenLogprobs lp;
      lp.token = step;
      lp.logprob = -0.5 * (step + r);
      StreamEvent ev;
      ev.text = text;
      ev.finish_reason = reason;
      ev.token = step * 10 + r;
      ev.logprobs = r == 1 ? &lp : nullptr;
      relay.post(r == 0 ? a : b, ev);
      expected.push_back(entry(r == 0 ? "a" : "b", text, reason, ev.token, ev.logprobs));
      text.assign(text.size(), 'X');
      reason.assign(reason.size(), 'X');
      lp.logprob = 99;
    }
    if (step % 7 == 6) relay.flush();
  }
  relay.flush();
  relay.drain();
  std::lock_guard<std::mutex> lock(heard.mu);
  EXPECT_EQ(heard.log, expected);
  EXPECT_NE(heard.thread, std::this_thread::get_id());
}

TEST(EventRelay, NothingBeforeFlushAndDestructionDeliversTheRest) {
  Heard heard;
  {
    EventRelay relay;
    StreamEvent ev;
    ev.text = "held";
    relay.post(recorder(heard, "a"), ev);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    {
      std::lock_guard<std::mutex> lock(heard.mu);
      EXPECT_TRUE(heard.log.empty());
    }
    relay.flush();
    ev.text = "last";
    relay.post(recorder(heard, "a"), ev);
  }  // the destructor flushes and delivers before joining
  std::lock_guard<std::mutex> lock(heard.mu);
  EXPECT_EQ(heard.log, (std::vector<std::string>{"a:held::-1", "a:last::-1"}));
}

TEST(EventRelay, AThrowingCallbackDoesNotStopTheOthers) {
  Heard heard;
  EventRelay relay;
  StreamEvent ev;
  relay.post([](const StreamEvent&) { throw std::runtime_error("client gone"); }, ev);
  relay.post(StreamCallback{}, ev);  // no callback: nothing to deliver
  ev.text = "after";
  relay.post(recorder(heard, "b"), ev);
  relay.flush();
  relay.drain();
  std::lock_guard<std::mutex> lock(heard.mu);
  EXPECT_EQ(heard.log, (std::vector<std::string>{"b:after::-1"}));
}

}  // namespace
}  // namespace lockstep
