// What `GET /metrics` reports, in the Prometheus text exposition format (version 0.0.4), written
// here rather than through prometheus-cpp: the format is a few lines of text per metric, and the
// library would add a dependency (and its HTTP exposer, which the server does not need).
// Counters and histograms are recorded from the HTTP and scheduler threads; gauges are read from
// the serving state when the page is rendered.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::server {

class LatencyHistogram {
 public:
  explicit LatencyHistogram(std::vector<double> bounds_s);
  void observe(double seconds);
  // The `name_bucket`, `name_sum` and `name_count` lines (the caller writes HELP/TYPE).
  void render(std::string& out, std::string_view name) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// The text format's pieces.
void metric_header(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help);
void metric_line(std::string& out, std::string_view name, std::string_view labels, double value);
std::string label_value(std::string_view text);  // quoted and escaped: "a\"b"

// Per-request counters and latency histograms.
class RequestMetrics {
 public:
  RequestMetrics();
  void started(const std::string& backend);
  void finished(int prompt_tokens, int completion_tokens, std::string_view reason);
  void first_token(double seconds);
  void next_token(double seconds);
  void render(std::string& out) const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, uint64_t>> started_;   // by backend
  std::vector<std::pair<std::string, uint64_t>> finished_;  // by finish reason
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  LatencyHistogram ttft_, itl_;
};

}  // namespace lockstep::server
