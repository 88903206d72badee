#include "server/server_context.h"

#include <chrono>
#include <cstdio>
#include <ctime>

#include "server/api_error.h"

namespace lockstep::server {

bool ServedModel::answers_to(std::string_view name) const {
  // ollama clients add a tag (":latest") to a bare model name.
  return name == id || name == id + ".gguf" || name == id + ":latest";
}

std::shared_ptr<ServedModel> ServerContext::model() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return model_;
}

void ServerContext::set_model(std::shared_ptr<ServedModel> model) {
  std::lock_guard<std::mutex> lock(mutex_);
  model_ = std::move(model);
}

std::shared_ptr<ServedModel> ServerContext::require_model() const {
  auto m = model();
  if (!m)
    throw unavailable("the model is still loading (the parity gate is checking it)", "loading", 1);
  return m;
}

std::string ServerContext::next_id(std::string_view prefix) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llx%06llx", (unsigned long long)unix_now(),
                (unsigned long long)next_id_++);
  return std::string(prefix) + buf;
}

nlohmann::ordered_json ServerContext::lockstep_json() const {
  auto m = model();
  nlohmann::ordered_json j;
  if (!m) {
    j["backend"] = "loading";
    j["parity"] = {{"status", "pending"}, {"summary", "the parity gate has not decided yet"}};
    return j;
  }
  j["backend"] = m->guard ? m->guard->serving_backend() : m->backend;
  j["parity"] = {{"status", m->verdict.status_name()}, {"summary", m->verdict.summary()}};
  return j;
}

std::string ServerContext::backend_header() const {
  auto m = model();
  if (!m) return "loading";
  return m->guard ? m->guard->serving_backend() : m->backend;
}

std::string ServerContext::parity_header() const {
  auto m = model();
  if (!m) return "pending";
  std::string s = std::string(m->verdict.status_name()) + "; " + m->verdict.summary();
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = ' ';
  return s;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string rfc3339_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms.count()));
  return buf;
}

}  // namespace lockstep::server
