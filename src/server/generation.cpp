#include "server/generation.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>

namespace lockstep::server {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Events of one request, handed from the scheduler thread to the connection's thread. Shared by
// both (the scheduler may still deliver after the connection gave up).
class Channel {
 public:
  struct Item {
    std::string text;
    bool done = false;
    std::string reason, error;
    int prompt_tokens = 0, completion_tokens = 0;
  };

  explicit Channel(Clock::time_point start) : start_(start) {}

  StreamCallback callback(const std::shared_ptr<Channel>& self) {
    return [self](const StreamEvent& ev) {
      std::lock_guard<std::mutex> lock(self->mutex_);
      if (ev.token >= 0 && self->first_token_ == Clock::time_point{})
        self->first_token_ = Clock::now();
      Item item;
      item.text = std::string(ev.text);
      item.done = ev.done;
      item.reason = std::string(ev.finish_reason);
      item.error = std::string(ev.error);
      item.prompt_tokens = ev.prompt_tokens;
      item.completion_tokens = ev.completion_tokens;
      if (item.text.empty() && !item.done) return;
      self->items_.push_back(std::move(item));
      self->cv_.notify_one();
    };
  }

  // The next item, waiting at most `timeout`; false when none came.
  bool pop(Item& out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [&] { return !items_.empty(); })) return false;
    out = std::move(items_.front());
    items_.pop_front();
    return true;
  }

  void fill_timing(Completion& c) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto now = Clock::now();
    const auto first = first_token_ == Clock::time_point{} ? now : first_token_;
    c.prompt_ms = ms_between(start_, first);
    c.gen_ms = ms_between(first, now);
    c.total_ms = ms_between(start_, now);
  }

  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Item> items_;
  Clock::time_point start_, first_token_{};
};

// The final item as a Completion, or the ApiError it stands for.
Completion finish(Channel& ch, const Channel::Item& item, std::string text) {
  if (item.reason == "error")
    throw ApiError(500, item.error, "server_error", "", "generation_failed");
  if (item.reason == "cancelled")
    throw unavailable("the request was cancelled (the server is shutting down)", "cancelled", 1);
  Completion c;
  c.text = std::move(text);
  c.finish_reason = item.reason == "length" ? "length" : "stop";
  c.prompt_tokens = item.prompt_tokens;
  c.completion_tokens = item.completion_tokens;
  ch.fill_timing(c);
  return c;
}

}  // namespace

std::string dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void send_json(httplib::Response& res, const nlohmann::ordered_json& j, int status) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void serve_generation(ServerContext& ctx, std::shared_ptr<ServedModel> model,
                      std::vector<int32_t> prompt, const GenParams& params, httplib::Response& res,
                      const std::function<nlohmann::ordered_json(const Completion&)>& body,
                      const StreamFormat& format) {
  const int n_ctx = model->n_ctx();
  const int n_prompt = int(prompt.size());
  if (n_prompt > n_ctx)
    throw bad_request("the prompt is " + std::to_string(n_prompt) +
                          " tokens but the context holds " + std::to_string(n_ctx) +
                          " (shorten it, or restart the server with a larger -c)",
                      "messages", "context_length_exceeded");
  if (params.max_tokens > 0 && int64_t(n_prompt) + params.max_tokens > n_ctx)
    throw bad_request("the prompt (" + std::to_string(n_prompt) + " tokens) plus max_tokens (" +
                          std::to_string(params.max_tokens) + ") exceed the context (" +
                          std::to_string(n_ctx) + " tokens)",
                      "max_tokens", "context_length_exceeded");

  auto channel = std::make_shared<Channel>(Clock::now());
  ScheduledRequest req;
  req.prompt = std::move(prompt);
  req.sampling = params.sampling;
  req.max_tokens = params.max_tokens;
  req.stop = params.stop;
  req.on_event = channel->callback(channel);
  req.cancel = channel->cancel;
  // The guard (serving_guard.h) picks the scheduler: the gate's backend, or the reference while
  // that one is quarantined; it says which, for this request's header.
  const ServingGuard::Routed routed = model->guard->submit(std::move(req));
  const SubmitResult& submitted = routed.result;
  res.set_header("X-Lockstep-Backend", routed.backend);
  res.set_header("X-Lockstep-Request", routed.request_id);
  switch (submitted.status) {
    case SubmitResult::Status::kAccepted:
      break;
    case SubmitResult::Status::kBusy:
      throw unavailable("the server is busy: " + submitted.error, "server_busy", 1);
    case SubmitResult::Status::kStopped:
      throw unavailable("the server is shutting down", "shutting_down", 5);
    case SubmitResult::Status::kRejected:
      throw bad_request(submitted.error);
  }

  if (!params.stream) {
    std::string text;
    Channel::Item item;
    for (;;) {
      if (!channel->pop(item, std::chrono::milliseconds(1000))) continue;
      text += item.text;
      if (item.done) break;
    }
    nlohmann::ordered_json j = body(finish(*channel, item, std::move(text)));
    j["lockstep"] = ctx.lockstep_json();
    send_json(res, j);
    return;
  }

  auto cancel = channel->cancel;
  ++ctx.open_streams;
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      format.content_type,
      [channel, model, format, text = std::string(), begun = false](
          size_t, httplib::DataSink& sink) mutable {
        auto send = [&](const std::string& bytes) {
          if (bytes.empty()) return true;
          if (sink.write(bytes.data(), bytes.size())) return true;
          channel->cancel->store(true);  // the client went away
          return false;
        };
        if (!begun) {
          begun = true;
          if (format.begin && !send(format.begin())) return false;
        }
        Channel::Item item;
        if (!channel->pop(item, std::chrono::milliseconds(200))) {
          if (!sink.is_writable()) {
            channel->cancel->store(true);
            return false;
          }
          return true;  // called again
        }
        text += item.text;
        if (!item.done) return send(format.piece(item.text));
        if (!item.text.empty() && !send(format.piece(item.text))) return false;
        std::string tail;
        try {
          tail = format.end(finish(*channel, item, text));
        } catch (const ApiError& e) {
          tail = format.error(e);
        }
        if (!send(tail)) return false;
        sink.done();
        return true;
      },
      [cancel, &ctx](bool success) {
        if (!success) cancel->store(true);
        --ctx.open_streams;
      });
}

}  // namespace lockstep::server
