// What every endpoint of `lockstep serve` shares: the options, the model once the parity gate has
// opened it (null while loading), the scheduler that serves it, and the `lockstep` field every
// JSON body carries (which backend serves, what the gate said).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "engine/model_source.h"
#include "engine/scheduler.h"
#include "model/model.h"
#include "parity/comparison.h"
#include "server/serving_guard.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/vocab.h"

namespace lockstep::server {

struct ServerOptions {
  std::string api_key;                      // "": no authentication
  size_t max_body_bytes = size_t(4) << 20;  // larger request bodies: 413
  int http_threads = 64;                    // connections served at once (a stream holds one)
  std::chrono::milliseconds shutdown_grace{10000};  // in-flight requests finish within this
};

// The model being served. Declaration order is destruction order reversed: the scheduler (which
// owns the backend, which refers to the model and vocabulary) goes first.
struct ServedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<tokenizer::Vocab> vocab;
  tokenizer::ChatTemplate chat_template;
  ModelSummary summary;
  std::string id;       // the model name clients use: the file name without ".gguf"
  std::string backend;  // the registry name of the backend that serves
  ParityVerdict verdict;
  int64_t created = 0;  // unix seconds when it was loaded
  std::unique_ptr<Scheduler> scheduler;
  // Routes every generation request (to the scheduler, or to the reference while the backend is
  // quarantined), audits them and keeps the metrics; goes before the scheduler it refers to.
  std::unique_ptr<ServingGuard> guard;

  int n_ctx() const { return scheduler->n_ctx(); }
  // Whether a request's "model" field names this model (its id, its file name, id:latest).
  bool answers_to(std::string_view name) const;
};

class ServerContext {
 public:
  explicit ServerContext(ServerOptions options) : options_(std::move(options)) {}

  const ServerOptions& options() const { return options_; }
  // Null until set_model (the gate is still opening it).
  std::shared_ptr<ServedModel> model() const;
  void set_model(std::shared_ptr<ServedModel> model);
  // The model, or ApiError 503 "loading".
  std::shared_ptr<ServedModel> require_model() const;

  // "chatcmpl-<unique>", ...
  std::string next_id(std::string_view prefix);

  // {"backend": ..., "parity": {"status": ..., "summary": ...}}; backend "loading" before.
  nlohmann::ordered_json lockstep_json() const;
  std::string backend_header() const;  // X-Lockstep-Backend
  std::string parity_header() const;   // X-Lockstep-Parity: status and summary, ASCII

  // Streamed responses still being written (a stream ends when its last chunk is out or its
  // client is gone). Shutdown waits for them: httplib cuts streams short once it stops.
  std::atomic<int> open_streams{0};

 private:
  ServerOptions options_;
  mutable std::mutex mutex_;
  std::shared_ptr<ServedModel> model_;
  std::atomic<uint64_t> next_id_{1};
};

// Seconds since the epoch, and the same instant as RFC 3339 UTC ("2025-01-02T03:04:05.678Z").
int64_t unix_now();
std::string rfc3339_now();

}  // namespace lockstep::server
